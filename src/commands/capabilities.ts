/**
 * The capabilities commands use, built from the wired app: the same on both surfaces, so
 * `!release` and `matrix-group-sync release` cannot differ in what they do. Each is narrow:
 * a command gets the ones it names and nothing else (commands/command.ts).
 */
import { settingsFrom, type App } from "../app.ts";
import type { Directory, Homeserver, ManagedRoom } from "./command.ts";
import type { RoomRef } from "./spec.ts";
import type { Config } from "../config/schema.ts";
import { serverNameOf, type UserId } from "../matrix/ids.ts";
import { readDirectory, type DirectoryState } from "../reconcile/directory.ts";
import { fail, ok, type Result } from "../result.ts";

/** The bot's user id, asked of the homeserver once and then remembered. */
export function botIdentity(app: App): () => Promise<Result<UserId>> {
  let known: Promise<Result<UserId>> | undefined;
  return () => {
    known ??= app.gateway.whoami().then((r) => {
      if (!r.ok) known = undefined; // asked again next time
      return r;
    });
    return known;
  };
}

export function directoryCapability(app: App, config: Config, bot: () => Promise<Result<UserId>>): Directory {
  const read = async (): Promise<Result<DirectoryState>> => {
    let server = config.users.domain;
    if (server === undefined) {
      const me = await bot();
      if (!me.ok) return fail(`cannot tell the server name for Matrix ids (set users.domain, or make the homeserver reachable): ${me.error.message}`);
      server = serverNameOf(me.value);
    }
    return readDirectory(app.idp, settingsFrom(config), server);
  };
  return {
    kind: app.idp.kind,
    read,
    async managedRoom(ref: RoomRef, state?: DirectoryState): Promise<Result<ManagedRoom>> {
      const given = ref.kind === "id" ? ref.roomId : ref.alias;
      let rooms: string[];
      if (state !== undefined) rooms = state.desired.map((d) => d.room);
      else {
        const dir = await read();
        if (!dir.ok) return dir;
        rooms = dir.value.desired.map((d) => d.room);
      }
      const resolved = await app.gateway.resolveRoom(given);
      // The gateway's message names the room already (never "#x: #x: no such room alias").
      if (!resolved.ok) return fail(resolved.error.message, resolved.error.code !== undefined ? { code: resolved.error.code } : {});
      if (rooms.includes(given)) return ok({ room: given, roomId: resolved.value });
      // Configured by alias, named by id (or the other way round): compare resolved ids.
      const known = new Map((await app.store.listManagedRooms()).map((r) => [r.room, r.roomId]));
      for (const room of rooms) {
        let id = known.get(room) ?? (room.startsWith("!") ? room : undefined);
        if (id === undefined || id === null) {
          const r = await app.gateway.resolveRoom(room);
          id = r.ok ? r.value : undefined;
        }
        if (id === resolved.value) return ok({ room, roomId: resolved.value });
      }
      return fail(`${given} is not a room this service manages (the managed command lists them)`);
    },
  };
}

export function homeserverCapability(app: App, bot: UserId): Homeserver {
  const g = app.gateway;
  return {
    bot,
    readRoom: (roomId) => g.readRoom(roomId),
    invite: (roomId, user) => g.invite(roomId, user),
    kick: (roomId, user, reason) => g.kick(roomId, user, reason),
    setPowerLevels: (roomId, content) => g.setPowerLevels(roomId, content),
    userExists: (user) => g.userExists(user),
    resolveRoom: (room) => g.resolveRoom(room),
    joinedRooms: () => g.joinedRooms(),
    joinRoom: (room) => g.joinRoom(room),
    leaveRoom: (roomId) => g.leaveRoom(roomId),
  };
}
