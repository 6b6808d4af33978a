/**
 * `!invite-member`, `!invite-admin`, `!kick-member`: people the directory does not know
 * (typically from other homeservers), recorded as externals so that syncs leave them alone.
 * `!unmanage` / `!manage`: hand a room back to a person, or take it back.
 */
import { serverNameOf, type UserId } from "../matrix/ids.ts";
import type { DirectoryState } from "../reconcile/directory.ts";
import { planLevelChange } from "../reconcile/plan.ts";
import type { Command, CommandContext } from "./context.ts";
import { inviteAdminLevel, planHandover } from "./levels-for-commands.ts";
import { list, paragraph, type Part } from "./render.ts";
import { defineCommand, type RoomRef } from "./spec.ts";

/** Where the directory puts this user (room → via), or undefined when it does not know them. */
function directoryKnows(state: DirectoryState, user: UserId): string | undefined {
  for (const room of state.desired) {
    const m = room.members.find((x) => x.user === user);
    if (m !== undefined) return `${room.room} via ${m.via.join("; ")}`;
  }
  return undefined;
}

async function inviteExternal(ctx: CommandContext, roomRef: RoomRef, user: UserId, role: "member" | "admin", opts: { equal: boolean } = { equal: false }): Promise<Part[]> {
  const { service } = ctx;
  const state = await service.directory();
  if (!state.ok) return [paragraph(`The directory could not be read, so I cannot tell whether it manages ${user}: ${state.error.message}`)];
  const known = directoryKnows(state.value, user);
  if (known !== undefined) {
    return [paragraph(`Refused: ${user} is managed by the directory (${known}). Add them to a group mapped to the room instead.`)];
  }
  const room = await service.managedRoom(roomRef, state.value);
  if (!room.ok) return [paragraph(room.error.message)];
  const { gateway, store, clock } = service.app;
  // A user of our own server that the homeserver does not know is a typo: an invite would
  // fail anyway, and an external recorded for nobody would linger. (Another server's users
  // are looked up over federation, which may not answer: they are not checked.)
  if (serverNameOf(user) === serverNameOf(service.bot)) {
    const exists = await gateway.userExists(user);
    if (exists.ok && !exists.value) return [paragraph(`Refused: there is no account ${user} on this homeserver (check the spelling).`)];
  }
  const observed = await gateway.readRoom(room.value.roomId);
  if (!observed.ok) return [paragraph(`Cannot read ${room.value.room}: ${observed.error.message}`)];
  const membership = observed.value.members[user];
  const done: string[] = [];
  if (membership === "ban") return [paragraph(`Refused: ${user} is banned from ${room.value.room}; unban them by hand first.`)];
  if (membership !== "join" && membership !== "invite") {
    const invited = await gateway.invite(room.value.roomId, user);
    if (!invited.ok) return [paragraph(`Could not invite ${user}: ${invited.error.message}`)];
    done.push(`invited ${user}`);
  } else {
    done.push(`${user} is already ${membership === "join" ? "in" : "invited to"} the room`);
  }
  if (role === "admin") {
    const given = inviteAdminLevel(observed.value, service.bot, service.config.roles["admin"] ?? 100, opts.equal);
    const change = planLevelChange(observed.value, service.bot, user, given.level);
    if (!change.ok) done.push(`level not changed: ${change.reason}`);
    else if (change.change.from === change.change.to) done.push(`already at level ${change.change.to}`);
    else {
      const set = await gateway.setPowerLevels(room.value.roomId, change.content);
      done.push(set.ok ? `level ${change.change.from} → ${change.change.to}` : `level not changed: ${set.error.message}`);
      if (set.ok && given.note !== undefined) done.push(given.note);
    }
  }
  await store.addExternal({ roomId: room.value.roomId, userId: user, role, addedBy: ctx.sender, addedAt: clock.now() });
  return [paragraph(`${room.value.room}: ${done.join("; ")}. Recorded as an external ${role}: syncs will not remove them.`)];
}

export const inviteMemberCommand: Command = defineCommand({
  name: "invite-member",
  summary: "Invite a user the directory does not know; syncs will leave them in the room",
  params: [
    { name: "room", kind: "room", description: "the managed room" },
    { name: "user", kind: "user", description: "who to invite (e.g. from another homeserver)" },
  ],
  permission: "operator",
  run: (ctx, args) => inviteExternal(ctx, args.values["room"] as RoomRef, args.values["user"] as UserId, "member"),
});

export const inviteAdminCommand: Command = defineCommand({
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
  run: (ctx, args) => inviteExternal(ctx, args.values["room"] as RoomRef, args.values["user"] as UserId, "admin", { equal: args.flags["equal"] === true }),
});

