/**
 * `!invite-member`, `!invite-admin`, `!kick-member`: people the directory does not know
 * (typically from other homeservers), recorded as externals so that syncs leave them alone.
 * `!unmanage` / `!manage`: hand a room back to a person, or take it back.
 */
import { serverNameOf, type UserId } from "../matrix/ids.ts";
import type { DirectoryState } from "../reconcile/directory.ts";
import { planLevelChange } from "../reconcile/plan.ts";
import { command, done, failure, refused, type Command, type Context, type Outcome } from "./command.ts";
import { cannotSync, inviteAdminLevel, planHandover, planUnmanageAlone } from "./levels-for-commands.ts";
import { list, paragraph } from "./render.ts";
import type { RoomRef } from "./spec.ts";

const BOTH = ["room", "cli"] as const;

/** Where the directory puts this user (room → via), or undefined when it does not know them. */
function directoryKnows(state: DirectoryState, user: UserId): string | undefined {
  for (const room of state.desired) {
    const m = room.members.find((x) => x.user === user);
    if (m !== undefined) return `${room.room} via ${m.via.join("; ")}`;
  }
  return undefined;
}

type InviteContext = Context<"directory" | "homeserver" | "store" | "clock" | "config">;
const INVITE_USES = ["directory", "homeserver", "store", "clock", "config"] as const;

async function inviteExternal(ctx: InviteContext, roomRef: RoomRef, user: UserId, role: "member" | "admin", opts: { equal: boolean } = { equal: false }): Promise<Outcome> {
  const state = await ctx.directory.read();
  if (!state.ok) return failure(`The directory could not be read, so I cannot tell whether it manages ${user}: ${state.error.message}`);
  const known = directoryKnows(state.value, user);
  if (known !== undefined) {
    return refused(`Refused: ${user} is managed by the directory (${known}). Add them to a group mapped to the room instead.`);
  }
  const room = await ctx.directory.managedRoom(roomRef, state.value);
  if (!room.ok) return refused(room.error.message);
  const { homeserver: gateway, store, clock } = ctx;
  const bot = gateway.bot;
  // A user of our own server that the homeserver does not know is a typo: an invite would
  // fail anyway, and an external recorded for nobody would linger. (Another server's users
  // are looked up over federation, which may not answer: they are not checked.)
  if (serverNameOf(user) === serverNameOf(bot)) {
    const exists = await gateway.userExists(user);
    if (exists.ok && !exists.value) return refused(`Refused: there is no account ${user} on this homeserver (check the spelling).`);
  }
  const observed = await gateway.readRoom(room.value.roomId);
  if (!observed.ok) return failure(`Cannot read ${room.value.room}: ${observed.error.message}`);
  const membership = observed.value.members[user];
  const steps: string[] = [];
  if (membership === "ban") return refused(`Refused: ${user} is banned from ${room.value.room}; unban them by hand first.`);
  if (membership !== "join" && membership !== "invite") {
    const invited = await gateway.invite(room.value.roomId, user);
    if (!invited.ok) return failure(`Could not invite ${user}: ${invited.error.message}`);
    steps.push(`invited ${user}`);
  } else {
    steps.push(`${user} is already ${membership === "join" ? "in" : "invited to"} the room`);
  }
  if (role === "admin") {
    const given = inviteAdminLevel(observed.value, bot, ctx.config.roles["admin"] ?? 100, opts.equal);
    const change = planLevelChange(observed.value, bot, user, given.level);
    if (!change.ok) steps.push(`level not changed: ${change.reason}`);
    else if (change.change.from === change.change.to) steps.push(`already at level ${change.change.to}`);
    else {
      const set = await gateway.setPowerLevels(room.value.roomId, change.content);
      steps.push(set.ok ? `level ${change.change.from} → ${change.change.to}` : `level not changed: ${set.error.message}`);
      if (set.ok && given.note !== undefined) steps.push(given.note);
    }
  }
  await store.addExternal({ roomId: room.value.roomId, userId: user, role, addedBy: ctx.actor, addedAt: clock.now() });
  return done(paragraph(`${room.value.room}: ${steps.join("; ")}. Recorded as an external ${role}: syncs will not remove them.`), { room: room.value.room, user, role, steps });
}

export const inviteMemberCommand: Command = command({
  name: "invite-member",
  summary: "Invite a user the directory does not know; syncs will leave them in the room",
  params: [
    { name: "room", kind: "room", description: "the managed room" },
    { name: "user", kind: "user", description: "who to invite (e.g. from another homeserver)" },
  ],
  permission: "operator",
  surfaces: BOTH,
  uses: INVITE_USES,
  run: (ctx, args) => inviteExternal(ctx, args.room, args.user, "member"),
});

