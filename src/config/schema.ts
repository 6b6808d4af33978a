/**
 * The one schema of the configuration file. Every object is strict: an unknown key is an
 * error, so a typo never silently falls back to a default.
 *
 * The schema describes the file as written (a secret may be given inline or as a file).
 * `load.ts` applies environment overrides, reads `...File` secrets and resolves relative
 * paths; what it hands out is `Config`, the output type below, with defaults applied and
 * every secret present as a string.
 */
import { FilterParser } from "ldapts";
import { validateDetailed } from "node-cron";
import { z } from "zod";
import { parseRoomAlias, parseRoomId, parseUserId, userIdPattern } from "../matrix/ids.ts";
import { KICK_ON, type KickOn } from "../reconcile/kick-rule.ts";
import { GUEST_ACCESS, HISTORY_VISIBILITIES } from "../reconcile/template.ts";
import { envName } from "./env-names.ts";

export const DEFAULT_ROLES: Readonly<Record<string, number>> = { member: 0, moderator: 50, admin: 100 };
export const DEFAULT_KICK_REASON = "Removed by matrix-group-sync: no longer in a group mapped to this room";

// ---------------------------------------------------------------------------------------
// Secrets and environment overrides: the single list each of them is driven by.
// ---------------------------------------------------------------------------------------

/**
 * A secret that may be given inline (`key`) or as a file (`fileKey`), in the YAML file or
 * through the environment. Rules (applied by load.ts):
 * - each source (YAML, environment) gives at most one of the two; both is an error;
 * - the environment wins: an env inline value replaces a YAML file variant and vice versa;
 * - when the object at `parent` is present, one of the two must be given;
 * - a file is read whole, its trailing whitespace (the newline) trimmed.
 * `redact` says how `redactConfig` hides it: `all` replaces the value, `url-password`
 * keeps a URL readable and hides only its password.
 */
export interface SecretField {
  readonly parent: readonly string[];
  readonly key: string;
  readonly fileKey: string;
  readonly env: string;
  readonly fileEnv: string;
  /**
   * Whether the section is in use, read from the document (after the other variables): a
   * variable creates the section when it is in use and the file has none; a variable for a
   * section not in use (an LDAP password while the directory is Azure) is reported as unused.
   * Absent: always in use.
   */
  readonly inUse?: (doc: Readonly<Record<string, unknown>>) => boolean;
  /** Whether one of the two must be given when the parent is present (false: e.g. an anonymous LDAP bind), read from the document. */
  readonly required: boolean | ((doc: Readonly<Record<string, unknown>>) => boolean);
  readonly redact: "all" | "url-password";
}

// A new secret (LDAP bind password, Azure client secret) is one line here plus its two
// schema fields.
export const SECRET_FIELDS: readonly SecretField[] = (
  [
  {
    parent: ["homeserver"],
    key: "password",
    fileKey: "passwordFile",
    // Before accessToken: a password from the environment makes the token optional.
    required: false,
    redact: "all",
  },
  {
    parent: ["homeserver"],
    key: "accessToken",
    fileKey: "accessTokenFile",
    // Not needed with password login (homeserver.user + password).
    required: (doc) => field(doc, "homeserver", "password") === undefined && field(doc, "homeserver", "passwordFile") === undefined,
    redact: "all",
  },
  {
    parent: ["database"],
    key: "url",
    fileKey: "urlFile",
    required: true,
    redact: "url-password",
  },
  {
    parent: ["idp", "ldap"],
    key: "bindPassword",
    fileKey: "bindPasswordFile",
    inUse: (doc) => field(doc, "idp", "kind") === "ldap",
    required: false,
    redact: "all",
  },
  {
    parent: ["idp", "azure"],
    key: "clientSecret",
    fileKey: "clientSecretFile",
    inUse: (doc) => field(doc, "idp", "kind") === "azure",
    required: false,
    redact: "all",
  },
  {
    parent: ["tokens", "synapse"],
    key: "accessToken",
    fileKey: "accessTokenFile",
    inUse: (doc) => field(doc, "tokens") !== undefined && (field(doc, "tokens", "backend") ?? "synapse") === "synapse",
    required: false,
    redact: "all",
  },
  {
    parent: ["tokens", "mas"],
    key: "clientSecret",
    fileKey: "clientSecretFile",
    inUse: (doc) => field(doc, "tokens", "backend") === "mas",
    required: true,
    redact: "all",
  },
  {
    parent: ["serve", "encryption"],
    key: "storeKey",
    fileKey: "storeKeyFile",
    inUse: (doc) => field(doc, "serve", "encryption") !== undefined,
    required: true,
    redact: "all",
  },
] satisfies Omit<SecretField, "env" | "fileEnv">[]
).map((f) => {
  const env = envName([...f.parent, f.key]);
  return { ...f, env, fileEnv: `${env}_FILE` };
});

/** The environment variable that names the config file when no path is passed. */
export const CONFIG_PATH_ENV = "MGS_CONFIG";

// ---------------------------------------------------------------------------------------
// Field rules shared by several sections.
// ---------------------------------------------------------------------------------------

function checked<T extends z.ZodType>(schema: T, problem: (value: z.output<T>) => string | undefined): T {
  return schema.superRefine((value, ctx) => {
    const message = problem(value);
    if (message !== undefined) ctx.addIssue({ code: "custom", message });
  });
}

const nonEmpty = z.string().min(1);

/** A server name (`example.org`, `matrix.example.org:8448`, `[::1]`), as in a Matrix id. */
const serverName = checked(nonEmpty, (s) =>
  parseUserId(`@x:${s}`) === undefined ? `"${s}" is not a valid server name (a host name with an optional port)` : undefined,
);

/** What is wrong with a user id of renamedUsers, or undefined. */
function renamedUserIdProblem(s: string): string | undefined {
  if (parseUserId(s) !== undefined) return undefined;
  const hint = s.startsWith("@") ? "" : "; for localparts use users.renamedLocalparts";
  return `"${s}" is not a valid Matrix user id (expected @localpart:server${hint})`;
}

const renamedUserId = checked(nonEmpty, renamedUserIdProblem);

/** What is wrong with a localpart (renamedLocalparts), or undefined. */
function localpartProblem(s: string): string | undefined {
  if (s.startsWith("@") && s.includes(":"))
    return `"${s}" is a full user id; renamedLocalparts takes localparts (e.g. jdoe): write full ids in users.renamedUsers`;
  if (s === "" || parseUserId(`@${s}:localhost`) === undefined)
    return `"${s}" is not a valid Matrix localpart (printable ASCII without ":" or spaces, e.g. jdoe)`;
  return undefined;
}

const localpartValue = checked(z.string(), localpartProblem);

/**
 * The pattern a `sync.ignoreUsers` source stands for: anchored to the whole user id. The
 * planner should build its matcher with this too, so that what the config accepts is
 * exactly what runs.
 */
export const anchoredUserPattern = userIdPattern;

function regexProblem(make: () => RegExp): string | undefined {
  try {
    make();
    return undefined;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return `not a valid regular expression: ${why.replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, "")}`;
  }
}

const userPattern = checked(
  z.string(),
  (s) => regexProblem(() => new RegExp(s)) ?? regexProblem(() => anchoredUserPattern(s)),
);

function roomRefProblem(s: string): string | undefined {
  return parseRoomAlias(s) === undefined && parseRoomId(s) === undefined
    ? `"${s}" is neither a room alias (#name:server) nor a room id (!id or !id:server)`
    : undefined;
}