export const kickMemberCommand: Command = defineCommand({
  name: "kick-member",
  summary: "Remove a user added with invite-member/invite-admin, and forget them",
  description:
    "Lowers their level, removes them from the room and forgets them as an external. Someone at or above the bot's own level (given with invite-admin --equal, or raised by hand) cannot be removed: the homeserver lets us kick or demote only users below us.",
  params: [
    { name: "room", kind: "room", description: "the managed room" },
    { name: "user", kind: "user", description: "the external to remove" },
  ],
  permission: "operator",
  async run(ctx, args) {
    const user = args.values["user"] as UserId;
    const room = await ctx.service.managedRoom(args.values["room"] as RoomRef);
    if (!room.ok) return [paragraph(room.error.message)];
    const { gateway, store } = ctx.service.app;
    const externals = await store.listExternals(room.value.roomId);
    if (!externals.some((e) => e.userId === user)) {
      return [paragraph(`Refused: ${user} was not added with !invite-member in ${room.value.room}. Users from the directory leave when they leave its groups.`)];
    }
    const observed = await gateway.readRoom(room.value.roomId);
    if (!observed.ok) return [paragraph(`Cannot read ${room.value.room}: ${observed.error.message}`)];
    const done: string[] = [];
    const pl = observed.value.powerLevels?.users ?? {};
    if (Object.hasOwn(pl, user)) {
      const change = planLevelChange(observed.value, ctx.service.bot, user, undefined);
      if (!change.ok) return [paragraph(`Cannot remove ${user}: ${change.reason}. Only someone above us can lower or remove them now.`)];
      const set = await gateway.setPowerLevels(room.value.roomId, change.content);
      if (!set.ok) return [paragraph(`Cannot lower ${user}'s level: ${set.error.message}`)];
      done.push(`level ${change.change.from} → ${change.change.to}`);
    }
    const membership = observed.value.members[user];
    if (membership === "join" || membership === "invite" || membership === "knock") {
      const kicked = await gateway.kick(room.value.roomId, user, `Removed by ${ctx.sender}`);
      if (!kicked.ok) return [paragraph(`Could not remove ${user}: ${kicked.error.message}`)];
      done.push("removed from the room");
    }
    await store.removeExternal(room.value.roomId, user);
    done.push("no longer recorded as an external");
    return [paragraph(`${room.value.room}: ${user}: ${done.join("; ")}.`)];
  },
});

export const unmanageCommand: Command = defineCommand({
  name: "unmanage",
  summary: "Stop managing a room and hand it to a new admin",
  description:
    "Makes sure the new admin has joined, raises them to admin (at most the bot's own level), then (as configured) lowers the bot's own level and leaves. The room is remembered as unmanaged: no sync touches it until !manage. Refused for the bot itself, and for someone who could not administer the room afterwards; a room creator (room version 12) or someone already at or above the bot's level keeps their level. Users of other homeservers may take a room over.",
  params: [
    { name: "room", kind: "room", description: "the managed room" },
    { name: "admin", kind: "user", description: "the person who takes the room over" },
  ],
  permission: "operator",
  async run(ctx, args) {
    const admin = args.values["admin"] as UserId;
    const { service } = ctx;
    const room = await service.managedRoom(args.values["room"] as RoomRef);
    if (!room.ok) return [paragraph(room.error.message)];
    const { gateway, store, clock } = service.app;
    const observed = await gateway.readRoom(room.value.roomId);
    if (!observed.ok) return [paragraph(`Cannot read ${room.value.room}: ${observed.error.message}`)];
    const membership = observed.value.members[admin];
    if (membership !== "join") {
      if (membership !== "invite") {
        const invited = await gateway.invite(room.value.roomId, admin);
        if (!invited.ok) return [paragraph(`${admin} has not joined ${room.value.room}, and inviting them failed: ${invited.error.message}`)];
      }
      return [paragraph(`${admin} has not joined ${room.value.room} yet; they are invited. Run this again once they have joined.`)];
    }
    const done: string[] = [];
    const handover = planHandover(observed.value, service.bot, admin, service.config.roles["admin"] ?? 100);
    if (handover.kind === "refuse") return [paragraph(`Cannot hand ${room.value.room} over: ${handover.reason}`)];
    if (handover.kind === "keep") done.push(handover.note);
    else {
      const raise = planLevelChange(observed.value, service.bot, admin, handover.level);
      if (!raise.ok) return [paragraph(`Cannot hand ${room.value.room} over: ${raise.reason}`)];
      if (raise.change.from !== raise.change.to) {
        const set = await gateway.setPowerLevels(room.value.roomId, raise.content);
        if (!set.ok) return [paragraph(`Cannot raise ${admin}: ${set.error.message}`)];
        done.push(`${admin}: level ${raise.change.from} → ${raise.change.to}`);
      } else done.push(`${admin} is already at level ${raise.change.to}`);
    }
    await store.setManaged(room.value.room, room.value.roomId, false, clock.now());
    done.push("the room is no longer managed");
    const { demoteSelf, leave } = service.config.serve?.unmanage ?? { demoteSelf: true, leave: true };
    if (demoteSelf && !observed.value.creators.includes(service.bot)) {
      const now = await gateway.readRoom(room.value.roomId);
      const lower = now.ok ? planLevelChange(now.value, service.bot, service.bot, undefined) : undefined;
      if (lower?.ok === true) {
        const set = await gateway.setPowerLevels(room.value.roomId, lower.content);
        done.push(set.ok ? "our own level lowered" : `our level not lowered: ${set.error.message}`);
      }
    }
    if (leave) {
      try {
        await service.client.leaveRoom(room.value.roomId);
        done.push("left the room");
      } catch (err) {
        done.push(`could not leave: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return [paragraph(`${room.value.room} handed over:`), list(done)];
  },
});

export const manageCommand: Command = defineCommand({
  name: "manage",
  summary: "Manage a room again that was handed back with unmanage",
  params: [{ name: "room", kind: "room", description: "a room mapped in the config or by the directory" }],
  permission: "operator",
  async run(ctx, args) {
    const room = await ctx.service.managedRoom(args.values["room"] as RoomRef);
    if (!room.ok) return [paragraph(room.error.message)];
    await ctx.service.app.store.setManaged(room.value.room, room.value.roomId, true, ctx.service.app.clock.now());
    return [paragraph(`${room.value.room} is managed again; the next run syncs it (the bot must be in the room with enough power).`)];
  },
});
