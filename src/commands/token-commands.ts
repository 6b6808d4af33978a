/**
 * `token …`: registration tokens, with the same words in the management room (`!token list`)
 * and on the CLI (`matrix-group-sync token list`). Input is checked before any request; every
 * action is audited; a created token's full string appears only in the reply.
 */
import { parseRoomId, parseUserId, tryUserIdPattern, type RoomId } from "../matrix/ids.ts";
import type { TokenService } from "../tokens/service.ts";
import { TOKEN_SCOPE } from "../tokens/service.ts";
import { checkTokenRef, describeExpiry, describeUses, tokenStatus, type RegistrationToken } from "../tokens/types.ts";
import type { Result } from "../result.ts";
import { code, failed, list, paragraph, table, type Part } from "./render.ts";
import { defineCommand, type CommandSpec, type Duration } from "./spec.ts";

export interface TokenContext {
  /** A user id, or "cli". */
  readonly actor: string;
  /** The room the command came from, or "cli". */
  readonly place: string;
  /** Undefined when the config has no `tokens` section. */
  readonly tokens: TokenService | undefined;
  readonly managementRoomId: string | undefined;
  /** Whether the actor passes the management room's command allow list. */
  readonly isOperator: boolean;
  /** Serve only: the rooms where token commands are heard. Absent on the CLI. */
  readonly tokenRooms?: TokenRooms;
}

/** What serve does when a room joins or leaves the token allow list at run time. */
export interface TokenRooms {
  /** Joins the room and hears token commands there from now on; the joined room's id, or why not. */
  listen(room: RoomId): Promise<Result<RoomId, string>>;
  /** No longer hears commands there (the bot stays in the room: it may be a managed room too). */
  unlisten(room: RoomId): void;
}

export type TokenCommand = CommandSpec<TokenContext, Part[]>;

const NOT_CONFIGURED = [failed(paragraph("Registration tokens are not configured here: add a tokens section to the config."))];

/** The service, when configured and the asker may use it; otherwise the answer to give. */
async function gate(ctx: TokenContext): Promise<{ ok: true; tokens: TokenService } | { ok: false; reply: Part[] }> {
  if (ctx.tokens === undefined) return { ok: false, reply: NOT_CONFIGURED };
  if (!(await ctx.tokens.mayUse(ctx.actor, ctx.place, ctx.managementRoomId, ctx.isOperator))) {
    return { ok: false, reply: [failed(paragraph(`Sorry ${ctx.actor}, token commands are not allowed for you here.`))] };
  }
  return { ok: true, tokens: ctx.tokens };
}

/**
 * Changes to who may use token commands, and deleting every token, are for operators: on the
 * CLI (the shell user) or in the management room by someone on the command allow list. In a
 * token room anyone present may use tokens, but must not widen that to others.
 */
async function operatorGate(ctx: TokenContext, what: string): Promise<{ ok: true; tokens: TokenService } | { ok: false; reply: Part[] }> {
  if (ctx.tokens === undefined) return { ok: false, reply: NOT_CONFIGURED };
  if (ctx.place === "cli" || (ctx.place === ctx.managementRoomId && ctx.isOperator)) return { ok: true, tokens: ctx.tokens };
  await ctx.tokens.audit(ctx.actor, ctx.place, what, null, "refused: not an operator in the management room");
  return { ok: false, reply: [failed(paragraph(`Sorry ${ctx.actor}, only operators in the management room may ${what === "delete-all" ? "delete every token" : "change the token allow list"}.`))] };
}

/**
 * The shape every one-token command shares: check the reference before any request, check
 * permission, call the backend, audit, answer with the token as a table.
 */
async function oneToken(
  ctx: TokenContext,
  ref: string,
  action: string,
  call: (tokens: TokenService) => Promise<Result<RegistrationToken | undefined>>,
  title?: string,
): Promise<Part[]> {
  const checked = checkTokenRef(ref);
  if (!checked.ok) return [failed(paragraph(`token: ${checked.error}`))];
  const g = await gate(ctx);
  if (!g.ok) return g.reply;
  const r = await call(g.tokens);
  await g.tokens.audit(ctx.actor, ctx.place, action, ref, r.ok ? (r.value ? "ok" : "not found") : r.error.message);
  if (!r.ok) return [failed(paragraph(r.error.message))];
  if (r.value === undefined) return [paragraph(`There is no registration token ${ref}.`)];
  return [...(title !== undefined ? [paragraph(title)] : []), table(headers(g.tokens), [row(r.value, g.tokens)])];
}

