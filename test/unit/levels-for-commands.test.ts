/** Whom !unmanage may hand a room to, and which level !invite-admin gives (pure, no I/O). */
import { describe, expect, it } from "vitest";
import { inviteAdminLevel, planHandover } from "../../src/commands/levels-for-commands.ts";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";
import type { ObservedRoom } from "../../src/reconcile/types.ts";

const BOT = "@bot:example.org" as UserId;
const ANN = "@ann:example.org" as UserId;
const EXT = "@ext:partner.example" as UserId;

function room(users: Record<string, number>, extra: Partial<ObservedRoom> = {}): ObservedRoom {
  return {
    roomId: "!r:example.org" as RoomId,
    roomVersion: "10",
    creators: [],
    members: { [BOT]: "join", [ANN]: "join", [EXT]: "join" },
    powerLevels: { users, users_default: 0, state_default: 50, events: {} },
    ...extra,
  };
}

describe("planHandover", () => {
  it("never the bot itself", () => {
    expect(planHandover(room({ [BOT]: 100 }), BOT, BOT, 100)).toMatchObject({ kind: "refuse", reason: expect.stringMatching(/is this bot/) });
  });

  it("raises a user below us to the admin level, at most ours; users of other servers too", () => {
    expect(planHandover(room({ [BOT]: 100 }), BOT, ANN, 100)).toEqual({ kind: "raise", level: 100 });
    expect(planHandover(room({ [BOT]: 80 }), BOT, EXT, 100)).toEqual({ kind: "raise", level: 80 });
  });

  it("keeps a v12 creator and someone already at or above us", () => {
    expect(planHandover(room({ [BOT]: 100 }, { roomVersion: "12", creators: [ANN] }), BOT, ANN, 100).kind).toBe("keep");
    expect(planHandover(room({ [BOT]: 100, [ANN]: 100 }), BOT, ANN, 100).kind).toBe("keep");
    expect(planHandover(room({ [BOT]: 60, [ANN]: 90 }), BOT, ANN, 100).kind).toBe("keep");
  });

  it("refuses when the successor could not change power levels afterwards", () => {
    expect(planHandover(room({ [BOT]: 100 }), BOT, ANN, 40).kind).toBe("refuse");
    expect(planHandover(room({ [BOT]: 40 }), BOT, ANN, 100).kind).toBe("refuse");
    expect(planHandover(room({ [BOT]: 40, [ANN]: 40 }), BOT, ANN, 100).kind).toBe("refuse");
  });

  it("reads string levels of rooms before version 10, and a room without power levels", () => {
    expect(planHandover(room({ [BOT]: "100" as unknown as number }, { roomVersion: "9" }), BOT, ANN, 100)).toEqual({ kind: "raise", level: 100 });
    const bare: ObservedRoom = { roomId: "!r:example.org" as RoomId, roomVersion: "10", creators: [], members: {}, createSender: BOT };
    expect(planHandover(bare, BOT, ANN, 100)).toEqual({ kind: "raise", level: 100 });
  });
});

describe("inviteAdminLevel", () => {
  it("one below ours unless --equal; the configured level when it is below ours or we are a creator", () => {
    expect(inviteAdminLevel(room({ [BOT]: 100 }), BOT, 100, false)).toMatchObject({ level: 99, note: expect.stringMatching(/--equal/) });
    expect(inviteAdminLevel(room({ [BOT]: 100 }), BOT, 100, true)).toMatchObject({ level: 100, note: expect.stringMatching(/cannot remove them/) });
    expect(inviteAdminLevel(room({ [BOT]: 100 }), BOT, 150, false).level).toBe(99);
    expect(inviteAdminLevel(room({ [BOT]: 100 }), BOT, 75, false)).toEqual({ level: 75 });
    expect(inviteAdminLevel(room({}, { roomVersion: "12", creators: [BOT] }), BOT, 100, false)).toEqual({ level: 100 });
  });
});
