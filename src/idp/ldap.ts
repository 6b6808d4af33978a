/**
 * The LDAP identity provider (OpenLDAP, 389-DS/FreeIPA, Active Directory), over ldapts.
 *
 * One snapshot = one connection and a handful of paged searches, never one per user or per
 * member: all groups under the group base (one paged search), all users under the user base
 * (one paged search), the disabled users (one paged search, when a filter is set), plus
 * ranged reads of very large AD groups and, with `activeDirectoryInChain`, one paged search
 * per mapped group. Nesting is resolved by the shared resolver (resolve.ts), not by the
 * server's memberOf, so it works on every server.
 *
 * Fail closed: a size or time limit hit by any search marks every group incomplete (a cut
 * user or group list could hide members); a bind, connection or TLS failure fails the whole
 * snapshot, so the run removes nobody.
 */
import type { ConnectionOptions } from "node:tls";
import { AndFilter, Client, EqualityFilter, ExtensibleFilter, FilterParser, type Entry, type Filter } from "ldapts";
import type { LdapIdpConfig } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import { CERTIFICATE_FILE_MAX_BYTES, readRegularFile } from "../files.ts";
import { redactUrl } from "../redact-url.ts";
import { describeError, fail, ok, type Result } from "../result.ts";
import { firstRdnValue, isUnder, normalizeDn } from "./dn.ts";
import type {
  DirectoryGroup,
  DirectoryRequest,
  DirectoryRequestObserver,
  DirectorySnapshot,
  DirectoryUser,
  IdentityProvider,
  MemberRef,
  SnapshotHint,
} from "./types.ts";

export type LdapSettings = LdapIdpConfig["ldap"];

/** The Active Directory matching rule that walks nested membership on the server. */
export const IN_CHAIN_RULE = "1.2.840.113556.1.4.1941";

const FLAVOURS = {
  openldap: {
    groups: "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))",
    users: "(|(objectClass=inetOrgPerson)(objectClass=posixAccount))",
    disabled: false as const,
  },
  "389ds": {
    groups: "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))",
    users: "(|(objectClass=inetOrgPerson)(objectClass=posixAccount))",
    disabled: "(nsAccountLock=TRUE)",
  },
  ad: {
    groups: "(objectClass=group)",
    users: "(&(objectCategory=person)(objectClass=user))",
    disabled: "(userAccountControl:1.2.840.113556.1.4.803:=2)",
  },
} as const;

/** Searches made by the last snapshot: logical searches and LDAP requests (pages). */
export interface LdapStats {
  searches: number;
  pages: number;
  entries: number;
}

export interface LdapProviderOptions {
  readonly settings: LdapSettings;
  /** Attributes the user mapping reads (users.attribute, template {attr:…}). */
  readonly userAttributes: readonly string[];
  readonly log: Logger;
  /** Told of every bind and page, with its latency (metrics). */
  readonly onRequest?: DirectoryRequestObserver;
}

/** Limits that cut a result short: the data read is incomplete, not wrong. */
const LIMIT_CODES = new Map<number, string>([
  [3, "time limit exceeded"],
  [4, "size limit exceeded"],
  [11, "administrative limit exceeded"],
]);

export class LdapIdentityProvider implements IdentityProvider {
  readonly kind = "ldap";
  lastStats: LdapStats = { searches: 0, pages: 0, entries: 0 };
  private readonly settings: LdapSettings;
  private readonly log: Logger;
  private readonly userAttributes: readonly string[];
  private readonly observe: Observe;

  constructor(opts: LdapProviderOptions) {
    this.settings = opts.settings;
    this.log = opts.log;
    const onRequest = opts.onRequest;
    this.observe = onRequest === undefined ? () => undefined : (operation, outcome, started) =>
      onRequest({ provider: "ldap", operation, outcome, seconds: (performance.now() - started) / 1000 });
    const uidAttr = opts.settings.users.memberUidAttribute;
    this.userAttributes = unique([...opts.userAttributes, uidAttr]);
  }

  canonicalGroupRef(ref: string): string {
    return ref.includes("=") ? (normalizeDn(ref) ?? ref) : ref;
  }