const roomRef = checked(nonEmpty, roomRefProblem);

const PLACEHOLDER = /\{([^{}]*)\}/g;

function templateProblem(template: string): string | undefined {
  if (!template.startsWith("@")) return `must start with "@" (it builds a Matrix user id)`;
  let hasUserPart = false;
  for (const match of template.matchAll(PLACEHOLDER)) {
    const name = match[1] ?? "";
    if (name === "uid" || (name.startsWith("attr:") && name.length > "attr:".length)) hasUserPart = true;
    else if (name !== "domain") return `unknown placeholder {${name}}; use {uid}, {domain} or {attr:<name>}`;
  }
  if (/[{}]/.test(template.replace(PLACEHOLDER, ""))) return "has an unmatched { or }";
  if (!hasUserPart) return "must contain {uid} or an {attr:<name>} placeholder, or every user gets the same id";
  if (!template.includes(":")) return `must contain ":" between the localpart and the server, e.g. "@{uid}:{domain}"`;
  return undefined;
}

// ---------------------------------------------------------------------------------------
// Sections.
// ---------------------------------------------------------------------------------------

const homeserverSchema = z.strictObject({
  /** Client-server API base URL of the homeserver, http or https. Env: MGS_HOMESERVER_URL. */
  url: z.url({ protocol: /^https?$/, normalize: false }),
  /** The bot's access token (secret). Give this or accessTokenFile. Env: MGS_HOMESERVER_ACCESS_TOKEN. */
  accessToken: nonEmpty.exactOptional(),
  /** File holding the access token (relative to the config file's folder). Env: MGS_HOMESERVER_ACCESS_TOKEN_FILE. */
  accessTokenFile: nonEmpty.exactOptional(),
  /**
   * Password login instead of an access token: the bot's user (localpart or full user id).
   * The bot logs in once, keeps the session (its device, and the access token sealed with the
   * password) in the store, and logs in again with the same device when the token stops working.
   */
  user: nonEmpty.exactOptional(),
  /** The bot's password (secret), with `user`. Give this or passwordFile. Env: MGS_HOMESERVER_PASSWORD. */
  password: nonEmpty.exactOptional(),
  /** File holding the password. Env: MGS_HOMESERVER_PASSWORD_FILE. */
  passwordFile: nonEmpty.exactOptional(),
  /** Rooms processed at once. */
  concurrency: z.number().int().min(1).max(64).default(4),
  /**
   * Time limit of one HTTP request to the homeserver (also the token admin APIs), in
   * milliseconds: the whole answer, body included, must arrive within it.
   */
  requestTimeoutMs: z.number().int().min(1).max(600_000).default(30_000),
  /** How often one request is retried after a 429 (rate limited) answer. */
  maxRetries: z.number().int().min(0).max(100).default(5),
  /**
   * Longest wait a `Retry-After` may ask for (homeserver 429s, token admin API 429/503), in
   * milliseconds; a longer one fails the request at once instead of sleeping for hours.
   */
  maxRetryWaitMs: z.number().int().min(0).max(86_400_000).default(300_000),
});

const databaseSchema = z.strictObject({
  /** PostgreSQL connection URL (secret: it may hold a password). Give this or urlFile. Env: MGS_DATABASE_URL. */
  url: nonEmpty.exactOptional(),
  /** File holding the connection URL (relative to the config file's folder). Env: MGS_DATABASE_URL_FILE. */
  urlFile: nonEmpty.exactOptional(),
});

/** Role name → Matrix power level. Levels are integers in Matrix' canonical JSON range (±(2^53−1)). */
const rolesSchema = checked(z.record(nonEmpty, z.number().int()), (roles) =>
  Object.keys(roles).length === 0 ? "give at least one role, e.g. member: 0" : undefined,
);

/** The static directory: groups and users listed in a YAML file. */
const staticIdpSchema = z.strictObject({
  kind: z.literal("static"),
  static: z.strictObject({
    /** The directory file, relative to the config file's folder. Read by the provider, not here. */
    file: nonEmpty,
  }),
});

const ldapFilter = checked(nonEmpty, (s) => {
  try {
    FilterParser.parseString(s);
    return undefined;
  } catch (err) {
    return `not a valid LDAP filter (RFC 4515): ${err instanceof Error ? err.message : String(err)}`;
  }
});

const ldapScope = z.enum(["base", "one", "sub"]);

/**
 * An LDAP directory: OpenLDAP, 389-DS/FreeIPA or Active Directory. `flavour` picks the
 * defaults of the filters and of how disabled accounts are recognised; every one of them
 * can be set explicitly.
 */
const ldapIdpSchema = z.strictObject({
  kind: z.literal("ldap"),
  ldap: z.strictObject({
    /** ldap://host:389 or ldaps://host:636. Env: MGS_IDP_LDAP_URL. */
    url: checked(nonEmpty, (s) => (/^ldaps?:\/\/[^/\s]+\/?$/i.test(s) ? undefined : `"${s}" is not an ldap:// or ldaps:// URL (host and port only)`)),
    /** Upgrade an ldap:// connection with StartTLS before binding. */
    startTls: z.boolean().default(false),
    /** PEM file of the CA that signed the server's certificate (relative to the config file). */
    caFile: nonEmpty.exactOptional(),
    /** Refuse a server certificate that does not verify. Turn off only for testing. */
    rejectUnauthorized: z.boolean().default(true),
    /** The account to bind as; absent: anonymous. */
    bindDn: nonEmpty.exactOptional(),
    /** Its password (secret). Give this or bindPasswordFile. Env: MGS_IDP_LDAP_BIND_PASSWORD. */
    bindPassword: nonEmpty.exactOptional(),
    /** File holding the password. Env: MGS_IDP_LDAP_BIND_PASSWORD_FILE. */
    bindPasswordFile: nonEmpty.exactOptional(),
    /** Time limit to connect, in milliseconds. */
    connectTimeoutMs: z.number().int().min(1).max(600_000).default(10_000),
    /** Time limit of one operation (one page of a search), in milliseconds. */
    timeoutMs: z.number().int().min(1).max(600_000).default(30_000),
    /** Entries per page of every search (paged-results control). AD's maximum is 1000. */
    pageSize: z.number().int().min(1).max(100_000).default(500),
    /** openldap | 389ds (also FreeIPA) | ad: defaults for filters and disabled accounts. */
    flavour: z.enum(["openldap", "389ds", "ad"]).default("openldap"),
    groups: z.strictObject({
      base: nonEmpty,
      scope: ldapScope.default("sub"),
      /** Default by flavour: groupOfNames, groupOfUniqueNames, posixGroup; AD: group. */
      filter: ldapFilter.exactOptional(),
      /** The group's name, matched by the mapping and the naming convention. */
      nameAttribute: nonEmpty.default("cn"),
      /** member / uniqueMember hold DNs (users or nested groups); memberUid holds login names. */
      memberAttributes: z.array(nonEmpty).min(1).default(() => ["member", "uniqueMember", "memberUid"]),
    }),
    users: z.strictObject({
      base: nonEmpty,
      scope: ldapScope.default("sub"),
      /** Default by flavour: inetOrgPerson or posixAccount; AD: person users (no computers). */
      filter: ldapFilter.exactOptional(),
      /** The attribute a posixGroup's memberUid values name. */
      memberUidAttribute: nonEmpty.default("uid"),
      /**
       * Filter of disabled accounts, which are never members. Default by flavour: none;
       * 389ds: (nsAccountLock=TRUE); ad: userAccountControl bit 2. `false`: no check.
       */
      disabledFilter: z.union([ldapFilter, z.literal(false)]).exactOptional(),
    }),
    /**
     * Active Directory only: let the server expand nested groups with the in-chain matching
     * rule (1.2.840.113556.1.4.1941), one query per mapped group.
     */
    activeDirectoryInChain: z.boolean().default(false),
  }),
});

