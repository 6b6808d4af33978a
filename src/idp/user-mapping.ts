/**
 * Directory user → Matrix user id. Pure; never throws on bad input: a user that cannot be
 * mapped yields `{ ok: false, reason }` naming the user and, when there is one, the bad id.
 *
 * The template is the whole user id, `@<localpart template>:<server template>`, e.g.
 * `@{uid}:{domain}` or `@{attr:sAMAccountName}:{domain}`. Placeholders:
 *   - `{uid}`         the value of the configured `attribute`
 *   - `{attr:<name>}` the value of any attribute
 *   - `{domain}`      the configured domain
 * The first ':' in the template's literal text separates localpart and server; attribute
 * values can never move it, because a built localpart containing ':' is refused.
 *
 * Then, in this order:
 *   1. `lowercase`: the built localpart and server are lower-cased;
 *   2. `renamedUsers` (old → new): looked up by the full id first, then by the localpart.
 *      A value starting with '@' is a full id, anything else a new localpart on the same server;
 *   3. the result must pass `parseUserId`, and with `lowercase` on its localpart must also be in
 *      the grammar for new ids, `[a-z0-9._=/+-]` (with it off, historical ids are accepted).
 */
import { localpartOf, parseUserId, type UserId } from "../matrix/ids.ts";
import { describeError } from "../result.ts";
import type { DirectoryUser } from "./types.ts";

export interface UserMappingOptions {
  /** Attribute that `{uid}` stands for: uid, sAMAccountName, mail, userPrincipalName... */
  readonly attribute: string;
  /** The whole user id, e.g. `@{uid}:{domain}`. */
  readonly template: string;
  readonly domain: string;
  readonly lowercase: boolean;
  /** Old id → new id: full ids (`@old:example.org`) or localparts (`old`). */
  readonly renamedUsers: Readonly<Record<string, string>>;
}

export type UserMapping =
  | { readonly ok: true; readonly userId: UserId }
  | { readonly ok: false; readonly reason: string };

export type UserMapper = (user: DirectoryUser) => UserMapping;

type Token =
  | { readonly kind: "text"; readonly text: string }
  | { readonly kind: "uid" }
  | { readonly kind: "domain" }
  | { readonly kind: "attr"; readonly name: string };

interface Template {
  readonly local: readonly Token[];
  readonly server: readonly Token[];
}

const NEW_LOCALPART = /^[a-z0-9._=/+-]+$/;
const PLACEHOLDER = /\{([^{}]*)\}/g;

/** Checks a user id template; returns what is wrong with it, or undefined when it is fine. */
export function checkUserIdTemplate(template: string): string | undefined {
  const parsed = parseTemplate(template);
  return typeof parsed === "string" ? parsed : undefined;
}

export function createUserMapper(opts: UserMappingOptions): UserMapper {
  const template = parseTemplate(opts.template);
  return (user) => {
    try {
      if (typeof template === "string") return { ok: false, reason: `user ${show(user.id)}: ${template}` };
      return mapOne(user, template, opts);
    } catch (err) {
      // Only reachable with inputs outside the declared types (e.g. a provider bug).
      return { ok: false, reason: `user ${show(user?.id)}: cannot build a Matrix id: ${describeError(err)}` };
    }
  };
}

function mapOne(user: DirectoryUser, template: Template, opts: UserMappingOptions): UserMapping {
  const local = render(template.local, user, opts);
  if (!local.ok) return local;
  const server = render(template.server, user, opts);
  if (!server.ok) return server;
  let localpart = opts.lowercase ? local.text.toLowerCase() : local.text;
  const serverName = opts.lowercase ? server.text.toLowerCase() : server.text;
  if (localpart.includes(":")) {
    return { ok: false, reason: `user ${show(user.id)}: localpart ${show(localpart)} contains ':'` };
  }

  let candidate = `@${localpart}:${serverName}`;
  const renamed = lookup(opts.renamedUsers, candidate) ?? lookup(opts.renamedUsers, localpart);
  if (renamed !== undefined) {
    if (renamed.startsWith("@")) {
      candidate = renamed;
    } else {
      if (renamed.includes(":")) {
        return { ok: false, reason: `user ${show(user.id)}: renamed localpart ${show(renamed)} contains ':'` };
      }
      candidate = `@${renamed}:${serverName}`;
    }
  }

  const userId = parseUserId(candidate);
  if (userId === undefined) {
    return { ok: false, reason: `user ${show(user.id)}: ${show(candidate)} is not a valid Matrix user id` };
  }
  localpart = localpartOf(userId);
  if (opts.lowercase && !NEW_LOCALPART.test(localpart)) {
    return {
      ok: false,
      reason: `user ${show(user.id)}: ${show(candidate)} is not a valid Matrix user id (a localpart may only hold a-z, 0-9 and ._=/+-)`,
    };
  }
  return { ok: true, userId };
}