export const inviteAdminCommand: Command = command({
  name: "invite-admin",
  summary: "Like invite-member, and raise them to the admin role's level (below ours unless --equal)",
  description:
    "Invites the user like invite-member and raises them to the admin role's level. When that level is at or above the bot's own, they get one below ours, so that !kick-member can still remove them; --equal gives them the bot's own level instead, after which !kick-member can no longer remove them or lower their level (the homeserver lets us do that only to users below us).",
  params: [
    { name: "room", kind: "room", description: "the managed room" },
    { name: "user", kind: "user", description: "who to invite" },
  ],
  flags: [{ name: "equal", description: "give them our own level when the admin role's is at or above it; !kick-member cannot remove them afterwards" }],
  permission: "operator",
  surfaces: BOTH,
  uses: INVITE_USES,
  run: (ctx, args) => inviteExternal(ctx, args.room, args.user, "admin", { equal: args.equal }),
});

export const kickMemberCommand: Command = command({
  name: "kick-member",
  summary: "Remove a user added with invite-member/invite-admin, and forget them",
  description:
    "Lowers their level, removes them from the room and forgets them as an external. Someone at or above the bot's own level (given with invite-admin --equal, or raised by hand) cannot be removed: the homeserver lets us kick or demote only users below us.",
  params: [
    { name: "room", kind: "room", description: "the managed room" },
    { name: "user", kind: "user", description: "the external to remove" },
  ],
  permission: "operator",
  surfaces: BOTH,
  uses: ["directory", "homeserver", "store"],
  async run(ctx, args) {
    const user = args.user;
    const room = await ctx.directory.managedRoom(args.room);
    if (!room.ok) return refused(room.error.message);
    const { homeserver: gateway, store } = ctx;
    const externals = await store.listExternals(room.value.roomId);
    if (!externals.some((e) => e.userId === user)) {
      return refused(`Refused: ${user} was not added with ${ctx.prefix}invite-member in ${room.value.room}. Users from the directory leave when they leave its groups.`);
    }
    const observed = await gateway.readRoom(room.value.roomId);
    if (!observed.ok) return failure(`Cannot read ${room.value.room}: ${observed.error.message}`);
    const steps: string[] = [];
    const pl = observed.value.powerLevels?.users ?? {};
    if (Object.hasOwn(pl, user)) {
      const change = planLevelChange(observed.value, gateway.bot, user, undefined);
      if (!change.ok) return refused(`Cannot remove ${user}: ${change.reason}. Only someone above us can lower or remove them now.`);
      const set = await gateway.setPowerLevels(room.value.roomId, change.content);
      if (!set.ok) return failure(`Cannot lower ${user}'s level: ${set.error.message}`);
      steps.push(`level ${change.change.from} → ${change.change.to}`);
    }
    const membership = observed.value.members[user];
    if (membership === "join" || membership === "invite" || membership === "knock") {
      const kicked = await gateway.kick(room.value.roomId, user, `Removed by ${ctx.actor === "cli" ? "an operator (CLI)" : ctx.actor}`);
      if (!kicked.ok) return failure(`Could not remove ${user}: ${kicked.error.message}`);
      steps.push("removed from the room");
    }
    await store.removeExternal(room.value.roomId, user);
    steps.push("no longer recorded as an external");
    return done(paragraph(`${room.value.room}: ${user}: ${steps.join("; ")}.`), { room: room.value.room, user, steps });
  },
});