  async close(): Promise<void> {
    // One connection per snapshot, closed at its end: nothing stays open.
  }

  async snapshot(hint?: SnapshotHint): Promise<Result<DirectorySnapshot>> {
    const stats: LdapStats = { searches: 0, pages: 0, entries: 0 };
    this.lastStats = stats;
    return this.withConnection(stats, (reader) => this.read(reader, hint));
  }

  /**
   * The directory's change counters, from the root DSE and the naming contexts holding the user
   * and group bases: OpenLDAP's `contextCSN` (kept by the syncprov overlay, on the suffix entry),
   * Active Directory's `highestCommittedUSN`, 389-DS / FreeIPA's `lastusn`. Two base searches;
   * undefined when the server keeps none of them (or the bind account may not read them).
   */
  async changeMarker(): Promise<Result<string | undefined>> {
    const s = this.settings;
    const stats: LdapStats = { searches: 0, pages: 0, entries: 0 };
    return this.withConnection(stats, async (reader) => {
      const values: string[] = [];
      // Where the counters are is learnt once (the root DSE, the naming contexts): later probes
      // read only those entries — a bind and one search.
      let plan = this.#probePlan;
      let root: Entry | undefined;
      if (plan === undefined) {
        root = await reader.baseEntry("", [...ROOT_COUNTERS, "namingContexts"]);
        const bases = [s.users.base, s.groups.base].map((b) => normalizeDn(b) ?? b.toLowerCase());
        const contexts = (root === undefined ? [] : attributeValues(root, "namingContexts")).filter((context) => {
          const normal = normalizeDn(context) ?? context.toLowerCase();
          return bases.some((b) => b === normal || b.endsWith(`,${normal}`));
        });
        const rootHas = root !== undefined && ROOT_COUNTERS.some((name) => attributeValues(root!, name).length > 0);
        plan = { root: rootHas, contexts: rootHas ? [] : contexts };
      } else if (plan.root) {
        root = await reader.baseEntry("", [...ROOT_COUNTERS]);
      }
      if (plan.root && root !== undefined) {
        for (const name of ROOT_COUNTERS) values.push(...attributeValues(root, name).map((v) => `${name}=${v}`));
      }
      for (const context of plan.contexts) {
        const entry = await reader.baseEntry(context, ["contextCSN"]);
        const normal = normalizeDn(context) ?? context.toLowerCase();
        if (entry !== undefined) values.push(...attributeValues(entry, "contextCSN").map((v) => `${normal}:contextCSN=${v}`));
      }
      // Learnt only from a probe that found a counter: a server without one is asked in full again.
      if (values.length > 0) this.#probePlan = plan;
      return values.length === 0 ? undefined : values.sort().join("\n");
    });
  }

  #probePlan: { readonly root: boolean; readonly contexts: readonly string[] } | undefined;

  /**
   * Users whose `attribute` equals `value` (e.g. is `alice` a login the directory knows?).
   * The value is escaped by ldapts' filter classes, so `*)(uid=*` matches nothing.
   */
  async findUsers(attribute: string, value: string): Promise<Result<DirectoryUser[]>> {
    const s = this.settings;
    const stats: LdapStats = { searches: 0, pages: 0, entries: 0 };
    return this.withConnection(stats, async (reader) => {
      const filter = new AndFilter({
        filters: [FilterParser.parseString(s.users.filter ?? FLAVOURS[s.flavour].users), new EqualityFilter({ attribute, value })],
      });
      const cut: string[] = [];
      const entries = await reader.all("users", s.users.base, s.users.scope, filter, [...this.userAttributes], cut);
      if (cut.length > 0) throw new Error(cut.join("; "));
      return entries.flatMap((e) => {
        const dn = normalizeDn(e.dn);
        return dn === undefined ? [] : [{ id: dn, attributes: this.attributesOf(e), enabled: true }];
      });
    });
  }

