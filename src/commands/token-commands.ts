/**
 * `token …`: registration tokens, with the same words in the management room (`!token list`)
 * and on the CLI (`matrix-group-sync token list`). Input is checked before any request; every
 * action is audited; a created token's full string appears only in the reply.
 */
import { parseRoomId, parseUserId, tryUserIdPattern } from "../matrix/ids.ts";
import type { TokenService } from "../tokens/service.ts";
import { legacyMaskRef, maskRef, TOKEN_SCOPE } from "../tokens/service.ts";
import { checkTokenRef, checkTokenString, describeExpiry, describeStatus, describeUses, tokenStatus, type RegistrationToken, type TokenFilter, type TokenListWhich } from "../tokens/types.ts";
import { decodeDuration } from "./parse.ts";
import type { Duration } from "./spec.ts";
import type { Result } from "../result.ts";
import { command, done, failure, refused, usageError, type Command, type Context, type Outcome } from "./command.ts";
import { code, list, paragraph, table } from "./render.ts";

type Ctx = Context<"tokens">;

const SURFACES = ["room", "cli"] as const;
const USES = ["tokens"] as const;

const NOT_CONFIGURED: Outcome = refused("Registration tokens are not configured here: add a tokens section to the config.");

/** The service, when configured and the asker may use it; otherwise the answer to give. */
async function gate(ctx: Ctx): Promise<{ ok: true; tokens: TokenService } | { ok: false; reply: Outcome }> {
  const tokens = ctx.tokens.service;
  if (tokens === undefined) return { ok: false, reply: NOT_CONFIGURED };
  if (!(await tokens.mayUse(ctx.actor, ctx.place, ctx.tokens.managementRoomId, ctx.isOperator))) {
    return { ok: false, reply: refused(`Sorry ${ctx.actor}, token commands are not allowed for you here.`) };
  }
  return { ok: true, tokens };
}

/**
 * Changes to who may use token commands, and deleting every token, are for operators: on the
 * CLI (the shell user) or in the management room by someone on the command allow list. In a
 * token room anyone present may use tokens, but must not widen that to others.
 */
async function operatorGate(ctx: Ctx, what: string): Promise<{ ok: true; tokens: TokenService } | { ok: false; reply: Outcome }> {
  const tokens = ctx.tokens.service;
  if (tokens === undefined) return { ok: false, reply: NOT_CONFIGURED };
  if (ctx.place === "cli" || (ctx.place === ctx.tokens.managementRoomId && ctx.isOperator)) return { ok: true, tokens };
  await tokens.audit(ctx.actor, ctx.place, what, null, "refused: not an operator in the management room");
  const doing = what === "delete-all" ? "delete every token" : what === "audit" ? "read the token audit" : "change the token allow list";
  return { ok: false, reply: refused(`Sorry ${ctx.actor}, only operators in the management room may ${doing}.`) };
}

/**
 * The shape every one-token command shares: check the reference before any request, check
 * permission, call the backend, audit, answer with the token as a table.
 */
async function oneToken(
  ctx: Ctx,
  ref: string,
  action: string,
  call: (tokens: TokenService) => Promise<Result<RegistrationToken | undefined>>,
  title?: string,
): Promise<Outcome> {
  const checked = checkTokenRef(ref, ctx.tokens.service?.backend.kind);
  if (!checked.ok) return usageError(`token: ${checked.error}`);
  const g = await gate(ctx);
  if (!g.ok) return g.reply;
  const r = await call(g.tokens);
  await g.tokens.audit(ctx.actor, ctx.place, action, ref, r.ok ? (r.value ? "ok" : "not found") : r.error.message);
  if (!r.ok) return failure(r.error.message);
  if (r.value === undefined) return refused(`There is no registration token ${ref}.`);
  return done([...(title !== undefined ? [paragraph(title)] : []), table(headers(g.tokens), [row(r.value, g.tokens)])], { token: tokenData(r.value, g.tokens) });
}