export const unmanageCommand: Command = command({
  name: "unmanage",
  summary: "Stop managing a room and hand it to a new admin (or to those who already have our level)",
  description:
    "Makes sure the new admin has joined, raises them to admin (at most the bot's own level), then (as configured) lowers the bot's own level and leaves. The room is remembered as unmanaged: no sync touches it until manage. Refused for the bot itself, and for someone who could not administer the room afterwards; a room creator (room version 12) or someone already at or above the bot's level keeps their level. Users of other homeservers may take a room over. Without an admin (the inviterbot's form), allowed only when another member who has joined already has the bot's level (or is a creator), so that the room keeps an admin.",
  params: [
    { name: "room", kind: "room", description: "the managed room" },
    { name: "admin", kind: "user", description: "the person who takes the room over", optional: true },
  ],
  permission: "operator",
  surfaces: BOTH,
  uses: ["directory", "homeserver", "store", "clock", "config"],
  async run(ctx, args) {
    const admin = args.admin;
    const room = await ctx.directory.managedRoom(args.room);
    if (!room.ok) return refused(room.error.message);
    const { homeserver: gateway, store, clock } = ctx;
    const bot = gateway.bot;
    const observed = await gateway.readRoom(room.value.roomId);
    if (!observed.ok) return failure(`Cannot read ${room.value.room}: ${observed.error.message}`);
    const steps: string[] = [];
    if (admin === undefined) {
      const alone = planUnmanageAlone(observed.value, bot);
      if (alone.kind !== "keep") return refused(`Cannot hand ${room.value.room} over: ${alone.kind === "refuse" ? alone.reason : ""}`);
      steps.push(alone.note);
    } else {
      const membership = observed.value.members[admin];
      if (membership !== "join") {
        if (membership !== "invite") {
          const invited = await gateway.invite(room.value.roomId, admin);
          if (!invited.ok) return failure(`${admin} has not joined ${room.value.room}, and inviting them failed: ${invited.error.message}`);
        }
        return refused(`${admin} has not joined ${room.value.room} yet; they are invited. Run this again once they have joined.`);
      }
      const handover = planHandover(observed.value, bot, admin, ctx.config.roles["admin"] ?? 100);
      if (handover.kind === "refuse") return refused(`Cannot hand ${room.value.room} over: ${handover.reason}`);
      if (handover.kind === "keep") steps.push(handover.note);
      else {
        const raise = planLevelChange(observed.value, bot, admin, handover.level);
        if (!raise.ok) return refused(`Cannot hand ${room.value.room} over: ${raise.reason}`);
        if (raise.change.from !== raise.change.to) {
          const set = await gateway.setPowerLevels(room.value.roomId, raise.content);
          if (!set.ok) return failure(`Cannot raise ${admin}: ${set.error.message}`);
          steps.push(`${admin}: level ${raise.change.from} → ${raise.change.to}`);
        } else steps.push(`${admin} is already at level ${raise.change.to}`);
      }
    }
    await store.setManaged(room.value.room, room.value.roomId, false, clock.now());
    steps.push("the room is no longer managed");
    const { demoteSelf, leave } = ctx.config.serve?.unmanage ?? { demoteSelf: true, leave: true };
    if (demoteSelf && !observed.value.creators.includes(bot)) {
      const now = await gateway.readRoom(room.value.roomId);
      const lower = now.ok ? planLevelChange(now.value, bot, bot, undefined) : undefined;
      if (lower?.ok === true) {
        const set = await gateway.setPowerLevels(room.value.roomId, lower.content);
        steps.push(set.ok ? "our own level lowered" : `our level not lowered: ${set.error.message}`);
      }
    }
    if (leave) {
      const left = await gateway.leaveRoom(room.value.roomId);
      steps.push(left.ok ? "left the room" : `could not leave: ${left.error.message}`);
    }
    return done([paragraph(`${room.value.room} handed over:`), list(steps)], { room: room.value.room, steps });
  },
});

export const manageCommand: Command = command({
  name: "manage",
  summary: "Manage a room again that was handed back with unmanage (the bot joins it when invited, and must have the level to sync it)",
  params: [{ name: "room", kind: "room", description: "a room mapped in the config or by the directory" }],
  permission: "operator",
  surfaces: BOTH,
  uses: ["directory", "homeserver", "store", "clock"],
  async run(ctx, args) {
    const room = await ctx.directory.managedRoom(args.room);
    if (!room.ok) return refused(room.error.message);
    // Checked first: a room the bot cannot sync stays handed back, and the operator learns why now.
    let observed = await ctx.homeserver.readRoom(room.value.roomId);
    if (!observed.ok && observed.error.code === "M_FORBIDDEN") {
      // Not in the room (it left when the room was handed back): joining works once it is invited again.
      const joined = await ctx.homeserver.joinRoom(room.value.roomId);
      if (!joined.ok) return refused(`${room.value.room} stays handed back: the bot is not in the room and cannot join it (${joined.error.message}); invite it, with a level above the ones it manages, and try again.`);
      observed = await ctx.homeserver.readRoom(room.value.roomId);
    }
    if (!observed.ok) return refused(`${room.value.room} stays handed back: ${observed.error.message}`);
    const why = cannotSync(observed.value, ctx.homeserver.bot);
    if (why !== undefined) return refused(`${room.value.room} stays handed back: ${why}.`);
    await ctx.store.setManaged(room.value.room, room.value.roomId, true, ctx.clock.now());
    return done(paragraph(`${room.value.room} is managed again; the next run syncs it.`), { room: room.value.room, managed: true });
  },
});
