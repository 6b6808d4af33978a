/**
 * Every migration, old and new, by name. Names are dated so that they sort in the order
 * they must run. A static record (not Kysely's FileMigrationProvider, which cannot import
 * `.ts` files under vitest). Add new migrations here; never edit or remove one.
 */
import type { Migration } from "kysely";
import * as initial from "./2026-11-25T00-initial.ts";
import * as serve from "./2026-11-25T01-serve.ts";
import * as tokenAudit from "./2026-11-25T02-token-audit.ts";
import * as runOwner from "./2026-12-03T00-run-owner.ts";
import * as spaceLinks from "./2026-12-03T01-space-links.ts";
import * as auditReaders from "./2026-12-04T00-audit-readers.ts";
import * as cryptoStore from "./2026-12-08T00-crypto-store.ts";
import * as directoryMarker from "./2026-12-08T01-directory-marker.ts";

export const migrations: Readonly<Record<string, Migration>> = {
  "2026-11-25T00-initial": initial,
  "2026-11-25T01-serve": serve,
  "2026-11-25T02-token-audit": tokenAudit,
  "2026-12-03T00-run-owner": runOwner,
  "2026-12-03T01-space-links": spaceLinks,
  "2026-12-04T00-audit-readers": auditReaders,
  "2026-12-08T00-crypto-store": cryptoStore,
  "2026-12-08T01-directory-marker": directoryMarker,
};
