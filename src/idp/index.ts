/** Builds the configured identity provider. One case per `idp.kind`. */
import type { IdpConfig } from "../config/schema.ts";
import { StaticIdentityProvider } from "./static.ts";
import type { IdentityProvider } from "./types.ts";

export function createIdentityProvider(config: IdpConfig): IdentityProvider {
  switch (config.kind) {
    case "static":
      return new StaticIdentityProvider(config.static.file);
  }
}
