/**
 * How the bot signs in: the configured access token, or password login (`homeserver.user` and
 * `homeserver.password`).
 *
 * Password login keeps one session: the first start logs in (a new device), and the device and
 * the access token are kept in the store, the token sealed (AES-256-GCM) with a key derived from
 * the password (scrypt), so the database alone does not give the token away. Later starts and
 * CLI runs reuse the token; when the homeserver no longer takes it (M_UNKNOWN_TOKEN: logged out,
 * expired) or the password changed, the bot logs in again with the same device id, so that it
 * stays one device with the same end-to-end encryption keys. Nothing ever logs out: `/logout`
 * would delete the device and its keys.
 */
import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from "node:crypto";
import type { Clock } from "../clock.ts";
import type { HomeserverConfig } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import { fail, ok, type Result } from "../result.ts";
import type { Store } from "../store/store.ts";
import type { MatrixGateway } from "./gateway.ts";

export interface BotSession {
  readonly accessToken: string;
}

/** Makes a gateway for an access token ("" for none: only `login` works then). */
export type GatewayFactory = (accessToken: string) => MatrixGateway;

export async function signIn(hs: HomeserverConfig, store: Pick<Store, "getBotSession" | "putBotSession">, gatewayFor: GatewayFactory, clock: Clock, log: Logger): Promise<Result<BotSession>> {
  if (hs.accessToken !== undefined) return ok({ accessToken: hs.accessToken });
  const { user, password } = hs;
  const saved = await store.getBotSession(user);
  if (saved !== undefined) {
    const token = unseal(saved.sealedToken, password);
    if (token !== undefined) {
      const me = await gatewayFor(token).whoami();
      if (me.ok) return ok({ accessToken: token });
      if (me.error.code !== "M_UNKNOWN_TOKEN") return fail(`cannot check the bot's saved session: ${me.error.message}`);
      log.info("the saved session is no longer valid; logging in again with the same device", { device: saved.deviceId });
    } else {
      log.info("the saved session cannot be opened with this password; logging in again with the same device", { device: saved.deviceId });
    }
  }
  const session = await gatewayFor("").login(user, password, saved?.deviceId);
  if (!session.ok) return session;
  if (saved !== undefined && session.value.deviceId !== saved.deviceId) {
    log.warn("the homeserver gave the bot a new device at login", { before: saved.deviceId, now: session.value.deviceId });
  }
  await store.putBotSession({ login: user, userId: session.value.userId, deviceId: session.value.deviceId, sealedToken: seal(session.value.accessToken, password), updatedAt: clock.now() });
  log.info("logged in", { user: session.value.userId, device: session.value.deviceId });
  return ok({ accessToken: session.value.accessToken });
}

const SALT = 16;
const IV = 12;
const TAG = 16;

function keyFor(password: string, salt: Uint8Array): Buffer {
  return scryptSync(password, salt, 32);
}

function seal(token: string, password: string): Uint8Array {
  const salt = randomBytes(SALT);
  const iv = randomBytes(IV);
  const cipher = createCipheriv("aes-256-gcm", keyFor(password, salt), iv);
  const body = Buffer.concat([cipher.update(token, "utf8"), cipher.final()]);
  return Buffer.concat([salt, iv, cipher.getAuthTag(), body]);
}

/** The token, or undefined when the password does not open it (or the bytes are not a sealed token). */
function unseal(sealed: Uint8Array, password: string): string | undefined {
  if (sealed.length <= SALT + IV + TAG) return undefined;
  const b = Buffer.from(sealed);
  try {
    const decipher = createDecipheriv("aes-256-gcm", keyFor(password, b.subarray(0, SALT)), b.subarray(SALT, SALT + IV));
    decipher.setAuthTag(b.subarray(SALT + IV, SALT + IV + TAG));
    return Buffer.concat([decipher.update(b.subarray(SALT + IV + TAG)), decipher.final()]).toString("utf8");
  } catch {
    return undefined;
  }
}