/** A token as `--json` shows it. */
function tokenData(t: RegistrationToken, tokens: TokenService): Record<string, unknown> {
  const status = tokenStatus(t, tokens.clock.now());
  return {
    token: t.token,
    ...(tokens.backend.kind === "mas" ? { id: t.id } : {}),
    valid: status.state === "valid",
    ...(status.state === "valid" ? {} : { reason: status.reason }),
    usesAllowed: t.usesAllowed,
    expiresAt: t.expiresAt?.toISOString() ?? null,
  };
}

function row(t: RegistrationToken, tokens: TokenService): string[] {
  const now = tokens.clock.now();
  const status = tokenStatus(t, now);
  return [
    t.token,
    ...(tokens.backend.kind === "mas" ? [t.id] : []),
    status.state === "valid" ? "valid" : describeStatus(t, now),
    describeUses(t),
    describeExpiry(t.expiresAt, now),
  ];
}

function headers(tokens: TokenService): string[] {
  return ["token", ...(tokens.backend.kind === "mas" ? ["id"] : []), "status", "uses", "expires"];
}

const USES_FORM = /^(?:\d{1,9}|unlimited|∞)$/i;

function parseUses(raw: string | undefined, fallback: number | null): { ok: true; value: number | null } | { ok: false; error: string } {
  if (raw === undefined) return { ok: true, value: fallback };
  if (/^(unlimited|∞)$/i.test(raw)) return { ok: true, value: null };
  if (!/^\d{1,9}$/.test(raw)) return { ok: false, error: `uses: "${raw}" is not a number of uses (0 or more, or "unlimited")` };
  return { ok: true, value: Number(raw) };
}

/**
 * Uses and expiry, told apart by their form, in either order and each optional: a whole
 * number or "unlimited" is uses; `7d`, `12h`, a date or `never` is an expiry (`update TOKEN
 * 12h` changes the expiry only). Two of one kind, or something of neither form, is an error.
 */
export function usesAndExpiry(values: readonly [uses: string | undefined, expiry: string | undefined]): { ok: true; uses?: string; expiry?: Duration } | { ok: false; error: string } {
  let uses: string | undefined;
  let expiry: Duration | undefined;
  for (const [i, raw] of values.entries()) {
    if (raw === undefined) continue;
    if (USES_FORM.test(raw) || /^[-+]?\d+$/.test(raw)) {
      const u = parseUses(raw, null);
      if (!u.ok) return { ok: false, error: u.error };
      if (uses !== undefined) return { ok: false, error: `uses given twice ("${uses}", "${raw}")` };
      uses = raw;
      continue;
    }
    const d = decodeDuration(raw);
    if (!d.ok) {
      return {
        ok: false,
        error: i === 0 ? `uses: "${raw}" is not a number of uses (0 or more, or "unlimited"), nor an expiry (${d.error})` : `expiry: ${d.error}`,
      };
    }
    if (expiry !== undefined) return { ok: false, error: `an expiry is given twice (… "${raw}")` };
    expiry = d.value;
  }
  return { ok: true, ...(uses !== undefined ? { uses } : {}), ...(expiry !== undefined ? { expiry } : {}) };
}

/** The words `token list` takes for a filter; anything else names one token. */
const LIST_FILTERS: Readonly<Record<string, TokenListWhich | TokenFilter>> = {
  valid: "valid",
  invalid: "invalid",
  all: "all",
  used: { used: true },
  unused: { used: false },
  revoked: { revoked: true },
  expired: { expired: true },
};

