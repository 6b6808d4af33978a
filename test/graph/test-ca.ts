/**
 * A throw-away certificate authority for the HTTPS stand-ins (Graph / identity platform).
 *
 * `@azure/identity` refuses an `http:` authority host, so the stand-in must speak TLS with a
 * certificate the test process trusts. `ensureTestCa()` creates, once, a self-signed CA and a server
 * certificate for 127.0.0.1 / localhost signed by it, under `node_modules/.cache/mgs-test-ca/`.
 * The vitest config sets `NODE_EXTRA_CA_CERTS` to `caFile` before any worker starts (Node reads that
 * variable only at start-up).
 *
 * Concurrency: two processes may call `ensureTestCa()` at once. Each builds its files in a private
 * temporary folder and then renames that folder to the final name; `rename` of a folder onto an
 * existing non-empty folder fails, so exactly one set wins and the loser uses the winner's files.
 *
 * Synchronous on purpose (vitest.config.ts calls it at load time). Needs the `openssl` binary.
 */
import { execFileSync } from "node:child_process";
import { X509Certificate, createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export interface TestCa {
  /** PEM of the self-signed CA: what NODE_EXTRA_CA_CERTS must point at. */
  caFile: string;
  /** PEM of the server certificate (SAN IP:127.0.0.1, DNS:localhost), signed by the CA. */
  certFile: string;
  /** PEM (PKCS#8) private key of the server certificate. */
  keyFile: string;
}

export interface ClientCertificate {
  /** The certificate alone (what an app registration stores as its key credential). */
  certPem: string;
  /** The RSA private key alone (PKCS#8 PEM). */
  keyPem: string;
  /** One file holding private key + certificate: what `ClientCertificateCredential` takes as `certificatePath`. */
  pemFile: string;
  /** SHA-1 of the certificate's DER, upper-case hex (the "thumbprint" Entra ID shows). */
  thumbprintSha1Hex: string;
  /** SHA-256 of the certificate's DER, upper-case hex (what MSAL puts in `x5t#S256`, base64url-encoded). */
  thumbprintSha256Hex: string;
}

const PROJECT_ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "../..");
/** Fixed folder, shared by every process of every run (reused while the certificates stay valid). */
export const TEST_CA_DIR = join(PROJECT_ROOT, "node_modules", ".cache", "mgs-test-ca");

const CA_FILE = "ca.crt";
const CERT_FILE = "server.crt";
const KEY_FILE = "server.key";
/** Regenerate when the server certificate has less than this much life left. */
const MIN_REMAINING_MS = 7 * 24 * 3600 * 1000;

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string; code?: string };
    if (e.code === "ENOENT") throw new Error("test CA: the `openssl` binary was not found on PATH", { cause: err });
    throw new Error(`test CA: openssl ${args[0] ?? ""} failed: ${e.stderr?.toString().trim() ?? e.message}`, { cause: err });
  }
}

function filesOf(dir: string): TestCa {
  return { caFile: join(dir, CA_FILE), certFile: join(dir, CERT_FILE), keyFile: join(dir, KEY_FILE) };
}

/** True when `dir` holds a complete, still-valid CA + server certificate for 127.0.0.1. */
function usable(dir: string): boolean {
  const f = filesOf(dir);
  if (!existsSync(f.caFile) || !existsSync(f.certFile) || !existsSync(f.keyFile)) return false;
  try {
    const ca = new X509Certificate(readFileSync(f.caFile));
    const cert = new X509Certificate(readFileSync(f.certFile));
    const now = Date.now();
    if (Date.parse(cert.validTo) - now < MIN_REMAINING_MS) return false;
    if (Date.parse(ca.validTo) - now < MIN_REMAINING_MS) return false;
    if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return false;
    if (cert.checkIP("127.0.0.1") === undefined) return false;
    return readFileSync(f.keyFile, "utf8").includes("PRIVATE KEY");
  } catch {
    return false;
  }
}