type Rendered = { readonly ok: true; readonly text: string } | { readonly ok: false; readonly reason: string };

function render(tokens: readonly Token[], user: DirectoryUser, opts: UserMappingOptions): Rendered {
  let text = "";
  for (const token of tokens) {
    switch (token.kind) {
      case "text":
        text += token.text;
        break;
      case "domain":
        text += opts.domain;
        break;
      case "uid":
      case "attr": {
        const name = token.kind === "uid" ? opts.attribute : token.name;
        const value = attribute(user, name);
        if (value === undefined) return { ok: false, reason: `user ${show(user.id)} has no attribute ${name}` };
        if (value === "") return { ok: false, reason: `user ${show(user.id)} has an empty attribute ${name}` };
        text += value;
        break;
      }
    }
  }
  return { ok: true, text };
}

function attribute(user: DirectoryUser, name: string): string | undefined {
  const attrs: unknown = user.attributes;
  if (typeof attrs !== "object" || attrs === null || !Object.hasOwn(attrs, name)) return undefined;
  const value: unknown = (attrs as Record<string, unknown>)[name];
  return typeof value === "string" ? value : undefined;
}

function lookup(table: Readonly<Record<string, string>>, key: string): string | undefined {
  if (!Object.hasOwn(table, key)) return undefined;
  const value: unknown = table[key];
  return typeof value === "string" ? value : undefined;
}

function parseTemplate(template: string): Template | string {
  if (!template.startsWith("@")) return `user id template ${show(template)} must start with '@'`;
  const tokens: Token[] = [];
  let last = 1;
  for (const match of template.matchAll(PLACEHOLDER)) {
    const index = match.index;
    if (index > last) tokens.push({ kind: "text", text: template.slice(last, index) });
    const inner = match[1] ?? "";
    if (inner === "uid") tokens.push({ kind: "uid" });
    else if (inner === "domain") tokens.push({ kind: "domain" });
    else if (inner.startsWith("attr:") && inner.length > "attr:".length) {
      tokens.push({ kind: "attr", name: inner.slice("attr:".length) });
    } else return `user id template ${show(template)} has an unknown placeholder {${inner}}`;
    last = index + match[0].length;
  }
  if (last < template.length) tokens.push({ kind: "text", text: template.slice(last) });

  for (const token of tokens) {
    if (token.kind === "text" && /[{}]/.test(token.text)) {
      return `user id template ${show(template)} has an unbalanced '{' or '}'`;
    }
  }
  // Split at the first ':' of the literal text.
  const split = tokens.findIndex((t) => t.kind === "text" && t.text.includes(":"));
  const at = tokens[split];
  if (at === undefined || at.kind !== "text") {
    return `user id template ${show(template)} has no ':' between localpart and server`;
  }
  const colon = at.text.indexOf(":");
  const before = at.text.slice(0, colon);
  const after = at.text.slice(colon + 1);
  const local = [...tokens.slice(0, split), ...(before ? [{ kind: "text", text: before } as const] : [])];
  const server = [...(after ? [{ kind: "text", text: after } as const] : []), ...tokens.slice(split + 1)];
  if (local.length === 0) return `user id template ${show(template)} has an empty localpart`;
  if (server.length === 0) return `user id template ${show(template)} has an empty server part`;
  return { local, server };
}

/** Quotes a value for a message so that hostile characters (newlines, quotes) stay visible. */
function show(value: unknown): string {
  return JSON.stringify(typeof value === "string" ? value : String(value));
}