  private async withConnection<T>(stats: LdapStats, fn: (reader: Reader) => Promise<T>): Promise<Result<T>> {
    const s = this.settings;
    let tls: ConnectionOptions;
    try {
      let ca: string | undefined;
      if (s.caFile !== undefined) {
        const read = readRegularFile(s.caFile, CERTIFICATE_FILE_MAX_BYTES, "idp.ldap.caFile");
        if (!read.ok) return fail(`LDAP: caFile: ${read.message}`);
        ca = read.text;
      }
      tls = {
        rejectUnauthorized: s.rejectUnauthorized,
        ...(ca !== undefined ? { ca: [ca] } : {}),
      };
    } catch (err) {
      return fail(`LDAP: cannot read caFile ${s.caFile ?? ""}: ${describeError(err)}`);
    }
    // ldapts opens a TLS socket whenever tlsOptions is given: only for ldaps://. StartTLS
    // gets the same options when it upgrades a plain connection.
    const secure = s.url.toLowerCase().startsWith("ldaps://");
    const client = new Client({
      url: s.url,
      timeout: s.timeoutMs,
      connectTimeout: s.connectTimeoutMs,
      strictDN: false,
      ...(secure ? { tlsOptions: tls } : {}),
    });
    try {
      // The upgraded socket is checked against the URL's host (ldapts would check "localhost").
      if (s.startTls) await client.startTLS({ ...tls, host: new URL(s.url).hostname });
      if (s.bindDn !== undefined) {
        const started = performance.now();
        try {
          await client.bind(s.bindDn, s.bindPassword ?? "");
        } catch (err) {
          this.observe("bind", "error", started);
          throw err;
        }
        this.observe("bind", "ok", started);
      }
      return ok(await fn(new Reader(client, s, stats, this.observe)));
    } catch (err) {
      const message = `LDAP server ${redactUrl(s.url)}: ${explain(err, s)}`;
      this.log.warn("directory read failed", { url: redactUrl(s.url), error: message });
      return fail(message, { cause: err });
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }

  private attributesOf(entry: Entry): Record<string, string> {
    const attrs = lowerKeys(entry);
    const attributes: Record<string, string> = {};
    for (const name of this.userAttributes) {
      const v = firstValue(attrs.get(name.toLowerCase()));
      if (v !== undefined) attributes[name] = v;
    }
    return attributes;
  }

  private async read(reader: Reader, hint: SnapshotHint | undefined): Promise<DirectorySnapshot> {
    const s = this.settings;
    const flavour = FLAVOURS[s.flavour];
    const notes: string[] = [];
    const cut: string[] = [];
    const groupBase = normalizeDn(s.groups.base);
    const userBase = normalizeDn(s.users.base);
    if (groupBase === undefined) throw new Error(`groups.base "${s.groups.base}" is not a valid DN`);
    if (userBase === undefined) throw new Error(`users.base "${s.users.base}" is not a valid DN`);

    // 1. Users, in bulk.
    const userFilter = s.users.filter ?? flavour.users;
    const users = new Map<string, DirectoryUser>();
    const byLogin = new Map<string, string>();
    const rawUsers = await reader.all("users", s.users.base, s.users.scope, userFilter, [...this.userAttributes], cut);
    for (const entry of rawUsers) {
      const dn = normalizeDn(entry.dn);
      if (dn === undefined) {
        notes.push(`user entry with a malformed DN skipped: ${entry.dn}`);
        continue;
      }
      const attributes = this.attributesOf(entry);
      users.set(dn, { id: dn, attributes, enabled: true });
      const login = attributes[s.users.memberUidAttribute];
      if (login !== undefined) byLogin.set(login.toLowerCase(), dn);
    }

    // 2. Disabled users: the server evaluates the filter (AD's bitwise rule included).
    const disabledFilter = s.users.disabledFilter ?? flavour.disabled;
    if (disabledFilter !== false) {
      const disabled = await reader.all("disabled users", s.users.base, s.users.scope, `(&${userFilter}${disabledFilter})`, ["1.1"], cut);
      for (const entry of disabled) {
        const dn = normalizeDn(entry.dn);
        const user = dn === undefined ? undefined : users.get(dn);
        if (dn !== undefined && user !== undefined) users.set(dn, { ...user, enabled: false });
      }
    }

    // 3. Groups, in bulk, with their direct members.
    const nameAttr = s.groups.nameAttribute.toLowerCase();
    const memberAttrs = s.groups.memberAttributes.map((a) => a.toLowerCase());
    const rawGroups = await reader.all(
      "groups",
      s.groups.base,
      s.groups.scope,
      s.groups.filter ?? flavour.groups,
      [s.groups.nameAttribute, ...s.groups.memberAttributes],
      cut,
    );
    interface RawGroup {
      dn: string;
      originalDn: string;
      name: string;
      memberDns: string[];
      logins: string[];
    }
    const groups = new Map<string, RawGroup>();
    for (const entry of rawGroups) {
      const dn = normalizeDn(entry.dn);
      if (dn === undefined) {
        notes.push(`group entry with a malformed DN skipped: ${entry.dn}`);
        continue;
      }
      const attrs = lowerKeys(entry);
      const name = firstValue(attrs.get(nameAttr)) ?? firstRdnValue(entry.dn) ?? entry.dn;
      const memberDns: string[] = [];
      const logins: string[] = [];
      for (const attr of memberAttrs) {
        const isLogin = attr === "memberuid";
        const values = [...allValues(attrs.get(attr))];
        // Active Directory returns huge member lists in ranges: "member;range=0-1499".
        for (const [key, value] of attrs) {
          if (!key.startsWith(`${attr};range=`)) continue;
          values.push(...allValues(value));
          const end = key.slice(key.lastIndexOf("-") + 1);
          if (end !== "*") values.push(...(await reader.rangedValues(entry.dn, attr, Number(end) + 1)));
        }
        for (const v of values) {
          if (isLogin) logins.push(v);
          else memberDns.push(attr === "uniquemember" ? stripUidSuffix(v) : v);
        }
      }
      groups.set(dn, { dn, originalDn: entry.dn, name, memberDns, logins });
    }

    // 4. Active Directory: let the server expand nesting for the mapped groups.
    const flattened = new Map<string, string[]>();
    if (s.activeDirectoryInChain && hint !== undefined) {
      for (const g of groups.values()) {
        if (!hint.isMapped({ id: g.dn, name: g.name })) continue;
        const filter = inChainFilter(userFilter, g.originalDn);
        const members = await reader.all(`members of ${g.name}`, s.users.base, s.users.scope, filter, ["1.1"], cut);
        flattened.set(
          g.dn,
          members.flatMap((e) => normalizeDn(e.dn) ?? []),
        );
      }
    }

    // 5. Classify every member reference; anything unknown is reported, not fatal.
    const out = new Map<string, DirectoryGroup>();
    for (const g of groups.values()) {
      const refs: MemberRef[] = [];
      const seen = new Set<string>();
      let duplicates = 0;
      const unknown: string[] = [];
      const add = (ref: MemberRef): void => {
        const key = `${ref.kind}:${ref.id}`;
        if (seen.has(key)) duplicates++;
        else {
          seen.add(key);
          refs.push(ref);
        }
      };
      const expanded = flattened.get(g.dn);
      let inChainProblem: string | undefined;
      if (expanded !== undefined) {
        for (const dn of expanded) if (users.has(dn)) add({ kind: "user", id: dn });
        // The server's expansion must at least hold the group's direct users. OpenLDAP, for
        // one, ignores the in-chain rule and answers with nothing: never read that as "empty".
        const got = new Set(expanded);
        const missed = g.memberDns.map((m) => normalizeDn(m)).filter((dn) => dn !== undefined && users.has(dn) && !got.has(dn));
        if (missed.length > 0) {
          inChainProblem = `the server's in-chain expansion (${IN_CHAIN_RULE}) missed ${missed.length} direct member(s); is this Active Directory?`;
        }
      } else {
        for (const raw of g.memberDns) {
          const dn = normalizeDn(raw);
          if (dn === undefined) unknown.push(`${raw} (malformed DN)`);
          else if (groups.has(dn)) add({ kind: "group", id: dn });
          else if (users.has(dn)) add({ kind: "user", id: dn });
          else if (!isUnder(dn, userBase) && !isUnder(dn, groupBase)) unknown.push(`${raw} (outside the user and group bases)`);
          else unknown.push(`${raw} (no such user or group)`);
        }
      }
      for (const login of g.logins) {
        const dn = byLogin.get(login.toLowerCase());
        if (dn !== undefined) add({ kind: "user", id: dn });
        else unknown.push(`memberUid ${login} (no user with ${s.users.memberUidAttribute}=${login})`);
      }
      if (unknown.length > 0) notes.push(`group ${g.name}: ${unknown.length} member(s) neither a user nor a group, skipped: ${unknown.slice(0, 5).join("; ")}${unknown.length > 5 ? "; …" : ""}`);
      if (duplicates > 0) notes.push(`group ${g.name}: ${duplicates} duplicate member value(s) ignored`);
      const incompleteReason =
        cut.length > 0 ? `the directory read was cut short (${cut.join("; ")})` : inChainProblem;
      out.set(g.dn, {
        id: g.dn,
        name: g.name,
        members: refs,
        complete: incompleteReason === undefined,
        ...(incompleteReason !== undefined ? { incompleteReason } : {}),
      });
    }
    if (reader.referrals > 0) notes.push(`${reader.referrals} referral(s) returned by the server were not followed`);
    if (cut.length > 0) notes.push(`LDAP read incomplete: ${cut.join("; ")}; no removals in any room this run`);
    this.log.debug("ldap snapshot", { ...reader.stats, users: users.size, groups: out.size });
    return { groups: out, users, notes };
  }
}

/** `(&<user filter>(memberOf:1.2.840.113556.1.4.1941:=<group DN>))`, the DN escaped by ldapts. */
export function inChainFilter(userFilter: string, groupDn: string): Filter {
  return new AndFilter({
    filters: [FilterParser.parseString(userFilter), new ExtensibleFilter({ matchType: "memberOf", rule: IN_CHAIN_RULE, value: groupDn })],
  });
}

/** Paged searches with counting; a limit result becomes a note in `cut`, not an exception. */
class Reader {
  referrals = 0;