const listCommand: Command = command({
  name: "token list",
  summary: "List registration tokens: valid (default), invalid, all, used, unused, revoked, expired; or show one token",
  description:
    "Lists the registration tokens that are valid (the default), invalid, all of them, used (at least one registration), unused, revoked (MAS) or expired. Given anything else, shows that one token (as mas-token-bot's `token list TOKEN` does). MAS filters on its side; Synapse's list knows only valid/invalid, so the rest is filtered here.",
  params: [{ name: "which", kind: "string", description: "valid, invalid, all, used, unused, revoked or expired, or a token string or MAS id", optional: true }],
  permission: "token-users",
  surfaces: SURFACES,
  uses: USES,
  async run(ctx, args) {
    const given = args.which ?? "valid";
    const which = given.toLowerCase();
    const filter = Object.hasOwn(LIST_FILTERS, which) ? LIST_FILTERS[which] : undefined;
    if (filter === undefined) return showToken(ctx, given);
    const g = await gate(ctx);
    if (!g.ok) return g.reply;
    const r = await g.tokens.backend.list(filter);
    await g.tokens.audit(ctx.actor, ctx.place, "list", null, r.ok ? "ok" : r.error.message, { which });
    if (!r.ok) return failure(r.error.message);
    const data = { tokens: r.value.map((t) => tokenData(t, g.tokens)) };
    if (r.value.length === 0) return done(paragraph(`No ${which === "all" ? "" : `${which} `}registration tokens.`), data);
    return done([paragraph(`${r.value.length} ${which === "all" ? "" : `${which} `}registration token(s):`), table(headers(g.tokens), r.value.map((t) => row(t, g.tokens)))], data);
  },
});

function showToken(ctx: Ctx, ref: string): Promise<Outcome> {
  return oneToken(ctx, ref, "show", (t) => t.backend.get(ref));
}

const showCommand: Command = command({
  name: "token show",
  summary: "Show one token (by its string, or a MAS id)",
  params: [{ name: "token", kind: "string", description: "the token string or MAS id" }],
  permission: "token-users",
  surfaces: SURFACES,
  uses: USES,
  run: (ctx, args) => showToken(ctx, args.token),
});

const createCommand: Command = command({
  name: "token create",
  // mas-token-bot's word for it.
  aliases: ["token generate"],
  summary: "Create a token: uses (default from config, or unlimited), expiry (7d, 12h, a date, never), and optionally its string",
  description:
    "Creates a registration token. Uses and expiry are told apart by their form and may come in either order (token create 7d is an expiry only). The token string is chosen by the server unless given with --token (CLI) or as the third argument.",
  params: [
    { name: "uses", kind: "string", description: 'how many registrations it allows, or "unlimited" (or the expiry)', optional: true },
    { name: "expiry", kind: "string", description: "when it expires: 7d, 12h, a date, never (or the uses)", optional: true },
    { name: "token", kind: "string", description: "the token string to create (Synapse: up to 64 of A-Z a-z 0-9 . _ ~ -)", optional: true },
  ],
  permission: "token-users",
  surfaces: SURFACES,
  uses: USES,
  async run(ctx, args) {
    const service = ctx.tokens.service;
    if (service === undefined) return NOT_CONFIGURED;
    const given = usesAndExpiry([args.uses, args.expiry]);
    if (!given.ok) return usageError(given.error);
    const uses = parseUses(given.uses, service.config.defaults.uses);
    if (!uses.ok) return usageError(uses.error);
    const expiry = service.expiry(given.expiry);
    if (!expiry.ok) return refused(`expiry: ${expiry.error}`);
    if (args.token !== undefined) {
      const chosen = checkTokenString(args.token, service.backend.kind);
      if (!chosen.ok) return usageError(`token: ${chosen.error}`);
    }
    const g = await gate(ctx);
    if (!g.ok) return g.reply;
    const r = await g.tokens.backend.create({ usesAllowed: uses.value, expiresAt: expiry.value, ...(args.token !== undefined ? { token: args.token } : {}) });
    await g.tokens.audit(ctx.actor, ctx.place, "create", r.ok ? r.value : null, r.ok ? "ok" : r.error.message, { uses: uses.value, expiresAt: expiry.value });
    if (!r.ok) return failure(r.error.message);
    const now = g.tokens.clock.now();
    const expiryText = describeExpiry(r.value.expiresAt, now);
    const usesText = r.value.usesAllowed === null ? "unlimited uses" : `${r.value.usesAllowed} use(s)`;
    const parts = [paragraph("New registration token: ", code(r.value.token), ` — ${usesText}, expires ${expiryText}.`)];
    const invite = g.tokens.inviteText(r.value, expiryText, usesText);
    if (invite !== undefined) parts.push(paragraph(invite));
    return done(parts, { token: tokenData(r.value, g.tokens), ...(invite !== undefined ? { invite } : {}) });
  },
});

