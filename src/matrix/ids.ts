/**
 * Branded Matrix identifiers. Every id that enters the program from outside (directory,
 * config, events, command text) is decoded here once; code past the boundary only sees
 * the branded types.
 */
export type UserId = string & { readonly __brand: "UserId" };
export type RoomId = string & { readonly __brand: "RoomId" };
export type RoomAlias = string & { readonly __brand: "RoomAlias" };

// Server name: hostname (DNS name, IPv4 or [IPv6]) with an optional port.
const SERVER_NAME = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(?::[0-9]{1,5})?$/;
// Historical user id grammar (spec appendix "User Identifiers"): the localpart may hold any
// printable ASCII but ':'; new ids use [a-z0-9._=/+-]. We accept the historical range.
const USER_LOCALPART = /^[\x21-\x39\x3B-\x7E]+$/;
const ALIAS_LOCALPART = /^[^:\s]+$/;

export function parseUserId(raw: string): UserId | undefined {
  if (raw.length > 255 || !raw.startsWith("@")) return undefined;
  const colon = raw.indexOf(":");
  if (colon < 2) return undefined;
  const local = raw.slice(1, colon);
  const server = raw.slice(colon + 1);
  if (!USER_LOCALPART.test(local) || !SERVER_NAME.test(server)) return undefined;
  return raw as UserId;
}

export function parseRoomId(raw: string): RoomId | undefined {
  // Room versions before 12 have "!opaque:server"; version 12 room ids have no server part.
  if (raw.length > 255 || !raw.startsWith("!") || raw.length < 2) return undefined;
  if (/\s/.test(raw)) return undefined;
  return raw as RoomId;
}

export function parseRoomAlias(raw: string): RoomAlias | undefined {
  if (raw.length > 255 || !raw.startsWith("#")) return undefined;
  const colon = raw.indexOf(":");
  if (colon < 2) return undefined;
  if (!ALIAS_LOCALPART.test(raw.slice(1, colon)) || !SERVER_NAME.test(raw.slice(colon + 1))) return undefined;
  return raw as RoomAlias;
}

/** The server part of a user id (`@a:example.org` → `example.org`). */
export function serverNameOf(userId: UserId): string {
  return userId.slice(userId.indexOf(":") + 1);
}

export function localpartOf(userId: UserId): string {
  return userId.slice(1, userId.indexOf(":"));
}

/**
 * A pattern over whole user ids, as `sync.ignoreUsers` and the allow lists use them:
 * anchored at both ends, no flags. Throws on an invalid source (config validation uses that).
 */
export function userIdPattern(source: string): RegExp {
  return new RegExp(`^(?:${source})$`);
}

/** The same, or undefined for an invalid source (entries stored in the database). */
export function tryUserIdPattern(source: string): RegExp | undefined {
  try {
    return userIdPattern(source);
  } catch {
    return undefined;
  }
}