  constructor(
    private readonly client: Client,
    private readonly settings: LdapSettings,
    readonly stats: LdapStats,
    private readonly observe: Observe,
  ) {}

  async all(what: string, base: string, scope: "base" | "one" | "sub", filter: string | Filter, attributes: string[], cut: string[]): Promise<Entry[]> {
    const entries: Entry[] = [];
    this.stats.searches++;
    // The time between two pages handed out is the time the server took for the next one.
    let started = performance.now();
    try {
      for await (const page of this.client.searchPaginated(base, {
        scope,
        filter,
        attributes,
        paged: { pageSize: this.settings.pageSize },
        timeLimit: Math.ceil(this.settings.timeoutMs / 1000),
      })) {
        this.observe("search", "ok", started);
        this.stats.pages++;
        this.stats.entries += page.searchEntries.length;
        this.referrals += page.searchReferences.length;
        entries.push(...page.searchEntries);
        started = performance.now();
      }
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const limit = typeof code === "number" ? LIMIT_CODES.get(code) : undefined;
      this.observe("search", limit === undefined ? "error" : "limit", started);
      if (limit === undefined) throw new SearchError(what, base, err);
      cut.push(`${what}: ${limit} after ${entries.length} entries`);
    }
    return entries;
  }

  /** One entry's attributes (a base search), or undefined when there is no such entry. */
  async baseEntry(dn: string, attributes: string[]): Promise<Entry | undefined> {
    this.stats.searches++;
    const started = performance.now();
    try {
      const result = await this.client.search(dn, { scope: "base", filter: "(objectClass=*)", attributes, timeLimit: Math.ceil(this.settings.timeoutMs / 1000) });
      this.observe("probe", "ok", started);
      return result.searchEntries[0];
    } catch (err) {
      // No such object (32): nothing to read there.
      if ((err as { code?: unknown }).code === 32) return undefined;
      this.observe("probe", "error", started);
      throw new SearchError("change marker", dn === "" ? "the root DSE" : dn, err);
    }
  }