const guid = checked(nonEmpty, (s) =>
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s) ? undefined : `"${s}" is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)`,
);

/**
 * Azure AD / Entra ID through Microsoft Graph. Needs the application permissions
 * GroupMember.Read.All (members, owners), User.Read.All (user attributes) and, for
 * discovery by prefix or root group, Group.Read.All.
 */
const azureIdpSchema = z.strictObject({
  kind: z.literal("azure"),
  azure: z.strictObject({
    /** Directory (tenant) id, or a verified domain of the tenant. */
    tenantId: nonEmpty,
    /** Application (client) id of the app registration. */
    clientId: guid,
    /** Client secret (secret). Give this, clientSecretFile, or certificateFile. Env: MGS_IDP_AZURE_CLIENT_SECRET. */
    clientSecret: nonEmpty.exactOptional(),
    /** File holding the client secret. Env: MGS_IDP_AZURE_CLIENT_SECRET_FILE. */
    clientSecretFile: nonEmpty.exactOptional(),
    /** PEM file with the certificate AND its private key, for a certificate credential. */
    certificateFile: nonEmpty.exactOptional(),
    /** Sign-in authority, https only (national clouds: https://login.microsoftonline.us ...). Env: MGS_IDP_AZURE_AUTHORITY_HOST. */
    authorityHost: z.url({ protocol: /^https$/, normalize: false }).default("https://login.microsoftonline.com"),
    /** Graph endpoint with its version, https only. Env: MGS_IDP_AZURE_GRAPH_BASE_URL. */
    graphBaseUrl: z.url({ protocol: /^https$/, normalize: false }).default("https://graph.microsoft.com/v1.0"),
    /** The direct member groups of this group are discovered too (the seed's azure_root_group_id). */
    rootGroupId: guid.exactOptional(),
    /** Read group owners (they get mapping.convention.ownersRole in convention rooms): one request per group. */
    readOwners: z.boolean().default(true),
    /**
     * Guest accounts (userPrincipalName "name_partner.com#EXT#@tenant..."): `skip` them, or
     * `map` them with uid = the part before "#EXT#", lower-cased ("name_partner.com").
     */
    guests: z.enum(["skip", "map"]).default("skip"),
    /** Extra user properties to read (e.g. an extension attribute used by users.attribute). */
    extraAttributes: z.array(nonEmpty).default(() => []),
    /** Members per page, at most 999. */
    pageSize: z.number().int().min(1).max(999).default(999),
    /** Retries of one request after 429 or 503 (Retry-After honoured; exponential back-off without it). */
    maxRetries: z.number().int().min(0).max(20).default(5),
    /** Time limit of one request (Graph, and the sign-in's token requests), in milliseconds: the whole answer, body included. */
    timeoutMs: z.number().int().min(1).max(600_000).default(30_000),
  }),
});

/**
 * The directory to read groups from, chosen by `kind`; each kind has its settings under a
 * key of the same name. To add one: define its strict object and list it here.
 */
const idpSchema = z.discriminatedUnion("kind", [staticIdpSchema, ldapIdpSchema, azureIdpSchema]);

const usersSchema = z.strictObject({
  /** The directory attribute that fills {uid}. */
  attribute: nonEmpty.default("uid"),
  /** How a directory user becomes a Matrix id: {uid}, {domain} and {attr:<name>} are replaced. */
  template: checked(nonEmpty, templateProblem).default("@{uid}:{domain}"),
  /** What {domain} stands for; absent: the bot's own server name (known at run time). */
  domain: serverName.exactOptional(),
  /** Lower-case the built id (Matrix ids are lower case). */
  lowercase: z.boolean().default(true),
  /**
   * Users whose Matrix id differs from the template's result, by full id:
   * `"<id the template builds>": "<id of the real account>"`, e.g. the directory now says
   * jane.doe but the account is still `@jdoe:example.org`:
   * `"@jane.doe:example.org": "@jdoe:example.org"`. Keys and values are full user ids; for
   * localparts use `renamedLocalparts`.
   */
  renamedUsers: z
    .record(z.string(), renamedUserId)
    .superRefine((renamed, ctx) => {
      for (const key of Object.keys(renamed)) {
        const problem = renamedUserIdProblem(key);
        if (problem !== undefined) ctx.addIssue({ code: "custom", path: [key], message: problem });
      }
    })
    .default(() => ({})),
  /**
   * The same by localpart, both on users.domain (absent: the bot's server) — the inviterbot's
   * `renamed_users`, 1:1: `<localpart the template builds>: <localpart of the real account>`
   * (the seed's "new username: old username"), e.g. `jane.doe: jdoe` gives
   * `"@jane.doe:<domain>": "@jdoe:<domain>"`. A user may be renamed here or in renamedUsers,
   * not in both.
   */
  renamedLocalparts: z
    .record(z.string(), localpartValue)
    .superRefine((renamed, ctx) => {
      for (const key of Object.keys(renamed)) {
        const problem = localpartProblem(key);
        if (problem !== undefined) ctx.addIssue({ code: "custom", path: [key], message: `key ${problem}` });
      }
    })
    .default(() => ({})),
});

const groupRefSchema = z.strictObject({
  /** Directory group: its id (DN, object id) or its name. */
  group: nonEmpty,
  /** The role members of this group get in the room; a name from `roles`. */
  role: nonEmpty.default("member"),
});

const roomMappingSchema = z.strictObject({
  /** The room: an alias (#name:server) or a room id (!id or !id:server). */
  room: roomRef,
  /** The groups whose (recursive) members belong in the room. */
  groups: z.array(groupRefSchema).min(1),
});

const conventionSchema = z.strictObject({
  /** Map rooms from group names instead of listing them. */
  enabled: z.boolean().default(false),
  /** Groups named "<prefix>#alias:server" (Azure style) map to that room. */
  prefix: z.string().default("MTRX "),
  /** A sibling group "<name><ownersSuffix>" gives its members ownersRole. */
  ownersSuffix: nonEmpty.default("_owners"),
  /** Role of members of the owners group. */
  ownersRole: nonEmpty.default("moderator"),
  /** Role of members of the group itself. */
  memberRole: nonEmpty.default("member"),
  /** Server for names that carry none (LDAP style "#alias"); absent: the bot's server name. */
  server: serverName.exactOptional(),
});

const mappingSchema = z.strictObject({
  /** Rooms listed one by one with the groups mapped to them. */
  rooms: z.array(roomMappingSchema).default(() => []),
  /** Rooms derived from group names. */
  convention: conventionSchema.prefault({}),
});

const maxRemovalsSchema = z.strictObject({
  /** Most members one run may remove from one room; more are held for an operator. */
  count: z.number().int().min(0).exactOptional(),
  /** Most removals as a share (0..1) of a room's managed members. */
  share: z.number().min(0).max(1).exactOptional(),
});