function generateInto(dir: string): void {
  const ext = [
    "basicConstraints = critical, CA:FALSE",
    "keyUsage = critical, digitalSignature, keyEncipherment",
    "extendedKeyUsage = serverAuth",
    "subjectAltName = IP:127.0.0.1, DNS:localhost",
    "",
  ].join("\n");
  writeFileSync(join(dir, "server.ext"), ext);
  // CA: P-256 keys are generated instantly and Node's TLS accepts them.
  openssl(
    [
      "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", "ca.key", "-out", CA_FILE, "-days", "3650", "-sha256",
      "-subj", "/CN=matrix-group-sync test CA (do not trust outside tests)",
      "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
      "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ],
    dir,
  );
  openssl(
    [
      "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", KEY_FILE, "-out", "server.csr", "-subj", "/CN=127.0.0.1",
    ],
    dir,
  );
  // An explicit random serial: -CAcreateserial would write a shared ca.srl file.
  openssl(
    [
      "x509", "-req", "-in", "server.csr", "-CA", CA_FILE, "-CAkey", "ca.key",
      "-set_serial", `0x${randomBytes(12).toString("hex")}`, "-days", "825", "-sha256",
      "-extfile", "server.ext", "-out", CERT_FILE,
    ],
    dir,
  );
}

/**
 * Creates (once) and returns the test CA and the 127.0.0.1 server certificate. Synchronous; safe
 * when several processes call it at the same time.
 */
export function ensureTestCa(): TestCa {
  if (usable(TEST_CA_DIR)) return filesOf(TEST_CA_DIR);
  const parent = join(TEST_CA_DIR, "..");
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `mgs-test-ca.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  mkdirSync(tmp);
  try {
    generateInto(tmp);
    if (!usable(tmp)) throw new Error("test CA: freshly generated certificates do not verify");
    try {
      renameSync(tmp, TEST_CA_DIR);
      return filesOf(TEST_CA_DIR);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "EPERM") throw err;
      // Someone else's folder is there: either a concurrent winner (use it) or a stale one.
      if (usable(TEST_CA_DIR)) return filesOf(TEST_CA_DIR);
      const stale = `${TEST_CA_DIR}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
      try {
        renameSync(TEST_CA_DIR, stale);
        rmSync(stale, { recursive: true, force: true });
      } catch {
        // another process moved it first
      }
      try {
        renameSync(tmp, TEST_CA_DIR);
      } catch {
        // a concurrent process installed its own set in between; fall through to the check
      }
      if (usable(TEST_CA_DIR)) return filesOf(TEST_CA_DIR);
      throw new Error(`test CA: could not install certificates in ${TEST_CA_DIR}`, { cause: err });
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Creates a fresh RSA-2048 key and a self-signed certificate for an app registration's certificate
 * credential (Entra ID does not need it to chain to anything). Files are written under `dir` with a
 * unique prefix, so several calls may share one folder.
 */
export function makeClientCertificate(dir: string): ClientCertificate {
  mkdirSync(dir, { recursive: true });
  const prefix = `client-${randomBytes(6).toString("hex")}`;
  const keyPath = join(dir, `${prefix}.key`);
  const certPath = join(dir, `${prefix}.crt`);
  openssl(
    [
      "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", keyPath, "-out", certPath,
      "-days", "30", "-sha256", "-subj", `/CN=matrix-group-sync test app ${prefix}`,
    ],
    dir,
  );
  const certPem = readFileSync(certPath, "utf8");
  const keyPem = readFileSync(keyPath, "utf8");
  const pemFile = join(dir, `${prefix}.pem`);
  writeFileSync(pemFile, `${keyPem.trimEnd()}\n${certPem.trimEnd()}\n`, { mode: 0o600 });
  const der = new X509Certificate(certPem).raw;
  return {
    certPem,
    keyPem,
    pemFile,
    thumbprintSha1Hex: createHash("sha1").update(der).digest("hex").toUpperCase(),
    thumbprintSha256Hex: createHash("sha256").update(der).digest("hex").toUpperCase(),
  };
}
