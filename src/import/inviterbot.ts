/**
 * `import inviterbot`: the SAPUCC inviterbot maubot plugin's `base-config.yaml` (the seed).
 * The plugin runs inside maubot, which holds the homeserver and the bot's token: those are
 * placeholders here.
 */
import { Builder, placeholderToken, type Conversion, type ImportError, type SourceDoc, type Spec } from "./report.ts";

const PERMISSION_KEYS = ["users_default", "events_default", "state_default", "invite", "kick", "ban", "redact"] as const;

export const INVITERBOT_SPEC: Readonly<Record<string, Spec>> = {
  idp_type: "string",
  mxid_homeserver: "string",
  azure_ad: {
    obj: {
      azure_root_group_id: "string",
      azure_cloud_instance: "string",
      azure_tenant_id: "string",
      azure_client_id: "string",
      azure_client_secret: "string",
    },
  },
  ldap: {
    obj: {
      host: "string",
      port: "int",
      bind_dn: "string",
      bind_password: "string",
      base_dn_users: "string",
      base_dn_groups: "string",
      user_filter: "string",
      username_attribute: "string",
    },
  },
  administration_room: "string",
  permissions: { obj: { ...Object.fromEntries(PERMISSION_KEYS.map((k) => [k, "int"])), events: { map: "int" } } },
  history_visibility: "string",
  encryption_on_room_creation: "bool",
  cautious: "bool",
  renamed_users: { map: "string" },
};

/** Our LDAP user filter for the seed's 389-DS/FreeIPA-style directories, before its user_filter is added. */
const USER_OBJECTS = "(|(objectClass=inetOrgPerson)(objectClass=posixAccount))";

export function convertInviterbot(src: SourceDoc): { ok: true; value: Conversion } | { ok: false; errors: ImportError[] } {
  const errors = src.check(INVITERBOT_SPEC);
  if (errors.length > 0) return { ok: false, errors };
  const b = new Builder();
  const r = b.report;

  placeholderToken(b, "inviterbot runs inside maubot, which holds the bot's login: our config needs the bot's access token.");
  b.set(["homeserver", "url"], "https://replace-me.invalid");
  b.comment(["homeserver", "url"], " PLACEHOLDER: the client-server API URL of your homeserver (maubot knew it, the plugin config does not)");
  r.placeholders.push({ from: "(none)", to: "homeserver.url", note: "https://replace-me.invalid: the homeserver's client-server API URL (maubot's, not in the plugin config)." });

  const hs = src.str("mxid_homeserver");
  if (hs !== undefined) {
    b.set(["users", "domain"], hs, ["mxid_homeserver"]);
    r.mapped.push({ from: "mxid_homeserver", to: "users.domain" });
  }

  const idpType = src.str("idp_type");
  if (idpType === "azure_ad") azure(src, b, errors);
  else if (idpType === "ldap") ldap(src, b, errors);
  else if (idpType === undefined) errors.push(src.error(["idp_type"], "is missing: give ldap or azure_ad"));
  else errors.push(src.error(["idp_type"], `must be ldap or azure_ad (got "${idpType}")`));
  if (idpType === "azure_ad") r.mapped.push({ from: "idp_type", to: "idp.kind", note: "azure_ad → azure" });
  else if (idpType === "ldap") r.mapped.push({ from: "idp_type", to: "idp.kind" });

  b.set(["mapping", "convention", "enabled"], true);
  r.changed.push({
    from: "(built in) rooms named by groups",
    to: "mapping.convention.enabled: true",
    note:
      idpType === "azure_ad"
        ? 'groups named "MTRX #alias:server" map to that room, "<name>_owners" siblings and Graph owners give moderator. Ours also finds such groups anywhere in the tenant, not only under the root group.'
        : 'groups named xxx<localpart>xxx<server> map to #<localpart>:<server>; a "_owners" sibling gives moderator. The seed took "_owners" anywhere in the name; ours only at its end.',
  });

  const room = src.str("administration_room");
  if (room !== undefined) {
    b.set(["serve", "managementRoom"], room, ["administration_room"]);
    r.mapped.push({ from: "administration_room", to: "serve.managementRoom", note: "commands are taken there only (our prefix is !, e.g. !sync, !idp)" });
  } else if (src.get("administration_room") !== undefined) {
    r.ignored.push({ from: "administration_room", note: "empty: no serve section written; add serve.managementRoom to run `serve`" });
  }

  const perms = src.get("permissions");
  if (perms !== undefined) {
    b.set(["rooms", "defaults", "permissions"], perms, ["permissions"]);
    r.mapped.push({ from: "permissions", to: "rooms.defaults.permissions", note: "same key names; only the keys given are managed" });
  }
  const hv = src.str("history_visibility");
  if (hv !== undefined) {
    b.set(["rooms", "defaults", "historyVisibility"], hv, ["history_visibility"]);
    r.mapped.push({ from: "history_visibility", to: "rooms.defaults.historyVisibility" });
  }
  const enc = src.get("encryption_on_room_creation");
  if (typeof enc === "boolean") {
    b.set(["rooms", "defaults", "encryption"], enc, ["encryption_on_room_creation"]);
    r.mapped.push({ from: "encryption_on_room_creation", to: "rooms.defaults.encryption", note: "set when a room is created, never later" });
  }
  const cautious = src.get("cautious");
  if (typeof cautious === "boolean") {
    const kickOn = cautious ? "manual" : "always";
    b.set(["sync", "kickOn"], kickOn, ["cautious"]);
    r.mapped.push({
      from: `cautious: ${cautious}`,
      to: `sync.kickOn: ${kickOn}`,
      note: cautious
        ? "scheduled runs (and the run at start) never kick; a manual !sync (or matrix-group-sync sync) does, as in the seed."
        : "kicks on every run, scheduled or manual, as the seed did without cautious.",
    });
  }

  const renamed = src.get("renamed_users");
  if (renamed !== undefined && Object.keys(renamed as object).length > 0) {
    if (hs === undefined) errors.push(src.error(["renamed_users"], "needs mxid_homeserver, the server of the renamed users"));
    else {
      const out: Record<string, string> = {};
      for (const [newName, oldName] of Object.entries(renamed as Record<string, string>)) out[newName.toLowerCase()] = oldName;
      b.set(["users", "renamedLocalparts"], out, ["renamed_users"]);
      const lowered = Object.keys(renamed as object).filter((k) => k !== k.toLowerCase());
      r.mapped.push({
        from: "renamed_users",
        to: "users.renamedLocalparts",
        note: `same form and direction: "<new username>: <old username>", i.e. the localpart the directory gives → the localpart of the account, both on users.domain (${hs}).${lowered.length > 0 ? ` Keys lower-cased, as our ids are built: ${lowered.join(", ")}.` : ""}`,
      });
    }
  }

  r.changed.push({ from: "(built in) sync every 30 minutes", to: "serve.schedule (default */30 * * * *)", note: "ours is a cron schedule at fixed times (UTC by default), not 30 minutes after start." });
  r.mapped.push({ from: "(built in) power levels: standard 0, moderator 50, admin 100", to: "roles (default member 0, moderator 50, admin 100)" });
  r.changed.push({
    from: "(optional) a space for the rooms",
    to: "spaces",
    note:
      idpType === "azure_ad" && src.str("azure_ad", "azure_root_group_id") !== undefined
        ? `not added: if you want the rooms in a space, add spaces: [{ space: "#company:<server>", children: { underGroups: ["${src.str("azure_ad", "azure_root_group_id") ?? ""}"] } }].`
        : "not added: the seed had no spaces; see README, Room template, created rooms and spaces.",
  });

  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: b.done() };
}