const syncSchema = z.strictObject({
  /**
   * Which runs may kick (remove members the directory no longer puts in a room, revoke stale
   * invites): `always` (default); `manual`: only runs a person started — `!sync` in the
   * management room and the `sync` CLI command — while the schedule and the run at start
   * invite and change levels only (the inviterbot's `cautious: true`); `scheduled`: only the
   * schedule and the run at start; `never`: no run (cautious mode). A run that may not kick
   * reports each user it left in the room and which rule kept them; the mass-removal guard
   * and held removals apply to the runs that do kick, unchanged.
   */
  kickOn: z.enum(KICK_ON).exactOptional(),
  /** The older form of kickOn: true = kickOn: always, false = kickOn: never. Give kick or kickOn, not both. */
  kick: z.boolean().exactOptional(),
  /** Reason given with each kick. */
  kickReason: nonEmpty.default(DEFAULT_KICK_REASON),
  /** Guard rail against mass removal; no limit when absent. */
  maxRemovals: maxRemovalsSchema.prefault({}),
  /** Regular expressions (anchored to the whole id) of users never touched. */
  ignoreUsers: z.array(userPattern).default(() => []),
  /** How deep nested groups are followed. */
  maxDepth: z.number().int().min(1).max(100).default(10),
  /**
   * The longest one run may take (milliseconds); past it no further room or action is
   * started and the run ends failed (the next run continues). Under `serve` a run also ends
   * at the next scheduled slot. Absent: no limit beyond that.
   */
  maxRunMs: z.number().int().min(1000).max(7 * 24 * 3_600_000).exactOptional(),
  /**
   * A mapped alias on one of our managed domains that does not resolve is created in the
   * run (with the room template); false: such a room is reported and skipped.
   */
  createRooms: z.boolean().default(true),
  /**
   * Most members invited in the createRoom request itself; the rest are invited right after.
   * Synapse refuses more than its `rc_invites.per_room.burst_count` (default 10) at once.
   */
  createRoomInvites: z.number().int().min(0).max(100_000).default(10),
});

// ---------------------------------------------------------------------------------------
// Room templates and spaces (the domain types are in reconcile/template.ts; the config is
// turned into them by room-templates.ts).
// ---------------------------------------------------------------------------------------

/** A power level: an integer in Matrix' canonical JSON range (±(2^53−1)). */
const powerLevel = z.number().int(); // zod's int() is bounded to the safe integers

/** The power-level fields of a template, by their Matrix names (the seed's `permissions`). */
const permissionsSchema = z.strictObject({
  /** Level of users not listed in the room's `users`. */
  users_default: powerLevel.exactOptional(),
  /** Level needed to send message events not listed in `events`. */
  events_default: powerLevel.exactOptional(),
  /** Level needed to send state events not listed in `events`. */
  state_default: powerLevel.exactOptional(),
  /** Level needed to invite. */
  invite: powerLevel.exactOptional(),
  /** Level needed to kick. */
  kick: powerLevel.exactOptional(),
  /** Level needed to ban. */
  ban: powerLevel.exactOptional(),
  /** Level needed to redact others' events. */
  redact: powerLevel.exactOptional(),
  /** Level needed to notify the whole room (@room). */
  notifications: z.strictObject({ room: powerLevel.exactOptional() }).exactOptional(),
  /** Event type → level needed to send it; only the listed types are managed. */
  events: z.record(nonEmpty, powerLevel).exactOptional(),
});

/** A union's options as a mutable tuple (the schema walker in load.ts takes `options` as an array). */
function mutable<const T extends readonly z.ZodType[]>(options: T): [...T] {
  return [...options];
}

const JOIN_RULE_NAMES = ["invite", "knock", "public"] as const;
const JOIN_RULE_LISTS = ["restricted", "knock_restricted"] as const;
const JOIN_RULE_FORMS = `${JOIN_RULE_NAMES.join(", ")}, {restricted: [space, ...]} or {knock_restricted: [space, ...]}`;

/** A join rule by name. Anything but a mapping stops here (the mapping form is the other option). */
const joinRuleName = z
  .custom<(typeof JOIN_RULE_NAMES)[number]>((v) => !isRecord(v), { abort: true })
  .check(
    z.superRefine((v, ctx) => {
      if (!(JOIN_RULE_NAMES as readonly unknown[]).includes(v)) {
        const got = typeof v === "string" ? JSON.stringify(v) : Array.isArray(v) ? "a list" : v === null ? "an empty value" : String(v);
        ctx.addIssue({ code: "custom", message: `must be one of: ${JOIN_RULE_FORMS} (got ${got})` });
      }
    }),
  );

/** Spaces whose members may join: aliases or room ids (a space not in `spaces` may be one made by hand). */
const joinRuleSpaces = z.array(roomRef).min(1);

/**
 * `{restricted: [...]}` or `{knock_restricted: [...]}`: exactly one key. The lists are checked
 * here rather than as properties: a union reports neither option's problem when both stop at
 * a wrong type (`restricted: "#s:x"`), and this option must not stop.
 */
const joinRuleLists = z
  .looseObject({ restricted: z.unknown().exactOptional(), knock_restricted: z.unknown().exactOptional() })
  .superRefine((v, ctx) => {
    const allowed: readonly string[] = JOIN_RULE_LISTS;
    for (const key of Object.keys(v)) {
      if (!allowed.includes(key))
        ctx.addIssue({ code: "custom", path: [key], message: `unknown key; allowed here: ${[...JOIN_RULE_LISTS].sort().join(", ")}` });
      else {
        const checkedList = joinRuleSpaces.safeParse(v[key]);
        for (const issue of checkedList.error?.issues ?? []) ctx.addIssue({ ...issue, path: [key, ...issue.path] });
      }
    }
    const given = JOIN_RULE_LISTS.filter((k) => v[k] !== undefined);
    if (given.length > 1) ctx.addIssue({ code: "custom", message: "give restricted or knock_restricted, not both" });
    else if (given.length === 0 && Object.keys(v).every((k) => allowed.includes(k)))
      ctx.addIssue({ code: "custom", message: `must be one of: ${JOIN_RULE_FORMS} (got an empty mapping)` });
  });

/**
 * `m.room.join_rules`; restricted needs room version 8+, knock_restricted 10+. (The union's
 * options have no transform: zod takes a failed pipe as aborted and would then report
 * neither option's own problem.)
 */
const joinRuleSchema = z
  .union(mutable([joinRuleName, joinRuleLists]))
  .transform((v): (typeof JOIN_RULE_NAMES)[number] | { restricted: string[] } | { knock_restricted: string[] } => {
    if (typeof v === "string") return v;
    // Checked by joinRuleLists: exactly one of the two, a list of room references.
    return v.restricted !== undefined ? { restricted: v.restricted as string[] } : { knock_restricted: v.knock_restricted as string[] };
  });

/** Room version identifiers: a-z, 0-9, "." and "-", at most 32 characters (e.g. "10", "org.matrix.msc1234"). */
const ROOM_VERSION = /^[a-z0-9.-]{1,32}$/;

/**
 * A room version, a string ("10"). A whole number as YAML writes it (`roomVersion: 10`) is
 * taken as that string; any other number must be quoted.
 */
const roomVersionSchema = z
  .union(
    mutable([
      checked(z.string(), (s) =>
        ROOM_VERSION.test(s) ? undefined : `"${s}" is not a room version (e.g. "10"; only a-z, 0-9, "." and "-", at most 32 characters)`,
      ),
      z.number().check(
        z.superRefine((n, ctx) => {
          if (!Number.isInteger(n) || n < 1)
            ctx.addIssue({ code: "custom", message: `a room version is a string: quote it, e.g. roomVersion: "10" (got ${n})` });
        }),
      ),
    ]),
  )
  .transform((v) => String(v));