const updateCommand: Command = command({
  name: "token update",
  summary: "Change a token's uses and/or expiry (told apart by form: update TOKEN 12h changes the expiry only)",
  params: [
    { name: "token", kind: "string", description: "the token string or MAS id" },
    { name: "uses", kind: "string", description: 'uses allowed, or "unlimited" (or the expiry)', optional: true },
    { name: "expiry", kind: "string", description: "new expiry: 7d, a date, never (or the uses)", optional: true },
  ],
  permission: "token-users",
  surfaces: SURFACES,
  uses: USES,
  async run(ctx, args) {
    const service = ctx.tokens.service;
    if (service === undefined) return NOT_CONFIGURED;
    const ref = args.token;
    const checked = checkTokenRef(ref, service.backend.kind);
    if (!checked.ok) return usageError(`token: ${checked.error}`);
    const given = usesAndExpiry([args.uses, args.expiry]);
    if (!given.ok) return usageError(given.error);
    if (given.uses === undefined && given.expiry === undefined) return refused("Nothing to change: give uses and/or an expiry.");
    const uses = parseUses(given.uses, null);
    if (!uses.ok) return usageError(uses.error);
    const expiry = given.expiry === undefined ? undefined : service.expiry(given.expiry);
    if (expiry !== undefined && !expiry.ok) return refused(`expiry: ${expiry.error}`);
    const g = await gate(ctx);
    if (!g.ok) return g.reply;
    const r = await g.tokens.backend.update(ref, {
      ...(given.uses !== undefined ? { usesAllowed: uses.value } : {}),
      ...(expiry !== undefined ? { expiresAt: expiry.value } : {}),
    });
    await g.tokens.audit(ctx.actor, ctx.place, "update", ref, r.ok ? "ok" : r.error.message);
    if (!r.ok) return failure(r.error.message);
    return done([paragraph("Updated:"), table(headers(g.tokens), [row(r.value, g.tokens)])], { token: tokenData(r.value, g.tokens) });
  },
});

const deleteCommand: Command = command({
  name: "token delete",
  summary: "Delete tokens (MAS: revoke them)",
  params: [{ name: "token", kind: "string", description: "token strings or MAS ids", variadic: true }],
  permission: "token-users",
  surfaces: SURFACES,
  uses: USES,
  async run(ctx, args) {
    const kind = ctx.tokens.service?.backend.kind;
    const bad = args.token.map((r) => [r, checkTokenRef(r, kind)] as const).filter(([, c]) => !c.ok);
    if (bad.length > 0) return { status: "usage", parts: [list(bad.map(([r, c]) => `${r}: ${c.ok ? "" : c.error}`))] };
    const g = await gate(ctx);
    if (!g.ok) return g.reply;
    const lines: string[] = [];
    const results: { token: string; ok: boolean; result: string }[] = [];
    for (const ref of args.token) {
      const r = await g.tokens.backend.delete(ref);
      await g.tokens.audit(ctx.actor, ctx.place, "delete", ref, r.ok ? r.value : r.error.message);
      lines.push(`${ref}: ${r.ok ? r.value : r.error.message}`);
      results.push({ token: ref, ok: r.ok, result: r.ok ? r.value : r.error.message });
    }
    return { status: results.every((r) => r.ok) ? "ok" : "failed", parts: [list(lines)], data: { results } };
  },
});

