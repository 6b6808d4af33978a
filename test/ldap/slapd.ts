/**
 * A real OpenLDAP server for tests: `startSlapd()` runs a private slapd (own config, own
 * port, own mdb database in a fresh temp folder) and `stop()` removes every trace of it.
 * It never touches a system slapd the Debian package may have set up.
 *
 * DIT (created by startSlapd before any LDIF is loaded):
 *   dc=example,dc=org               dcObject + organization
 *   ou=people,dc=example,dc=org     users
 *   ou=groups,dc=example,dc=org     groups
 *   cn=reader,dc=example,dc=org     bind account: reads everything except userPassword,
 *                                   writes nothing
 * cn=admin,dc=example,dc=org is the rootdn (not an entry). Anonymous users can read the
 * root DSE and the schema only, and bind.
 *
 * Limits: with `sizeLimit: N`, searches by anyone but the rootdn stop after N entries
 * with sizeLimitExceeded (4) unless they use the paged results control, which may page
 * through everything (size.prtotal=unlimited) with any page size — the way Active
 * Directory's MaxPageSize behaves for a client. slapd exempts the rootdn from all limits,
 * so test limits as the reader. Without `sizeLimit` there is no limit (slapd's own
 * default of 500 is switched off).
 *
 * Requires slapd and ldap-utils (`apt-get install -y slapd ldap-utils`); openssl for `tls`.
 */