function azure(src: SourceDoc, b: Builder, errors: ImportError[]): void {
  const r = b.report;
  b.set(["idp", "kind"], "azure", ["idp_type"]);
  const need = (key: string, ours: string): void => {
    const v = src.str("azure_ad", key);
    if (v === undefined) errors.push(src.error(["azure_ad", key], "is missing or empty; Azure AD needs it"));
    else {
      b.set(["idp", "azure", ours], v, ["azure_ad", key]);
      r.mapped.push({ from: `azure_ad.${key}`, to: `idp.azure.${ours}` });
    }
  };
  need("azure_tenant_id", "tenantId");
  need("azure_client_id", "clientId");
  const secret = src.str("azure_ad", "azure_client_secret");
  if (secret === undefined) errors.push(src.error(["azure_ad", "azure_client_secret"], "is missing or empty; give the app registration's client secret"));
  else {
    b.secret({ name: "azure-client-secret", value: secret, parent: ["idp", "azure"], key: "clientSecret", fileKey: "clientSecretFile", from: "azure_ad.azure_client_secret" });
    r.mapped.push({ from: "azure_ad.azure_client_secret", to: "idp.azure.clientSecretFile", note: "written to its own file (mode 0600), not inline" });
  }
  const cloud = src.str("azure_ad", "azure_cloud_instance");
  if (cloud !== undefined) {
    const host = cloud.replace(/\/+$/, "");
    if (host !== "https://login.microsoftonline.com") {
      b.set(["idp", "azure", "authorityHost"], host, ["azure_ad", "azure_cloud_instance"]);
      r.changed.push({ from: "azure_ad.azure_cloud_instance", to: "idp.azure.authorityHost", note: "a national cloud: also set idp.azure.graphBaseUrl to its Graph endpoint (the seed always used graph.microsoft.com)." });
    } else r.mapped.push({ from: "azure_ad.azure_cloud_instance", to: "idp.azure.authorityHost", note: "the public cloud: our default, not written" });
  }
  const root = src.str("azure_ad", "azure_root_group_id");
  if (root !== undefined) {
    b.set(["idp", "azure", "rootGroupId"], root, ["azure_ad", "azure_root_group_id"]);
    r.mapped.push({ from: "azure_ad.azure_root_group_id", to: "idp.azure.rootGroupId", note: "its direct member groups are discovered (with the naming convention)" });
  }
  if (src.get("ldap") !== undefined) r.ignored.push({ from: "ldap.*", note: "idp_type is azure_ad: the ldap section was not used" });
}