/** What every managed room should have besides its members. Every field is optional: absent is not managed. */
const roomTemplateFields = {
  /** Power levels other than `users`; only the fields given are managed. */
  permissions: permissionsSchema.exactOptional(),
  /** `m.room.history_visibility`: invited, joined, shared or world_readable. */
  historyVisibility: z.enum(HISTORY_VISIBILITIES).exactOptional(),
  /** `m.room.join_rules`: invite, knock, public, {restricted: [spaces]} or {knock_restricted: [spaces]}. */
  joinRule: joinRuleSchema.exactOptional(),
  /** `m.room.guest_access`: can_join or forbidden. */
  guestAccess: z.enum(GUEST_ACCESS).exactOptional(),
  /** `m.room.topic` ("" clears it). */
  topic: z.string().exactOptional(),
  /** At creation only: turn on encryption (never switched off, never switched on in an existing room). */
  encryption: z.boolean().exactOptional(),
  /** At creation only: the room version ("11"); absent: "11", Synapse's default, asked for explicitly (so the rules are known). */
  roomVersion: roomVersionSchema.exactOptional(),
};

/** The template of every managed room (spaces too). */
const roomDefaultsSchema = z.strictObject({
  ...roomTemplateFields,
  /** At creation only: turn on encryption (never switched off, never switched on in an existing room). */
  encryption: z.boolean().default(false),
});

/** One room's changes to the defaults, field by field (`permissions.events` and `notifications` key by key). */
const roomOverrideSchema = z.strictObject({
  ...roomTemplateFields,
  /** `m.room.name`; a room created without one is named after its alias' localpart. */
  name: nonEmpty.exactOptional(),
});

const roomsSchema = z.strictObject({
  /** The template of every managed room. */
  defaults: roomDefaultsSchema.prefault({}),
  /** Room reference (alias #name:server or room id) → its template changes, and its name. */
  overrides: z.record(z.string(), roomOverrideSchema).default(() => ({})),
});

/** A space: a managed room of type m.space whose children are managed rooms. */
const spaceSchema = z.strictObject({
  /** The space: an alias (created when missing and on a managed domain) or a room id. */
  space: roomRef,
  /** `m.room.name` of the space (wins over rooms.overrides). */
  name: nonEmpty.exactOptional(),
  /** `m.room.topic` of the space (wins over rooms.overrides). */
  topic: z.string().exactOptional(),
  /** Its children; at least one of the two lists must be non-empty. */
  children: z
    .strictObject({
      /** Rooms (or other spaces) by alias or room id. */
      rooms: z.array(roomRef).default(() => []),
      /** Directory groups (id or name): each room mapped from a group nested under one of them is a child. */
      underGroups: z.array(nonEmpty).default(() => []),
    })
    .prefault({})
    .superRefine((c, ctx) => {
      if (c.rooms.length === 0 && c.underGroups.length === 0)
        ctx.addIssue({ code: "custom", message: "give at least one child: children.rooms or children.underGroups" });
    }),
  /** Also put m.space.parent into each child, pointing at this space. */
  parentLinks: z.boolean().default(true),
  /** Set each child's join rule to restricted, allowing the members of this space. */
  restrictChildren: z.boolean().default(false),
  /** The role (from `roles`) the space's members get in the space. */
  role: nonEmpty.default("member"),
});

const cronExpression = checked(nonEmpty, (s) => {
  const v = validateDetailed(s);
  return v.valid ? undefined : `not a valid cron expression: ${v.errors.map((e) => `${e.field}: ${e.message}`).join("; ")}`;
});

const timezone = checked(nonEmpty, (s) => {
  try {
    new Intl.DateTimeFormat("en", { timeZone: s });
    return undefined;
  } catch {
    return `"${s}" is not a known time zone (e.g. UTC, Europe/Berlin)`;
  }
});

/** An allow-list entry: a user id, or a regular expression over whole user ids. */
const allowEntry = checked(nonEmpty, (s) =>
  parseUserId(s) !== undefined ? undefined : regexProblem(() => anchoredUserPattern(s)),
);

/** `matrix-group-sync serve`: the schedule and the management room. */
const serveSchema = z.strictObject({
  /** The room operators command the bot from: a room id or alias. The bot joins it at start. */
  managementRoom: roomRef,
  /** What starts a command. */
  commandPrefix: nonEmpty.default("!"),
  /** When to sync (cron, 5 or 6 fields; 6 = with seconds). Default: every 30 minutes. */
  schedule: cronExpression.default("*/30 * * * *"),
  /** Time zone of the schedule. */
  timezone: timezone.default("UTC"),
  /** Also run once right after start. */
  runAtStart: z.boolean().default(false),
  /**
   * Who may command, besides being in the management room: user ids or regular
   * expressions over whole user ids. Empty: everyone in the management room.
   */
  allow: z.array(allowEntry).default(() => []),
  /** `!unmanage`: after handing the room to the new admin, lower the bot's own level and leave. */
  unmanage: z.strictObject({ demoteSelf: z.boolean().default(true), leave: z.boolean().default(true) }).prefault({}),
  /** On SIGTERM/SIGINT: how long the current action may take before the process exits anyway. */
  shutdownTimeoutMs: z.number().int().min(0).max(600_000).default(30_000),
  /** /healthz, /readyz and /metrics. Bound to 127.0.0.1 unless told otherwise. */
  http: z
    .strictObject({
      enabled: z.boolean().default(true),
      address: nonEmpty.default("127.0.0.1"),
      port: z.number().int().min(0).max(65_535).default(9090),
    })
    .prefault({}),
  /** With PostgreSQL: how often a standby replica tries to become the leader. */
  leaderRetryMs: z.number().int().min(100).max(600_000).default(2_000),
  /**
   * How often to ask the directory whether anything changed (its change marker: the static
   * file's hash, LDAP's contextCSN / highestCommittedUSN / lastusn), in milliseconds; a change
   * starts a run at once. An unchanged directory costs that one probe. 0: off (runs only on the
   * schedule and on command). A directory without a marker (Azure, an LDAP server keeping none)
   * is not polled.
   */
  pollIntervalMs: z.number().int().min(0).max(86_400_000).default(60_000),
  /**
   * End-to-end encryption, for an encrypted management room, token rooms and direct chats. Off
   * unless given: the bot then refuses an encrypted management room and sends nothing into an
   * encrypted room.
   */
  encryption: z
    .strictObject({
      /**
       * Encrypts the bot's keys in the store (any text; keep it as safe as the access token).
       * Give this or storeKeyFile. Env: MGS_SERVE_ENCRYPTION_STORE_KEY.
       */
      storeKey: nonEmpty.exactOptional(),
      /** File holding the store key. Env: MGS_SERVE_ENCRYPTION_STORE_KEY_FILE. */
      storeKeyFile: nonEmpty.exactOptional(),
      /** How long a message whose key has not arrived is waited for before the sender is asked to send it again. */
      keyWaitMs: z.number().int().min(0).max(600_000).default(15_000),
    })
    .exactOptional(),
});

/** First words of the other commands: the token word may not be one of them. */
const RESERVED_COMMAND_WORDS: readonly string[] = ["help", "inviter", "idp", "joined", "managed", "sync", "status", "history", "release", "unmanage", "manage", "invite-member", "invite-admin", "kick-member", "check-config", "migrate", "serve", "crypto-reset", "import"];