import { createHash, randomBytes } from "node:crypto";
import { accessSync, closeSync, constants, existsSync, openSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "ldapts";
import { HANG_GUARD_MS, runProcess, startProcess, type TestProcess } from "../helpers/processes.ts";
import type { LdapSettings } from "../../src/idp/ldap.ts";

export const BASE_DN = "dc=example,dc=org";
export const ADMIN_DN = `cn=admin,${BASE_DN}`;
export const READER_DN = `cn=reader,${BASE_DN}`;
export const PEOPLE_DN = `ou=people,${BASE_DN}`;
export const GROUPS_DN = `ou=groups,${BASE_DN}`;

const here = path.dirname(fileURLToPath(import.meta.url));
/** The test-only schema with nsAccountLock (always included). */
export const EXTRA_SCHEMA = path.join(here, "extra.schema");
/** The fixture directory (see the table at the top of fixtures.ldif): pass as `ldif`. */
export const FIXTURE_LDIF: readonly string[] = [path.join(here, "fixtures.ldif"), path.join(here, "big.ldif")];

/** Person entries under ou=people once FIXTURE_LDIF is loaded (10 named + 120 in big). */
export const FIXTURE_PEOPLE_COUNT = 130;
/** Users whose nsAccountLock matches "(nsAccountLock=TRUE)" (frank: TRUE, heidi: true). */
export const FIXTURE_DISABLED: readonly string[] = ["frank", "heidi"];
/** The one fixture user without a uid: keyed by its DN below. */
export const FIXTURE_IVAN_DN = `cn=Ivan Petrov,${PEOPLE_DN}`;

const bigMembers = Array.from({ length: 120 }, (_, i) => `user${String(i).padStart(3, "0")}`);
/**
 * Expected recursive members of every fixture group, keyed by cn: users by uid (Ivan by
 * his DN), sorted, each once, disabled users included, dangling/out-of-base members
 * dropped. The same table, with notes, heads fixtures.ldif.
 */
export const FIXTURE_EXPECTED_MEMBERS: Readonly<Record<string, readonly string[]>> = {
  "db-team": ["carol", "dave"],
  backend: ["bob", "carol", "dave", "frank"],
  frontend: ["alice", "erin"],
  engineering: ["alice", "bob", "carol", "dave", "erin", "frank"],
  "cycle-a": ["alice", "bob"],
  "cycle-b": ["alice", "bob"],
  "self-loop": ["carol"],
  diamond: ["bob", "dave"],
  "diamond-left": ["bob", "dave"],
  "diamond-right": ["bob", "dave"],
  "diamond-bottom": ["dave"],
  "unique-staff": ["alice", "bob", "carol"],
  "unique-parent": ["alice", "bob", "carol", "jose"],
  "posix-devs": ["alice", "bob", "carol"],
  "posix-empty": [],
  locked: ["frank", "grace", "heidi"],
  "no-uid": [FIXTURE_IVAN_DN, "erin"],
  "Équipe Données": ["alice", "jose"],
  dangling: ["erin"],
  "odd-case": ["alice", "bob", "carol", "dave"],
  "xxxopsxxxexample.org": ["bob", "carol", "dave", "erin", "frank"],
  "xxxopsxxxexample.org_owners": ["alice"],
  xxxgeneral: ["alice", "bob"],
  "empty-dn": [],
  big: bigMembers,
};

export interface SlapdOptions {
  /** Imitates AD's page limit: "sizelimit size.soft=N size.hard=N size.prtotal=unlimited". */
  readonly sizeLimit?: number;
  /** With sizeLimit: also cap what paging may return in total (size.prtotal=N), to cut a paged search short. */
  readonly pagedTotalLimit?: number;
  /** LDIF files loaded with ldapadd, in order, after the server is up. */
  readonly ldif?: readonly string[];
  /** LDIF text (no base entries) loaded offline with `slapadd -q` before the server starts. */
  readonly bulkLdif?: string;
  /** Also listen on ldaps:// with a fresh self-signed certificate for 127.0.0.1. */
  readonly tls?: boolean;
  /** Load the syncprov overlay, which keeps contextCSN on the suffix entry (as replicated servers have it). */
  readonly syncprov?: boolean;
}

export interface Slapd {
  /** ldap://127.0.0.1:PORT */
  readonly url: string;
  /** ldaps://127.0.0.1:PORT (with `tls`). StartTLS on `url` works as well then. */
  readonly ldapsUrl?: string;
  /** PEM file to trust for `ldapsUrl` (with `tls`). */
  readonly caFile?: string;
  readonly baseDn: typeof BASE_DN;
  readonly peopleDn: typeof PEOPLE_DN;
  readonly groupsDn: typeof GROUPS_DN;
  readonly adminDn: typeof ADMIN_DN;
  readonly adminPassword: string;
  readonly readerDn: typeof READER_DN;
  readonly readerPassword: string;
  readonly pid: number;
  /** The temp folder (config, database, log); gone after stop(). */
  readonly dir: string;
  /** SIGTERM, SIGKILL after 5 s; waits for the exit and removes `dir`. Idempotent. */
  stop(): Promise<void>;
}

const INSTALL_HINT =
  "install it with `DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils` (Debian/Ubuntu)";

const binDirs = (): string[] => [
  ...(process.env.PATH ?? "").split(path.delimiter).filter((d) => d !== ""),
  "/usr/sbin",
  "/usr/local/sbin",
  "/sbin",
  "/usr/local/libexec",
  "/usr/libexec",
];

function findExecutable(name: string): string | undefined {
  for (const dir of binDirs()) {
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

const firstExisting = (candidates: readonly string[]): string | undefined => candidates.find((c) => existsSync(c));

interface Installation {
  readonly slapd: string;
  readonly slapadd: string;
  readonly ldapadd: string;
  readonly schemaDir: string;
  /** Folder holding back_mdb.so; undefined when mdb is built in. */
  readonly moduleDir: string | undefined;
}

function locate(): Installation | string {
  const slapd = findExecutable("slapd");
  const slapadd = findExecutable("slapadd");
  const ldapadd = findExecutable("ldapadd");
  const schemaDir = firstExisting(["/etc/ldap/schema", "/etc/openldap/schema", "/usr/local/etc/openldap/schema"]);
  const missing = [
    slapd ? undefined : "slapd",
    slapadd ? undefined : "slapadd",
    ldapadd ? undefined : "ldapadd (ldap-utils)",
    schemaDir && existsSync(path.join(schemaDir, "inetorgperson.schema")) ? undefined : "the schema files (inetorgperson.schema)",
  ].filter((m) => m !== undefined);
  if (!slapd || !slapadd || !ldapadd || !schemaDir || missing.length > 0) {
    return `OpenLDAP is not installed (missing ${missing.join(", ")}): ${INSTALL_HINT}`;
  }
  const moduleDir = ["/usr/lib/ldap", "/usr/lib/openldap", "/usr/lib64/openldap", "/usr/libexec/openldap", "/usr/local/libexec/openldap"].find(
    (dir) => existsSync(path.join(dir, "back_mdb.so")) || existsSync(path.join(dir, "back_mdb.la")),
  );
  return { slapd, slapadd, ldapadd, schemaDir, moduleDir };
}

/** True when slapd, slapadd, ldapadd and the standard schema files are installed. */
export function slapdAvailable(): boolean {
  return typeof locate() !== "string";
}

/** {SSHA} hash as slappasswd makes it. */
function ssha(password: string): string {
  const salt = randomBytes(8);
  const digest = createHash("sha1").update(password).update(salt).digest();
  return `{SSHA}${Buffer.concat([digest, salt]).toString("base64")}`;
}

/** `count` distinct ports that were free a moment ago (all held open at once, then released). */
async function freePorts(count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => createServer());
  try {
    return await Promise.all(
      servers.map(
        (server) =>
          new Promise<number>((resolve, reject) => {
            server.once("error", reject);
            server.listen(0, "127.0.0.1", () => {
              const address = server.address();
              if (typeof address === "object" && address !== null) resolve(address.port);
              else reject(new Error("no free port"));
            });
          }),
      ),
    );
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}

async function run(file: string, args: readonly string[], what: string): Promise<string> {
  // LDAPNOINIT: ignore ~/.ldaprc and /etc/ldap/ldap.conf, so the host's client config
  // cannot change what the tools do. Started through the test process registry: a hook that
  // times out in the middle of a big ldapadd does not leave it running.
  const r = await runProcess(file, args, { env: { ...process.env, LDAPNOINIT: "1" }, name: path.basename(file) });
  if (r.code === 0) return r.stdout;
  // Not the command line: it holds passwords.
  const status = r.code !== null ? `exit ${r.code}` : `signal ${r.signal}`;
  const lastEntry = r.stdout.trim().split("\n").filter((l) => l.startsWith("adding new entry")).at(-1);
  throw new Error(`${what} failed (${status})${lastEntry ? ` at ${lastEntry}` : ""}: ${r.stderr.trim() || r.stdout.trim()}`);
}

const escapeConf = (value: string): string => `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;

function slapdConf(o: {
  install: Installation;
  dir: string;
  adminPassword: string;
  sizeLimit: number | undefined;
  pagedTotalLimit?: number | undefined;
  tls: { cert: string; key: string } | undefined;
  syncprov?: boolean | undefined;
}): string {
  const { install, dir } = o;
  const lines = [
    "# written by test/ldap/slapd.ts",
    ...(install.moduleDir ? [`modulepath ${escapeConf(install.moduleDir)}`, "moduleload back_mdb", ...(o.syncprov === true ? ["moduleload syncprov"] : [])] : []),
    ...["core", "cosine", "nis", "inetorgperson"].map((s) => `include ${escapeConf(path.join(install.schemaDir, `${s}.schema`))}`),
    `include ${escapeConf(EXTRA_SCHEMA)}`,
    `pidfile ${escapeConf(path.join(dir, "slapd.pid"))}`,
    `argsfile ${escapeConf(path.join(dir, "slapd.args"))}`,
    ...(o.tls ? [`TLSCertificateFile ${escapeConf(o.tls.cert)}`, `TLSCertificateKeyFile ${escapeConf(o.tls.key)}`] : []),
    "",
    "database mdb",
    `suffix "${BASE_DN}"`,
    `rootdn "${ADMIN_DN}"`,
    `rootpw ${escapeConf(o.adminPassword)}`,
    `directory ${escapeConf(path.join(dir, "db"))}`,
    "maxsize 1073741824",
    // Tests need no durability: no fsync per write makes ldapadd several times faster.
    "dbnosync",
    o.sizeLimit === undefined
      ? "sizelimit unlimited"
      : `sizelimit size.soft=${o.sizeLimit} size.hard=${o.sizeLimit} size.prtotal=${o.pagedTotalLimit ?? "unlimited"}`,
    "index objectClass eq",
    "index uid,mail,memberUid,nsAccountLock eq",
    "index cn eq,sub",
    "index member,uniqueMember eq",
    // Root DSE and schema for everyone (clients look up supported controls).
    'access to dn.base="" by * read',
    'access to dn.base="cn=Subschema" by * read',
    "access to attrs=userPassword by self =xw by anonymous auth by * none",
    `access to * by dn.exact="${READER_DN}" read by * none`,
    ...(o.syncprov === true ? ["overlay syncprov"] : []),
    "",
  ];
  return lines.join("\n");
}

function baseLdif(readerPassword: string): string {
  return [
    `dn: ${BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example Org\n`,
    `dn: ${PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n`,
    `dn: ${GROUPS_DN}\nobjectClass: organizationalUnit\nou: groups\n`,
    `dn: ${READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\n` +
      `description: read-only bind account\nuserPassword: ${ssha(readerPassword)}\n`,
  ].join("\n");
}

/**
 * Folders of servers still running, removed if the test process exits without stop(). The
 * servers themselves are killed with their test, or with the test worker however it ends
 * (test/helpers/processes.ts).
 */
const live = new Map<TestProcess, string>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const [server, dir] of live) {
      server.signal("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function answers(url: string, password: string): Promise<boolean> {
  const client = new Client({ url, connectTimeout: 1000, timeout: 1000 });
  try {
    await client.bind(ADMIN_DN, password);
    return true;
  } catch {
    return false;
  } finally {
    await client.unbind().catch(() => undefined);
  }
}

/** SIGTERM, SIGKILL after 5 s; resolves once it has exited. */
async function kill(server: TestProcess): Promise<void> {
  await server.stop(5_000);
}

interface Running {
  readonly server: TestProcess;
  readonly url: string;
  readonly ldapsUrl: string | undefined;
}

/** Starts slapd on fresh ports; retries when a port was taken in between. */
async function launch(install: Installation, conf: string, dir: string, tls: boolean, adminPassword: string): Promise<Running> {
  const log = path.join(dir, "slapd.log");
  for (let attempt = 1; ; attempt++) {
    const [port, tlsPort] = await freePorts(tls ? 2 : 1);
    const url = `ldap://127.0.0.1:${port}`;
    const ldapsUrl = tlsPort === undefined ? undefined : `ldaps://127.0.0.1:${tlsPort}`;
    const listen = [`${url}/`, ...(ldapsUrl ? [`${ldapsUrl}/`] : [])].join(" ");
    const fd = openSync(log, "w"); // this attempt only
    // -d: stay in the foreground (no fork), so this is the server's own pid. Level 32768
    // ("none") logs only what slapd always logs: startup errors such as a taken port.
    let server: TestProcess;
    try {
      server = startProcess(install.slapd, ["-d", "32768", "-f", conf, "-h", listen], { stdio: ["ignore", fd, fd], name: "slapd" });
    } finally {
      closeSync(fd);
    }
    live.set(server, dir);
    void server.exit.then(() => live.delete(server));

    // Ready when it answers a bind; the time cap only guards against a hang (it takes ~0.2 s).
    const deadline = Date.now() + HANG_GUARD_MS;
    for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
      if (!server.running) break;
      if (await answers(url, adminPassword)) return { server, url, ldapsUrl };
      if (Date.now() > deadline) {
        await kill(server);
        throw new Error(`slapd did not answer on ${url} within ${HANG_GUARD_MS} ms:\n${await tail(log)}`);
      }
      await sleep(delay);
    }
    const exit = await server.exit;
    const output = await tail(log);
    if (attempt < 5 && /bind\(.*\) failed|Address already in use/i.test(output)) continue;
    throw new Error(`slapd exited at startup (${exit.code !== null ? `code ${exit.code}` : exit.signal}):\n${output}`);
  }
}

async function tail(file: string): Promise<string> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text.split("\n").slice(-30).join("\n");
}

async function makeCertificate(dir: string): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  // A self-signed certificate (CA:TRUE, so it is its own trust anchor) for 127.0.0.1.
  await run(
    "openssl",
    [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
      "-addext", "subjectAltName=IP:127.0.0.1",
    ],
    "openssl req (test certificate)",
  );
  return { cert, key };
}

export async function startSlapd(opts: SlapdOptions = {}): Promise<Slapd> {
  const install = locate();
  if (typeof install === "string") throw new Error(install);
  if (opts.sizeLimit !== undefined && (!Number.isInteger(opts.sizeLimit) || opts.sizeLimit < 1)) {
    throw new RangeError(`sizeLimit must be a positive integer, got ${opts.sizeLimit}`);
  }
  for (const file of opts.ldif ?? []) {
    if (!existsSync(file)) throw new Error(`LDIF file not found: ${file}`);
  }
  installExitHook();

  const dir = await mkdtemp(path.join(tmpdir(), "mgs-slapd-"));
  let server: TestProcess | undefined;
  try {
    const adminPassword = randomBytes(12).toString("base64url");
    const readerPassword = randomBytes(12).toString("base64url");
    const tls = opts.tls ? await makeCertificate(dir) : undefined;
    const conf = path.join(dir, "slapd.conf");
    await writeFile(conf, slapdConf({ install, dir, adminPassword, sizeLimit: opts.sizeLimit, pagedTotalLimit: opts.pagedTotalLimit, tls, syncprov: opts.syncprov }), { mode: 0o600 });
    await mkdir(path.join(dir, "db"), { mode: 0o700 });

    const baseText = baseLdif(readerPassword);
    const base = path.join(dir, "base.ldif");
    await writeFile(base, baseText);
    if (opts.bulkLdif !== undefined) {
      // Offline, before the server runs: base entries first (parents before children).
      const bulk = path.join(dir, "bulk.ldif");
      await writeFile(bulk, `${baseText}\n${opts.bulkLdif}`);
      await run(install.slapadd, ["-q", "-f", conf, "-l", bulk], "slapadd of bulkLdif (line numbers include the base entries)");
      await rm(bulk);
    }

    const running = await launch(install, conf, dir, tls !== undefined, adminPassword);
    server = running.server;
    const ldapadd = (file: string): Promise<string> =>
      run(install.ldapadd, ["-x", "-H", running.url, "-D", ADMIN_DN, "-w", adminPassword, "-f", file], `ldapadd -f ${file}`);
    if (opts.bulkLdif === undefined) await ldapadd(base);
    for (const file of opts.ldif ?? []) await ldapadd(file);

    const started = server;
    let stopped: Promise<void> | undefined;
    return {
      url: running.url,
      ...(running.ldapsUrl !== undefined ? { ldapsUrl: running.ldapsUrl } : {}),
      ...(tls !== undefined ? { caFile: tls.cert } : {}),
      baseDn: BASE_DN,
      peopleDn: PEOPLE_DN,
      groupsDn: GROUPS_DN,
      adminDn: ADMIN_DN,
      adminPassword,
      readerDn: READER_DN,
      readerPassword,
      pid: started.pid,
      dir,
      stop: () =>
        (stopped ??= (async () => {
          await kill(started);
          await rm(dir, { recursive: true, force: true });
        })()),
    };
  } catch (err) {
    if (server) await kill(server);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Provider settings for `slapd`, bound as the reader, people and groups under the fixture's bases (389-DS flavour). */
export function readerSettings(slapd: Slapd, overrides: Partial<LdapSettings> = {}): LdapSettings {
  return {
    url: slapd.url,
    startTls: false,
    rejectUnauthorized: true,
    bindDn: slapd.readerDn,
    bindPassword: slapd.readerPassword,
    connectTimeoutMs: 5_000,
    timeoutMs: 10_000,
    pageSize: 10,
    flavour: "389ds",
    groups: { base: GROUPS_DN, scope: "sub", nameAttribute: "cn", memberAttributes: ["member", "uniqueMember", "memberUid"] },
    users: { base: PEOPLE_DN, scope: "sub", memberUidAttribute: "uid" },
    activeDirectoryInChain: false,
    ...overrides,
  };
}