const deleteAllCommand: Command = command({
  name: "token delete-all",
  summary: "Delete (MAS: revoke) every valid token; asks for --yes",
  description: "Deletes (MAS: revokes) every valid registration token. Only operators in the management room (or on the CLI) may; without --yes it says how many it would delete.",
  params: [],
  flags: [{ name: "yes", description: "really do it" }],
  permission: "operator",
  surfaces: SURFACES,
  uses: USES,
  async run(ctx, args) {
    const g = await operatorGate(ctx, "delete-all");
    if (!g.ok) return g.reply;
    const r = await g.tokens.backend.list("valid");
    if (!r.ok) return failure(r.error.message);
    if (!args.yes) return done(paragraph(`This would delete ${r.value.length} valid token(s). Add --yes to do it.`), { wouldDelete: r.value.length });
    let count = 0;
    const failures: string[] = [];
    for (const t of r.value) {
      const d = await g.tokens.backend.delete(g.tokens.backend.kind === "mas" ? { id: t.id } : t.token);
      await g.tokens.audit(ctx.actor, ctx.place, "delete-all", t, d.ok ? d.value : d.error.message);
      if (d.ok) count++;
      else failures.push(`${t.token}: ${d.error.message}`);
    }
    return {
      status: failures.length > 0 ? "failed" : "ok",
      parts: [paragraph(`${g.tokens.backend.kind === "mas" ? "Revoked" : "Deleted"} ${count} token(s).`), ...(failures.length > 0 ? [list(failures)] : [])],
      data: { deleted: count, failures },
    };
  },
});

const unrevokeCommand: Command = command({
  name: "token unrevoke",
  summary: "Make a revoked token usable again (MAS)",
  params: [{ name: "token", kind: "string", description: "the token string or MAS id" }],
  permission: "token-users",
  surfaces: SURFACES,
  uses: USES,
  run: (ctx, args) => oneToken(ctx, args.token, "unrevoke", (t) => t.backend.unrevoke(args.token), "Unrevoked:"),
});

function allowKind(entry: string): "user" | "room" | "regex" | undefined {
  if (parseUserId(entry) !== undefined) return "user";
  if (entry.startsWith("!") && parseRoomId(entry) !== undefined) return "room";
  return tryUserIdPattern(entry) !== undefined ? "regex" : undefined;
}

const allowCommand: Command = command({
  name: "token allow",
  summary: "Let a user, a regex of users, or everyone in a room (room id) use token commands",
  description:
    "Adds to the token allow list; only operators in the management room (or on the CLI) may. For a room, the bot joins it (invite it first) and hears token commands there at once; from the CLI, the serve process joins it when it next starts.",
  params: [{ name: "entry", kind: "string", description: "@user:server, a regex, or !room:server" }],
  permission: "operator",
  surfaces: SURFACES,
  uses: USES,
  async run(ctx, args) {
    const g = await operatorGate(ctx, "allow");
    if (!g.ok) return g.reply;
    const entry = args.entry;
    const kind = allowKind(entry);
    if (kind === undefined) return usageError(`entry: "${entry}" is not a user id, a room id or a valid regular expression`);
    let heard = "";
    const roomId = kind === "room" ? parseRoomId(entry) : undefined;
    if (roomId !== undefined) {
      if (ctx.tokens.rooms === undefined) heard = " The serve process joins it and listens there when it next starts (a running one does not).";
      else {
        const joined = await ctx.tokens.rooms.listen(roomId);
        if (!joined.ok) {
          await g.tokens.audit(ctx.actor, ctx.place, "allow", null, `cannot join: ${joined.error}`, { entry, kind });
          return failure(`Cannot join ${entry}, so token commands there would go unheard: ${joined.error}. Invite the bot to the room and try again; the allow list is unchanged.`);
        }
        heard = " I have joined it and listen there now.";
      }
    }
    await g.tokens.store.addAllowed({ scope: TOKEN_SCOPE, entry, kind, source: "command", addedBy: ctx.actor, addedAt: g.tokens.clock.now() });
    await g.tokens.audit(ctx.actor, ctx.place, "allow", null, "ok", { entry, kind });
    return done(paragraph(`Token commands are now allowed for ${kind} ${entry}.${heard}`), { entry, kind });
  },
});