function row(t: RegistrationToken, tokens: TokenService): string[] {
  const now = tokens.clock.now();
  const status = tokenStatus(t, now);
  return [
    t.token,
    ...(tokens.backend.kind === "mas" ? [t.id] : []),
    status.state === "valid" ? "valid" : status.reason,
    describeUses(t),
    describeExpiry(t.expiresAt, now),
  ];
}

function headers(tokens: TokenService): string[] {
  return ["token", ...(tokens.backend.kind === "mas" ? ["id"] : []), "status", "uses", "expires"];
}

function parseUses(raw: string | undefined, fallback: number | null): { ok: true; value: number | null } | { ok: false; error: string } {
  if (raw === undefined) return { ok: true, value: fallback };
  if (/^(unlimited|∞)$/i.test(raw)) return { ok: true, value: null };
  if (!/^\d{1,9}$/.test(raw)) return { ok: false, error: `uses: "${raw}" is not a number of uses (0 or more, or "unlimited")` };
  return { ok: true, value: Number(raw) };
}

const listCommand: TokenCommand = defineCommand({
  name: "token list",
  summary: "List registration tokens: valid (default), invalid or all; or show one token",
  description: "Lists the registration tokens that are valid (the default), invalid, or all of them. Given anything else, shows that one token (as mas-token-bot's `token list TOKEN` does).",
  params: [{ name: "which", kind: "string", description: "valid, invalid or all, or a token string or MAS id", optional: true }],
  permission: "anyone-in-room",
  async run(ctx, args) {
    const g = await gate(ctx);
    if (!g.ok) return g.reply;
    const given = (args.values["which"] as string | undefined) ?? "valid";
    const which = given.toLowerCase();
    if (which !== "valid" && which !== "invalid" && which !== "all") return await showCommand.run(ctx, { values: { token: given }, flags: {} });
    const r = await g.tokens.backend.list(which);
    await g.tokens.audit(ctx.actor, ctx.place, "list", null, r.ok ? "ok" : r.error.message, { which });
    if (!r.ok) return [failed(paragraph(r.error.message))];
    if (r.value.length === 0) return [paragraph(`No ${which === "all" ? "" : `${which} `}registration tokens.`)];
    return [paragraph(`${r.value.length} ${which === "all" ? "" : `${which} `}registration token(s):`), table(headers(g.tokens), r.value.map((t) => row(t, g.tokens)))];
  },
});

const showCommand: TokenCommand = defineCommand({
  name: "token show",
  summary: "Show one token (by its string, or a MAS id)",
  params: [{ name: "token", kind: "string", description: "the token string or MAS id" }],
  permission: "anyone-in-room",
  run: (ctx, args) => oneToken(ctx, args.values["token"] as string, "show", (t) => t.backend.get(args.values["token"] as string)),
});

const createCommand: TokenCommand = defineCommand({
  name: "token create",
  // mas-token-bot's word for it.
  aliases: ["token generate"],
  summary: "Create a token: uses (default from config, or unlimited) and expiry (7d, 12h, a date, never)",
  params: [
    { name: "uses", kind: "string", description: 'how many registrations it allows, or "unlimited"', optional: true },
    { name: "expiry", kind: "duration", description: "when it expires", optional: true },
  ],
  permission: "anyone-in-room",
  async run(ctx, args) {
    if (ctx.tokens === undefined) return NOT_CONFIGURED;
    const uses = parseUses(args.values["uses"] as string | undefined, ctx.tokens.config.defaults.uses);
    if (!uses.ok) return [failed(paragraph(uses.error))];
    const expiry = ctx.tokens.expiry(args.values["expiry"] as Duration | undefined);
    if (!expiry.ok) return [failed(paragraph(`expiry: ${expiry.error}`))];
    const g = await gate(ctx);
    if (!g.ok) return g.reply;
    const r = await g.tokens.backend.create({ usesAllowed: uses.value, expiresAt: expiry.value });
    await g.tokens.audit(ctx.actor, ctx.place, "create", r.ok ? r.value : null, r.ok ? "ok" : r.error.message, { uses: uses.value, expiresAt: expiry.value });
    if (!r.ok) return [failed(paragraph(r.error.message))];
    const now = g.tokens.clock.now();
    const expiryText = describeExpiry(r.value.expiresAt, now);
    const usesText = r.value.usesAllowed === null ? "unlimited uses" : `${r.value.usesAllowed} use(s)`;
    const parts = [paragraph("New registration token: ", code(r.value.token), ` — ${usesText}, expires ${expiryText}.`)];
    const invite = g.tokens.inviteText(r.value, expiryText, usesText);
    if (invite !== undefined) parts.push(paragraph(invite));
    return parts;
  },
});