  /** Reads `attr;range=<from>-*` until the server says the range is complete. */
  async rangedValues(dn: string, attr: string, from: number): Promise<string[]> {
    const values: string[] = [];
    let start = from;
    for (;;) {
      this.stats.searches++;
      this.stats.pages++;
      const started = performance.now();
      let result: Awaited<ReturnType<Client["search"]>>;
      try {
        result = await this.client.search(dn, { scope: "base", filter: "(objectClass=*)", attributes: [`${attr};range=${start}-*`] });
      } catch (err) {
        this.observe("range", "error", started);
        throw err;
      }
      this.observe("range", "ok", started);
      const entry = result.searchEntries[0];
      if (entry === undefined) return values;
      let next: number | undefined;
      for (const [key, value] of lowerKeys(entry)) {
        if (!key.startsWith(`${attr};range=`)) continue;
        values.push(...allValues(value));
        const end = key.slice(key.lastIndexOf("-") + 1);
        next = end === "*" ? undefined : Number(end) + 1;
      }
      if (next === undefined || !Number.isFinite(next)) return values;
      start = next;
    }
  }
}

type Observe = (operation: string, outcome: DirectoryRequest["outcome"], started: number) => void;

class SearchError extends Error {
  constructor(
    readonly what: string,
    readonly base: string,
    override readonly cause: unknown,
  ) {
    super(`searching ${what} under ${base}: ${describeCause(cause)}`);
  }
}

/** ldapts' own words for a dropped connection name its internals (message type codes). */
function describeCause(cause: unknown): string {
  const text = describeError(cause);
  if (/Connection closed before message response|Socket (error|closed)|ECONNRESET|EPIPE/i.test(text)) {
    return "the connection was dropped before the answer was complete (by the server or the network)";
  }
  return text;
}

function explain(err: unknown, s: LdapSettings): string {
  if (err instanceof SearchError) return err.message;
  const e = err as { code?: unknown; name?: unknown; message?: unknown };
  if (e.name === "InvalidCredentialsError" || e.code === 49) return `bind as ${s.bindDn ?? "(anonymous)"} failed: invalid credentials`;
  if (typeof e.code === "string") {
    if (["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ECONNRESET", "EAI_AGAIN"].includes(e.code)) return `cannot connect (${e.code})`;
    if (/CERT|SELF_SIGNED|TLS|SSL|UNABLE_TO_VERIFY/i.test(e.code)) return `TLS failed: ${describeError(err)}`;
  }
  if (typeof e.message === "string" && /timeout|timed out/i.test(e.message)) return `no answer in time (${e.message})`;
  if (typeof e.message === "string" && /certificate|tls|ssl/i.test(e.message)) return `TLS failed: ${e.message}`;
  return describeError(err);
}

function lowerKeys(entry: Entry): Map<string, Entry[string]> {
  const out = new Map<string, Entry[string]>();
  for (const [k, v] of Object.entries(entry)) if (k !== "dn") out.set(k.toLowerCase(), v);
  return out;
}

function allValues(v: Entry[string] | undefined): string[] {
  if (v === undefined) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x) => (Buffer.isBuffer(x) ? x.toString("utf8") : x));
}

function firstValue(v: Entry[string] | undefined): string | undefined {
  return allValues(v)[0];
}

/** uniqueMember values may end in the optional unique identifier: `cn=a,dc=x#'0101'B`. */
export function stripUidSuffix(value: string): string {
  return value.replace(/#'[01]*'B$/, "");
}

function unique<T>(items: readonly T[]): T[] {
  return [...new Set(items)];
}

/** Change counters on the root DSE: Active Directory's, and 389-DS / FreeIPA's (OpenLDAP keeps contextCSN on the suffix entry). */
const ROOT_COUNTERS = ["contextCSN", "highestCommittedUSN", "lastusn"] as const;

/** An attribute's values as strings (any case of its name). */
function attributeValues(entry: Entry, name: string): string[] {
  const key = Object.keys(entry).find((k) => k.toLowerCase() === name.toLowerCase());
  if (key === undefined) return [];
  const v = entry[key];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x) => (Buffer.isBuffer(x) ? x.toString("utf8") : String(x))).filter((x) => x !== "");
}