const expiryText = checked(nonEmpty, (s) =>
  /^(never|(\d+[smhdw])+|\d{4}-\d{2}-\d{2}.*)$/i.test(s) ? undefined : `"${s}" is not an expiry: use 7d, 12h, an ISO date, or never`,
);

/** Registration tokens (MSC3231): Synapse's admin API, or Matrix Authentication Service's. */
const tokensSchema = z.strictObject({
  backend: z.enum(["synapse", "mas"]).default("synapse"),
  synapse: z
    .strictObject({
      /** A server admin's access token (secret); default: homeserver.accessToken. Env: MGS_TOKENS_SYNAPSE_ACCESS_TOKEN. */
      accessToken: nonEmpty.exactOptional(),
      accessTokenFile: nonEmpty.exactOptional(),
    })
    .exactOptional(),
  mas: z
    .strictObject({
      /** The MAS issuer URL (its token endpoint is {url}/oauth2/token, the admin API {url}/api/admin/v1). */
      url: z.url({ protocol: /^https?$/, normalize: false }),
      /** A client listed in MAS's policy.data.admin_clients. */
      clientId: nonEmpty,
      /** Its secret. Env: MGS_TOKENS_MAS_CLIENT_SECRET. */
      clientSecret: nonEmpty.exactOptional(),
      clientSecretFile: nonEmpty.exactOptional(),
      /** How the client sends its secret: its client_auth_method in MAS's config. Absent: client_secret_basic. */
      clientAuth: z.enum(["client_secret_basic", "client_secret_post"]).exactOptional(),
    })
    .exactOptional(),
  /** What `token create` uses when uses or expiry are not given. */
  defaults: z.strictObject({ uses: z.number().int().min(0).nullable().default(1), expiry: expiryText.default("7d") }).prefault({}),
  /** Who may use token commands: user ids, regexes over user ids, or room ids (anyone in the room). Empty: the management room only. */
  allow: z.array(nonEmpty).default(() => []),
  /** A ready-to-share line for `token create`: {token}, {expiry}, {uses} are replaced. */
  inviteTemplate: nonEmpty.exactOptional(),
  /**
   * The word of the token commands in the rooms (`!token list`; mas-token-bot's base_command):
   * lowercase letters, digits and `-`, not another command's name. The CLI's stays `token`.
   */
  command: checked(nonEmpty, (s) =>
    !/^[a-z][a-z0-9-]{0,31}$/.test(s)
      ? `"${s}" is not a command word: lowercase letters, digits and -, starting with a letter`
      : RESERVED_COMMAND_WORDS.includes(s)
        ? `"${s}" is already a command (${RESERVED_COMMAND_WORDS.join(", ")})`
        : undefined,
  ).default("token"),
  /**
   * Token commands in a direct message (as matrix-registration-bot takes them): the bot joins
   * a direct chat (`is_direct`) it is invited to by someone on the token allow list (a user
   * or regex entry) and hears token commands there. Off unless set.
   */
  directMessages: z.boolean().default(false),
});

// ---------------------------------------------------------------------------------------
// Retention: how long the audit is kept (pruned by the service, store/retention.ts).
// ---------------------------------------------------------------------------------------

const RETENTION_UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const DAY_MS = 86_400_000;
const MAX_RETENTION_MS = 100 * 365 * DAY_MS;

/**
 * A retention period as written (`90d`, `52w`, `1w3d`, `36h`; `never` keeps everything): the
 * milliseconds it stands for, null for never, undefined when it is not a period.
 */
export function retentionMs(text: string): number | null | undefined {
  if (text.toLowerCase() === "never") return null;
  if (!/^(\d+[smhdw])+$/i.test(text)) return undefined;
  let ms = 0;
  for (const m of text.matchAll(/(\d+)([smhdw])/gi)) ms += Number(m[1]) * (RETENTION_UNIT_MS[(m[2] ?? "").toLowerCase()] ?? Number.NaN);
  return Number.isFinite(ms) ? ms : undefined;
}

/** At least a day: `3m` is three minutes, and would leave no history. */
const retentionPeriod = checked(nonEmpty, (s) => {
  const ms = retentionMs(s);
  if (ms === undefined) return `"${s}" is not a retention period: use e.g. 90d, 52w, 36h, or never`;
  if (ms === null) return undefined;
  if (ms < DAY_MS) return `"${s}" is shorter than a day (m means minutes): keep at least 1d, or never`;
  if (ms > MAX_RETENTION_MS) return `"${s}" is longer than 100 years: use never`;
  return undefined;
});

const retentionSchema = z.strictObject({
  /**
   * Sync runs with the actions they recorded (`!history`), by their start. Whatever its age,
   * a run still running and the last run of each managed room and held removal are kept.
   */
  runs: retentionPeriod.default("90d"),
  /** The registration-token audit. */
  tokenAudit: retentionPeriod.default("365d"),
});

const logSchema = z.strictObject({
  level: z.enum(["trace", "debug", "info", "warn", "error"]).default("info"),
  /** json: one object a line; pretty: for a person at a terminal. */
  format: z.enum(["json", "pretty"]).default("json"),
});

export const configFileSchema = z.strictObject({
  /** The homeserver and the bot account on it. */
  homeserver: homeserverSchema,
  /** PostgreSQL; absent: an embedded PGlite database in dataDir. */
  database: databaseSchema.exactOptional(),
  /** Folder for local state (the embedded database), relative to the config file's folder. Env: MGS_DATA_DIR. */
  dataDir: nonEmpty.default("./data"),
  /** Servers whose users are managed; absent: the bot's own server name. */
  managedDomains: z
    .array(serverName)
    .min(1, "give at least one domain, or leave managedDomains out to manage the bot's own server")
    .exactOptional(),
  /** Role name → power level. Default: member 0, moderator 50, admin 100. */
  roles: rolesSchema.default(() => ({ ...DEFAULT_ROLES })),
  /** The directory. */
  idp: idpSchema,
  /** How directory users become Matrix ids. */
  users: usersSchema.prefault({}),
  /** Which groups go to which rooms, with which role. */
  mapping: mappingSchema.prefault({}),
  /** What a sync run may do. */
  sync: syncSchema.prefault({}),
  /** Registration tokens; required by the token commands only. */
  tokens: tokensSchema.exactOptional(),
  /** What managed rooms should look like besides their members: defaults and per-room overrides. */
  rooms: roomsSchema.prefault({}),
  /** Spaces grouping managed rooms. */
  spaces: z.array(spaceSchema).default(() => []),
  /** Serve mode; required by `matrix-group-sync serve` only. */
  serve: serveSchema.exactOptional(),
  /** How long the audit (runs and their actions, the token audit) is kept. */
  retention: retentionSchema.prefault({}),
  log: logSchema.prefault({}),
});

// ---------------------------------------------------------------------------------------
// Cross-field rules. They read the raw document defensively (it may be invalid elsewhere),
// so that their errors are reported together with the schema's.
// ---------------------------------------------------------------------------------------