const updateCommand: TokenCommand = defineCommand({
  name: "token update",
  summary: "Change a token's uses and/or expiry",
  params: [
    { name: "token", kind: "string", description: "the token string or MAS id" },
    { name: "uses", kind: "string", description: 'uses allowed, or "unlimited"', optional: true },
    { name: "expiry", kind: "duration", description: "new expiry (7d, a date, never)", optional: true },
  ],
  permission: "anyone-in-room",
  async run(ctx, args) {
    if (ctx.tokens === undefined) return NOT_CONFIGURED;
    const ref = args.values["token"] as string;
    const checked = checkTokenRef(ref);
    if (!checked.ok) return [failed(paragraph(`token: ${checked.error}`))];
    const usesRaw = args.values["uses"] as string | undefined;
    const expiryRaw = args.values["expiry"] as Duration | undefined;
    if (usesRaw === undefined && expiryRaw === undefined) return [paragraph("Nothing to change: give uses and/or an expiry.")];
    const uses = parseUses(usesRaw, null);
    if (!uses.ok) return [failed(paragraph(uses.error))];
    const expiry = expiryRaw === undefined ? undefined : ctx.tokens.expiry(expiryRaw);
    if (expiry !== undefined && !expiry.ok) return [failed(paragraph(`expiry: ${expiry.error}`))];
    const g = await gate(ctx);
    if (!g.ok) return g.reply;
    const r = await g.tokens.backend.update(ref, {
      ...(usesRaw !== undefined ? { usesAllowed: uses.value } : {}),
      ...(expiry !== undefined ? { expiresAt: expiry.value } : {}),
    });
    await g.tokens.audit(ctx.actor, ctx.place, "update", ref, r.ok ? "ok" : r.error.message);
    if (!r.ok) return [failed(paragraph(r.error.message))];
    return [paragraph("Updated:"), table(headers(g.tokens), [row(r.value, g.tokens)])];
  },
});

const deleteCommand: TokenCommand = defineCommand({
  name: "token delete",
  summary: "Delete tokens (MAS: revoke them)",
  params: [{ name: "token", kind: "string", description: "token strings or MAS ids", variadic: true }],
  permission: "anyone-in-room",
  async run(ctx, args) {
    const refs = args.values["token"] as string[];
    const bad = refs.map((r) => [r, checkTokenRef(r)] as const).filter(([, c]) => !c.ok);
    if (bad.length > 0) return [failed(list(bad.map(([r, c]) => `${r}: ${c.ok ? "" : c.error}`)))];
    const g = await gate(ctx);
    if (!g.ok) return g.reply;
    const lines: string[] = [];
    let anyFailed = false;
    for (const ref of refs) {
      const r = await g.tokens.backend.delete(ref);
      await g.tokens.audit(ctx.actor, ctx.place, "delete", ref, r.ok ? r.value : r.error.message);
      lines.push(`${ref}: ${r.ok ? r.value : r.error.message}`);
      anyFailed ||= !r.ok;
    }
    return [anyFailed ? failed(list(lines)) : list(lines)];
  },
});

const deleteAllCommand: TokenCommand = defineCommand({
  name: "token delete-all",
  summary: "Delete (MAS: revoke) every valid token; asks for --yes",
  description: "Deletes (MAS: revokes) every valid registration token. Only operators in the management room (or on the CLI) may; without --yes it says how many it would delete.",
  params: [],
  flags: [{ name: "yes", description: "really do it" }],
  permission: "operator",
  async run(ctx, args) {
    const g = await operatorGate(ctx, "delete-all");
    if (!g.ok) return g.reply;
    const r = await g.tokens.backend.list("valid");
    if (!r.ok) return [failed(paragraph(r.error.message))];
    if (args.flags["yes"] !== true) {
      return [paragraph(`This would delete ${r.value.length} valid token(s). Add --yes to do it.`)];
    }
    let done = 0;
    const failures: string[] = [];
    for (const t of r.value) {
      const d = await g.tokens.backend.delete(g.tokens.backend.kind === "mas" ? t.id : t.token);
      await g.tokens.audit(ctx.actor, ctx.place, "delete-all", t, d.ok ? d.value : d.error.message);
      if (d.ok) done++;
      else failures.push(`${t.token}: ${d.error.message}`);
    }
    return [paragraph(`${g.tokens.backend.kind === "mas" ? "Revoked" : "Deleted"} ${done} token(s).`), ...(failures.length > 0 ? [failed(list(failures))] : [])];
  },
});

