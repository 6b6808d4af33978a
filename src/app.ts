/**
 * Wiring by hand: config → logger, identity provider, homeserver gateway, store. No
 * side-effect registration; every dependency is visible here.
 */
import { systemClock, type Clock } from "./clock.ts";
import type { Config } from "./config/schema.ts";
import { createIdentityProvider } from "./idp/index.ts";
import type { DirectoryRequestObserver, IdentityProvider } from "./idp/types.ts";
import { createLogger, type Logger } from "./log.ts";
import { createBotSdkGateway } from "./matrix/bot-sdk-gateway.ts";
import type { MatrixGateway } from "./matrix/gateway.ts";
import type { SyncSettings } from "./reconcile/run.ts";
import { spaceSettings, templateFor } from "./config/room-templates.ts";
import { describeError, fail, ok, type Result } from "./result.ts";
import { openStore } from "./store/kysely-store.ts";
import { signIn } from "./matrix/login.ts";
import type { Store } from "./store/store.ts";

export interface App {
  readonly idp: IdentityProvider;
  readonly gateway: MatrixGateway;
  /** The bot's access token: the configured one, or the password login's. */
  readonly accessToken: string;
  readonly store: Store;
  readonly clock: Clock;
  readonly log: Logger;
  close(): Promise<void>;
}

export interface AppOptions {
  readonly interactive: boolean;
  readonly json: boolean;
  /** Told of every directory request (metrics). */
  readonly onDirectoryRequest?: DirectoryRequestObserver | undefined;
  /** Once aborted, the homeserver gateway sends nothing more (serve: leadership lost). */
  readonly signal?: AbortSignal | undefined;
}

export async function openApp(config: Config, opts: AppOptions): Promise<Result<App>> {
  const log = createLogger({ level: config.log.level, format: config.log.format });
  const storeLog = log.child("store");
  let store: Store;
  try {
    store = await openStore({
      dataDir: config.dataDir,
      ...(config.database ? { databaseUrl: config.database.url } : {}),
      onWarning: (message, fields) => storeLog.warn(message, fields),
    });
  } catch (err) {
    const where = config.database ? "the PostgreSQL database (database.url)" : `the embedded database in ${config.dataDir}`;
    return fail(`cannot open ${where}: ${describeError(err)}`);
  }
  // Whoever takes the store (a CLI command, serve as leader) closes the books of runs whose
  // process is gone (killed mid-run): otherwise they stay "running" for ever.
  try {
    const dangling = await store.interruptDanglingRuns(systemClock.now());
    if (dangling > 0) storeLog.warn("runs left running by a process that is gone marked interrupted", { count: dangling });
  } catch (err) {
    await store.close().catch(() => undefined);
    return fail(`cannot update the runs left by a stopped process: ${describeError(err)}`);
  }
  let idp: IdentityProvider;
  try {
    idp = await createIdentityProvider(config.idp, config.users, log, opts.onDirectoryRequest);
  } catch (err) {
    // E.g. an unreadable idp.azure.certificateFile: said, and the store is let go.
    await store.close().catch(() => undefined);
    return fail(`cannot set up the directory (idp.${config.idp.kind}): ${describeError(err)}`);
  }
  const gatewayFor = (accessToken: string): MatrixGateway =>
    createBotSdkGateway({
      homeserverUrl: config.homeserver.url,
      accessToken,
      requestTimeoutMs: config.homeserver.requestTimeoutMs,
      maxRetries: config.homeserver.maxRetries,
      maxRetryWaitMs: config.homeserver.maxRetryWaitMs,
      log: log.child("matrix"),
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
    });
  const session = await signIn(config.homeserver, store, gatewayFor, systemClock, log.child("login"));
  if (!session.ok) {
    await idp.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    return fail(`cannot sign in to the homeserver: ${session.error.message}`);
  }
  const gateway = gatewayFor(session.value.accessToken);
  return ok({
    idp,
    gateway,
    accessToken: session.value.accessToken,
    store,
    clock: systemClock,
    log,
    async close() {
      await idp.close();
      await store.close();
    },
  });
}

export function settingsFrom(config: Config): SyncSettings {
  return {
    ...(config.managedDomains ? { managedDomains: config.managedDomains } : {}),
    roles: config.roles,
    users: config.users,
    mapping: config.mapping,
    sync: config.sync,
    concurrency: config.homeserver.concurrency,
    templateFor: (refs) => templateFor(config, refs),
    spaces: spaceSettings(config),
  };
}