export interface RuleViolation {
  readonly path: readonly (string | number)[];
  readonly message: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The value at a path of a raw (unvalidated) document. */
function field(value: unknown, ...path: string[]): unknown {
  return path.reduce<unknown>((at, key) => (isRecord(at) ? at[key] : undefined), value);
}

/**
 * Roles referenced by the mapping and the spaces exist; the same room is not listed twice;
 * the rules of `rooms` and `spaces` (checkRoomsAndSpaces).
 */
export function checkReferences(raw: unknown): RuleViolation[] {
  const out: RuleViolation[] = [];
  const rolesRaw = field(raw, "roles");
  const roles = rolesRaw === undefined ? DEFAULT_ROLES : isRecord(rolesRaw) ? rolesRaw : undefined;
  const mapping = field(raw, "mapping");

  const checkRole = (path: (string | number)[], given: unknown, fallback: string) => {
    if (roles === undefined) return; // the roles themselves are invalid: reported by the schema
    const known = Object.keys(roles).sort();
    const list = known.length > 0 ? known.join(", ") : "(none)";
    if (given === undefined) {
      if (!Object.hasOwn(roles, fallback))
        out.push({ path, message: `no role given and the default role "${fallback}" is not in roles; roles are: ${list}` });
    } else if (typeof given === "string" && given !== "" && !Object.hasOwn(roles, given)) {
      out.push({ path, message: `unknown role "${given}"; roles are: ${list}` });
    }
  };

  const rooms = field(mapping, "rooms");
  if (Array.isArray(rooms)) {
    const seen = new Map<string, number>();
    rooms.forEach((entry: unknown, i) => {
      const room = field(entry, "room");
      if (typeof room === "string") {
        const first = seen.get(room);
        if (first === undefined) seen.set(room, i);
        else
          out.push({
            path: ["mapping", "rooms", i, "room"],
            message: `"${room}" is already listed at /mapping/rooms/${first}; list its groups in one entry`,
          });
      }
      const groups = field(entry, "groups");
      if (Array.isArray(groups)) {
        groups.forEach((group: unknown, j) => {
          if (isRecord(group)) checkRole(["mapping", "rooms", i, "groups", j, "role"], group["role"], "member");
        });
      }
    });
  }

  const convention = field(mapping, "convention");
  if (isRecord(convention)) {
    // Defaulted roles only matter when the convention is in use.
    const enabled = convention["enabled"] === true;
    for (const [key, fallback] of [
      ["ownersRole", "moderator"],
      ["memberRole", "member"],
    ] as const) {
      const given = convention[key];
      if (given !== undefined || enabled) checkRole(["mapping", "convention", key], given, fallback);
    }
  }
  checkRoomsAndSpaces(raw, out, checkRole);
  checkKickRule(raw, out);
  checkRenamedLocalparts(raw, out);

  // The bot signs in with an access token or with user + password, not both.
  const hs = field(raw, "homeserver");
  if (isRecord(hs)) {
    const token = hs["accessToken"] !== undefined || hs["accessTokenFile"] !== undefined;
    const password = hs["password"] !== undefined || hs["passwordFile"] !== undefined;
    if (token && password) out.push({ path: ["homeserver"], message: "give an access token (accessToken/accessTokenFile) or password login (user with password/passwordFile), not both" });
    if (password && hs["user"] === undefined) out.push({ path: ["homeserver", "user"], message: "required with password login (the bot's localpart or user id)" });
    if (!password && hs["user"] !== undefined) out.push({ path: ["homeserver", "user"], message: "user is for password login: give password or passwordFile (or MGS_HOMESERVER_PASSWORD), or leave user out" });
  }

  // LDAP: a bind DN with an empty password is an "unauthenticated bind", which many servers
  // answer with success without checking anything; a password without a DN binds nobody.
  const ldap = field(field(raw, "idp"), "ldap");
  if (field(field(raw, "idp"), "kind") === "ldap" && isRecord(ldap)) {
    const hasPassword = ldap["bindPassword"] !== undefined || ldap["bindPasswordFile"] !== undefined;
    if (ldap["bindDn"] !== undefined && !hasPassword) {
      out.push({ path: ["idp", "ldap"], message: "bindDn needs bindPassword or bindPasswordFile (or MGS_IDP_LDAP_BIND_PASSWORD); leave bindDn out to bind anonymously" });
    }
    if (ldap["bindDn"] === undefined && hasPassword) {
      out.push({ path: ["idp", "ldap", "bindDn"], message: "required when a bind password is given" });
    }
  }
  const azure = field(field(raw, "idp"), "azure");
  if (field(field(raw, "idp"), "kind") === "azure" && isRecord(azure)) {
    const secret = azure["clientSecret"] !== undefined || azure["clientSecretFile"] !== undefined;
    const cert = azure["certificateFile"] !== undefined;
    if (secret === cert) {
      out.push({
        path: ["idp", "azure"],
        message: secret
          ? "give a client secret or certificateFile, not both"
          : "give clientSecret, clientSecretFile or certificateFile (or set MGS_IDP_AZURE_CLIENT_SECRET)",
      });
    }
  }
  return out;
}

/** `sync.kick` is the older form of `sync.kickOn`: one of the two. */
function checkKickRule(raw: unknown, out: RuleViolation[]): void {
  const sync = field(raw, "sync");
  if (!isRecord(sync) || sync["kick"] === undefined || sync["kickOn"] === undefined) return;
  out.push({
    path: ["sync", "kick"],
    message: "sync.kick and sync.kickOn are both set; give only sync.kickOn (sync.kick: true is kickOn: always, sync.kick: false is kickOn: never)",
  });
}

/**
 * `users.renamedLocalparts`: with `users.lowercase` on (the default) a key with capitals never
 * matches (built ids are lower-cased first) and a value outside the grammar of new ids is
 * refused for every user it names; a user renamed here is not renamed in `renamedUsers` too.
 */
function checkRenamedLocalparts(raw: unknown, out: RuleViolation[]): void {
  const users = field(raw, "users");
  const renamed = field(users, "renamedLocalparts");
  if (!isRecord(renamed)) return;
  const lowercase = field(users, "lowercase") !== false;
  const domain = field(users, "domain");
  const full = field(users, "renamedUsers");
  const fullKeys = isRecord(full) ? Object.keys(full) : [];
  for (const [key, value] of Object.entries(renamed)) {
    const path = ["users", "renamedLocalparts", key];
    if (localpartProblem(key) !== undefined) continue; // reported by the schema
    if (lowercase && key !== key.toLowerCase()) {
      out.push({ path, message: `key "${key}" never matches: users.lowercase is on, so built ids are lower case; write "${key.toLowerCase()}"` });
    }
    if (lowercase && typeof value === "string" && localpartProblem(value) === undefined && !/^[a-z0-9._=/+-]+$/.test(value)) {
      out.push({ path, message: `"${value}" is not a localpart of a new Matrix id (only a-z, 0-9 and ._=/+-), which users.lowercase requires; write it lower case, or set users.lowercase: false for historical ids` });
    }
    const twice = fullKeys.find((k) => {
      const id = parseUserId(k);
      if (id === undefined) return false;
      const colon = k.indexOf(":");
      const same = (a: string, b: string) => (lowercase ? a.toLowerCase() === b.toLowerCase() : a === b);
      return same(k.slice(1, colon), key) && (typeof domain !== "string" || same(k.slice(colon + 1), domain));
    });
    if (twice !== undefined) {
      out.push({ path, message: `"${key}" is also renamed in users.renamedUsers ("${twice}"): rename each user in one of the two` });
    }
  }
}

/**
 * `rooms.overrides` keys are room references; every space is listed once, has a known role,
 * is not a child of itself (directly or through other spaces), and is not also in
 * `mapping.rooms`. A restricted join rule may name a space not in `spaces` (one made by hand).
 */
function checkRoomsAndSpaces(
  raw: unknown,
  out: RuleViolation[],
  checkRole: (path: (string | number)[], given: unknown, fallback: string) => void,
): void {
  const overrides = field(raw, "rooms", "overrides");
  if (isRecord(overrides)) {
    for (const key of Object.keys(overrides)) {
      const problem = roomRefProblem(key);
      if (problem !== undefined) out.push({ path: ["rooms", "overrides", key], message: problem });
    }
  }

  const spaces = field(raw, "spaces");
  if (!Array.isArray(spaces)) return;
  const mapped = new Map<string, number>();
  const mappedRooms = field(raw, "mapping", "rooms");
  if (Array.isArray(mappedRooms)) {
    mappedRooms.forEach((entry: unknown, i) => {
      const room = field(entry, "room");
      if (typeof room === "string" && !mapped.has(room)) mapped.set(room, i);
    });
  }

  /** Each space → the index of its first entry. */
  const index = new Map<string, number>();
  /** An entry's children.rooms, whatever is written there. */
  const childRefs = (entry: unknown): unknown[] => {
    const rooms = field(entry, "children", "rooms");
    return Array.isArray(rooms) ? rooms : [];
  };
  spaces.forEach((entry: unknown, i) => {
    if (!isRecord(entry)) return;
    checkRole(["spaces", i, "role"], entry["role"], "member");
    const space = entry["space"];
    if (typeof space !== "string") return;
    const first = index.get(space);
    if (first === undefined) index.set(space, i);
    else
      out.push({
        path: ["spaces", i, "space"],
        message: `"${space}" is already listed at /spaces/${first}; list each space once`,
      });
    const mappedAt = mapped.get(space);
    if (mappedAt !== undefined)
      out.push({
        path: ["spaces", i, "space"],
        message: `"${space}" is also in mapping.rooms (/mapping/rooms/${mappedAt}): a space's members come from its children (with the space's role), not from groups; remove it from mapping.rooms or from spaces`,
      });
    childRefs(entry).forEach((child, j) => {
      if (child === space) out.push({ path: ["spaces", i, "children", "rooms", j], message: `a space cannot be its own child ("${space}")` });
    });
  });

  // Cycles through children.rooms (a self-reference is reported above): depth first, in
  // file order, without recursion (a long chain of spaces must not exhaust the stack); each
  // edge back to a space on the current path closes one cycle.
  const state = new Map<string, "open" | "done">();
  for (const root of index.keys()) {
    if (state.has(root)) continue;
    const trail: { space: string; i: number; children: unknown[]; next: number }[] = [];
    const enter = (space: string) => {
      const i = index.get(space) ?? -1;
      state.set(space, "open");
      trail.push({ space, i, children: childRefs(spaces[i]), next: 0 });
    };
    enter(root);
    for (let top = trail.at(-1); top !== undefined; top = trail.at(-1)) {
      if (top.next >= top.children.length) {
        state.set(top.space, "done");
        trail.pop();
        continue;
      }
      const j = top.next++;
      const child = top.children[j];
      if (typeof child !== "string" || child === top.space || !index.has(child)) continue;
      const seen = state.get(child);
      if (seen === undefined) enter(child);
      else if (seen === "open") {
        const from = trail.findIndex((t) => t.space === child);
        const names = [...trail.slice(from).map((t) => t.space), child];
        // A cycle through thousands of spaces is named by its ends.
        const shown = names.length <= 12 ? names : [...names.slice(0, 6), `… ${names.length - 11} more …`, ...names.slice(-5)];
        const cycle = shown.join(" → ");
        out.push({ path: ["spaces", top.i, "children", "rooms", j], message: `spaces form a cycle: ${cycle}; a space cannot contain itself` });
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Output types.
// ---------------------------------------------------------------------------------------

type DeepReadonly<T> = T extends readonly (infer E)[]
  ? readonly DeepReadonly<E>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;

/** The file as validated, defaults applied, secrets not yet resolved. */
export type ConfigFile = z.output<typeof configFileSchema>;

type FileHomeserver = ConfigFile["homeserver"];
type FileDatabase = NonNullable<ConfigFile["database"]>;

type FileIdp = ConfigFile["idp"];
type FileLdap = Extract<FileIdp, { kind: "ldap" }>;
type FileAzure = Extract<FileIdp, { kind: "azure" }>;
type ResolvedIdp =
  | Exclude<FileIdp, FileLdap | FileAzure>
  | (Omit<FileLdap, "ldap"> & { ldap: Omit<FileLdap["ldap"], "bindPasswordFile"> })
  | (Omit<FileAzure, "azure"> & { azure: Omit<FileAzure["azure"], "clientSecretFile"> });

type FileTokens = NonNullable<ConfigFile["tokens"]>;
type ResolvedTokens = Omit<FileTokens, "synapse" | "mas"> & {
  synapse?: { accessToken?: string };
  mas?: Omit<NonNullable<FileTokens["mas"]>, "clientSecret" | "clientSecretFile"> & { clientSecret: string };
};

/** `sync.kick` is folded into `sync.kickOn`, which is always set. */
type ResolvedSync = Omit<ConfigFile["sync"], "kick" | "kickOn"> & { kickOn: KickOn };

/** How the bot signs in: a given access token, or password login. */
type HomeserverAuth = { accessToken: string; user?: undefined; password?: undefined } | { accessToken?: undefined; user: string; password: string };

type FileServe = NonNullable<ConfigFile["serve"]>;
type ResolvedServe = Omit<FileServe, "encryption"> & {
  encryption?: Omit<NonNullable<FileServe["encryption"]>, "storeKey" | "storeKeyFile"> & { storeKey: string };
};

type ConfigShape = Omit<ConfigFile, "homeserver" | "database" | "idp" | "tokens" | "sync" | "serve"> & {
  serve?: ResolvedServe;
  sync: ResolvedSync;
  tokens?: ResolvedTokens;
  homeserver: Omit<FileHomeserver, "accessToken" | "accessTokenFile" | "user" | "password" | "passwordFile"> & HomeserverAuth;
  database?: Omit<FileDatabase, "url" | "urlFile"> & { url: string };
  idp: ResolvedIdp;
};

/**
 * The loaded configuration: defaults applied, secrets read (`homeserver.accessToken`,
 * `database.url` are always strings, the `...File` keys are gone), and `dataDir` and
 * `idp.static.file` absolute paths.
 */
export type Config = DeepReadonly<ConfigShape>;
export type HomeserverConfig = Config["homeserver"];
export type DatabaseConfig = NonNullable<Config["database"]>;
export type IdpConfig = Config["idp"];
export type StaticIdpConfig = Extract<IdpConfig, { kind: "static" }>;
export type LdapIdpConfig = Extract<IdpConfig, { kind: "ldap" }>;
export type AzureIdpConfig = Extract<IdpConfig, { kind: "azure" }>;
export type UsersConfig = Config["users"];
export type MappingConfig = Config["mapping"];
export type RoomMappingConfig = MappingConfig["rooms"][number];
export type ConventionConfig = MappingConfig["convention"];
export type SyncConfig = Config["sync"];
export type LogConfig = Config["log"];
export type ServeConfig = NonNullable<Config["serve"]>;
export type TokensConfig = NonNullable<Config["tokens"]>;
export type RetentionConfig = Config["retention"];
export type RoomsConfig = Config["rooms"];
/** A room's template as written: `rooms.defaults` or one entry of `rooms.overrides` (which may also set `name`). */
export type RoomTemplateConfig = RoomsConfig["defaults"] | RoomsConfig["overrides"][string];
export type SpaceConfig = Config["spaces"][number];