const unrevokeCommand: TokenCommand = defineCommand({
  name: "token unrevoke",
  summary: "Make a revoked token usable again (MAS)",
  params: [{ name: "token", kind: "string", description: "the token string or MAS id" }],
  permission: "anyone-in-room",
  run: (ctx, args) =>
    oneToken(ctx, args.values["token"] as string, "unrevoke", (t) => t.backend.unrevoke(args.values["token"] as string), "Unrevoked:"),
});

function allowKind(entry: string): "user" | "room" | "regex" | undefined {
  if (parseUserId(entry) !== undefined) return "user";
  if (entry.startsWith("!") && parseRoomId(entry) !== undefined) return "room";
  return tryUserIdPattern(entry) !== undefined ? "regex" : undefined;
}

const allowCommand: TokenCommand = defineCommand({
  name: "token allow",
  summary: "Let a user, a regex of users, or everyone in a room (room id) use token commands",
  description:
    "Adds to the token allow list; only operators in the management room (or on the CLI) may. For a room, the bot joins it (invite it first) and hears token commands there at once; from the CLI, the serve process joins it when it next starts.",
  params: [{ name: "entry", kind: "string", description: "@user:server, a regex, or !room:server" }],
  permission: "operator",
  async run(ctx, args) {
    const g = await operatorGate(ctx, "allow");
    if (!g.ok) return g.reply;
    const entry = args.values["entry"] as string;
    const kind = allowKind(entry);
    if (kind === undefined) return [failed(paragraph(`entry: "${entry}" is not a user id, a room id or a valid regular expression`))];
    let heard = "";
    if (kind === "room") {
      if (ctx.tokenRooms === undefined) heard = " The serve process joins it and listens there when it next starts (a running one does not).";
      else {
        const joined = await ctx.tokenRooms.listen(entry as RoomId);
        if (!joined.ok) {
          await g.tokens.audit(ctx.actor, ctx.place, "allow", null, `cannot join: ${joined.error}`, { entry, kind });
          return [failed(paragraph(`Cannot join ${entry}, so token commands there would go unheard: ${joined.error}. Invite the bot to the room and try again; the allow list is unchanged.`))];
        }
        heard = " I have joined it and listen there now.";
      }
    }
    await g.tokens.store.addAllowed({ scope: TOKEN_SCOPE, entry, kind, source: "command", addedBy: ctx.actor, addedAt: g.tokens.clock.now() });
    await g.tokens.audit(ctx.actor, ctx.place, "allow", null, "ok", { entry, kind });
    return [paragraph(`Token commands are now allowed for ${kind} ${entry}.${heard}`)];
  },
});

const disallowCommand: TokenCommand = defineCommand({
  name: "token disallow",
  summary: "Remove an entry from the token allow list",
  description:
    "Removes an entry from the token allow list; only operators in the management room (or on the CLI) may. For a room, the bot stops listening there at once but stays in the room. An entry from the config (tokens.allow) comes back at the next start unless it is removed there too.",
  params: [{ name: "entry", kind: "string", description: "as given to token allow" }],
  permission: "operator",
  async run(ctx, args) {
    const g = await operatorGate(ctx, "disallow");
    if (!g.ok) return g.reply;
    const entry = args.values["entry"] as string;
    const listed = (await g.tokens.store.listAllowed(TOKEN_SCOPE)).find((e) => e.entry === entry);
    const removed = await g.tokens.store.removeAllowed(TOKEN_SCOPE, entry);
    await g.tokens.audit(ctx.actor, ctx.place, "disallow", null, removed ? "ok" : "not listed", { entry });
    if (!removed) return [paragraph(`${entry} was not on the token allow list.`)];
    const notes: string[] = [];
    if (listed?.kind === "room" && ctx.tokenRooms !== undefined) {
      ctx.tokenRooms.unlisten(entry as RoomId);
      notes.push(" I no longer listen there (I stay in the room).");
    }
    if (listed?.source === "config") notes.push(" It is in the config (tokens.allow) and comes back at the next start: remove it there too.");
    return [paragraph(`Removed ${entry} from the token allow list.${notes.join("")}`)];
  },
});

const allowedCommand: TokenCommand = defineCommand({
  name: "token allowed",
  summary: "Show the token allow list",
  params: [],
  permission: "anyone-in-room",
  async run(ctx) {
    const g = await gate(ctx);
    if (!g.ok) return g.reply;
    const entries = await g.tokens.store.listAllowed(TOKEN_SCOPE);
    if (entries.length === 0) return [paragraph("The token allow list is empty: token commands work in the management room only.")];
    return [table(["entry", "kind", "from", "added by"], entries.map((e) => [e.entry, e.kind, e.source, e.addedBy]))];
  },
});

export const tokenCommands: readonly TokenCommand[] = [
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