function ldap(src: SourceDoc, b: Builder, errors: ImportError[]): void {
  const r = b.report;
  b.set(["idp", "kind"], "ldap", ["idp_type"]);
  const host = src.str("ldap", "host");
  if (host === undefined) errors.push(src.error(["ldap", "host"], "is missing or empty; LDAP needs the server"));
  else {
    const port = src.get("ldap", "port");
    const m = /^(ldaps?):\/\/(.+?)\/*$/i.exec(host);
    const scheme = (m?.[1] ?? "ldap").toLowerCase();
    const hostPart = m?.[2] ?? host;
    const hasPort = /:\d+$/.test(hostPart);
    const url = `${scheme}://${hostPart}${hasPort ? "" : `:${typeof port === "number" ? port : scheme === "ldaps" ? 636 : 389}`}`;
    b.set(["idp", "ldap", "url"], url, ["ldap", "host"]);
    r.mapped.push({ from: "ldap.host, ldap.port", to: "idp.ldap.url", note: "plain ldap:// as the seed connected; consider ldaps:// or startTls: true" });
  }
  const bindDn = src.str("ldap", "bind_dn");
  const password = src.str("ldap", "bind_password");
  if (bindDn !== undefined) {
    b.set(["idp", "ldap", "bindDn"], bindDn, ["ldap", "bind_dn"]);
    r.mapped.push({ from: "ldap.bind_dn", to: "idp.ldap.bindDn" });
    if (password === undefined)
      errors.push(src.error(["ldap", "bind_password"], "is empty while bind_dn is set: we refuse a bind DN without a password (many servers accept it without checking); give the password, or remove bind_dn to bind anonymously"));
  }
  if (password !== undefined) {
    if (bindDn === undefined) errors.push(src.error(["ldap", "bind_dn"], "is needed when bind_password is given"));
    b.secret({ name: "ldap-bind-password", value: password, parent: ["idp", "ldap"], key: "bindPassword", fileKey: "bindPasswordFile", from: "ldap.bind_password" });
    r.mapped.push({ from: "ldap.bind_password", to: "idp.ldap.bindPasswordFile", note: "written to its own file (mode 0600), not inline" });
  }
  for (const [key, ours] of [
    ["base_dn_users", "users"],
    ["base_dn_groups", "groups"],
  ] as const) {
    const v = src.str("ldap", key);
    if (v === undefined) errors.push(src.error(["ldap", key], "is missing or empty; LDAP needs it"));
    else {
      b.set(["idp", "ldap", ours, "base"], v, ["ldap", key]);
      r.mapped.push({ from: `ldap.${key}`, to: `idp.ldap.${ours}.base` });
    }
  }
  b.set(["idp", "ldap", "flavour"], "389ds");
  b.set(["idp", "ldap", "groups", "filter"], "(objectClass=group)");
  r.changed.push({
    from: "(built in) group search (&(objectClass=group)(cn=xxx*)), members by memberOf, nsAccountLock",
    to: "idp.ldap.groups.filter: (objectClass=group), flavour: 389ds",
    note: "ours reads members from the groups' member/uniqueMember/memberUid attributes (nested groups followed), not the users' memberOf; 389ds treats (nsAccountLock=TRUE) as disabled, as the seed did. On OpenLDAP remove groups.filter (groupOfNames…) and set flavour.",
  });
  const filter = src.str("ldap", "user_filter");
  if (filter !== undefined) {
    const inner = filter.startsWith("(") ? filter : `(${filter})`;
    b.set(["idp", "ldap", "users", "filter"], `(&${USER_OBJECTS}${inner})`, ["ldap", "user_filter"]);
    r.changed.push({
      from: "ldap.user_filter",
      to: "idp.ldap.users.filter",
      note: `our users.filter selects the user entries and replaces the flavour's object classes, so it is written as (&${USER_OBJECTS}<user_filter>).`,
    });
  }
  const attr = src.str("ldap", "username_attribute");
  if (attr !== undefined) {
    b.set(["users", "attribute"], attr, ["ldap", "username_attribute"]);
    r.mapped.push({ from: "ldap.username_attribute", to: "users.attribute" });
  }
  if (src.get("azure_ad") !== undefined) r.ignored.push({ from: "azure_ad.*", note: "idp_type is ldap: the azure_ad section was not used" });
}