const disallowCommand: Command = command({
  name: "token disallow",
  summary: "Remove an entry from the token allow list",
  description:
    "Removes an entry from the token allow list; only operators in the management room (or on the CLI) may. For a room, the bot stops listening there at once but stays in the room. An entry from the config (tokens.allow) comes back at the next start unless it is removed there too.",
  params: [{ name: "entry", kind: "string", description: "as given to token allow" }],
  permission: "operator",
  surfaces: SURFACES,
  uses: USES,
  async run(ctx, args) {
    const g = await operatorGate(ctx, "disallow");
    if (!g.ok) return g.reply;
    const entry = args.entry;
    const listed = (await g.tokens.store.listAllowed(TOKEN_SCOPE)).find((e) => e.entry === entry);
    const removed = await g.tokens.store.removeAllowed(TOKEN_SCOPE, entry);
    await g.tokens.audit(ctx.actor, ctx.place, "disallow", null, removed ? "ok" : "not listed", { entry });
    if (!removed) return refused(`${entry} was not on the token allow list.`);
    const notes: string[] = [];
    const roomId = listed?.kind === "room" ? parseRoomId(entry) : undefined;
    if (roomId !== undefined && ctx.tokens.rooms !== undefined) {
      ctx.tokens.rooms.unlisten(roomId);
      notes.push(" I no longer listen there (I stay in the room).");
    }
    if (listed?.source === "config") notes.push(" It is in the config (tokens.allow) and comes back at the next start: remove it there too.");
    return done(paragraph(`Removed ${entry} from the token allow list.${notes.join("")}`), { removed: entry });
  },
});

const allowedCommand: Command = command({
  name: "token allowed",
  summary: "Show the token allow list",
  params: [],
  permission: "token-users",
  surfaces: SURFACES,
  uses: USES,
  async run(ctx) {
    const g = await gate(ctx);
    if (!g.ok) return g.reply;
    const entries = await g.tokens.store.listAllowed(TOKEN_SCOPE);
    const data = { entries: entries.map((e) => ({ entry: e.entry, kind: e.kind, source: e.source, addedBy: e.addedBy })) };
    if (entries.length === 0) return done(paragraph("The token allow list is empty: token commands work in the management room only."), data);
    return done(table(["entry", "kind", "from", "added by"], entries.map((e) => [e.entry, e.kind, e.source, e.addedBy])), data);
  },
});

/** Most rows `token audit` shows. */
const AUDIT_ROWS = 50;

const auditCommand: Command = command({
  name: "token audit",
  summary: "Who did what with registration tokens, newest first (all, or one token)",
  description:
    "Shows the token audit: every token command (also refused ones), who gave it, where, and its result, newest first. Token strings are stored masked (the first characters, the length and a short digest), so the audit never shows a whole token.",
  params: [{ name: "token", kind: "string", description: "only this token string or MAS id", optional: true }],
  permission: "operator",
  surfaces: SURFACES,
  uses: USES,
  async run(ctx, args) {
    const g = await operatorGate(ctx, "audit");
    if (!g.ok) return g.reply;
    // A MAS id is stored as it is; a token string masked (rows of older versions without the digest, which may match other tokens with the same start and length).
    const refs = args.token === undefined ? undefined : [...new Set([maskRef(args.token), legacyMaskRef(args.token), args.token])];
    const rows = await g.tokens.store.listTokenAudit(AUDIT_ROWS, refs !== undefined ? { tokenRefs: refs } : {});
    const data = {
      entries: rows.map((r) => ({ at: r.at.toISOString(), actor: r.actor, place: r.place, action: r.action, token: r.tokenRef, result: r.result })),
    };
    if (rows.length === 0) return done(paragraph(args.token === undefined ? "The token audit is empty." : `The token audit has nothing on ${args.token}.`), data);
    return done(
      [
        paragraph(`${rows.length === AUDIT_ROWS ? `The last ${rows.length}` : rows.length} token action(s), newest first:`),
        table(
          ["when", "who", "where", "action", "token", "result"],
          rows.map((r) => [r.at.toISOString().replace(/\.\d+Z$/, "Z"), r.actor, r.place, r.action, r.tokenRef ?? "", r.result]),
        ),
      ],
      data,
    );
  },
});

export const tokenCommands: readonly Command[] = [
  auditCommand,
  listCommand,
  showCommand,
  createCommand,
  updateCommand,
  deleteCommand,
  deleteAllCommand,
  unrevokeCommand,
  allowCommand,
  disallowCommand,
  allowedCommand,
];
