/**
 * Keeps the deployment files honest without Docker: docker-compose.yml, Dockerfile,
 * .dockerignore, deploy/config.yaml, deploy/secrets/README.md and docs/DEPLOY.md are read
 * and checked against each other, against the config schema and loader, and against
 * package.json.
 *
 * Every check is a function from the parsed files to a list of problems. The real files
 * must give none; the "catches" tests feed each check a broken copy to show it can fail.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { isAbsolute, join, posix, relative, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse, parseDocument } from "yaml";
import { formatConfigError, loadConfig } from "../../src/config/load.ts";
import { ENV_SETTINGS } from "../../src/config/env.ts";
import { CONFIG_PATH_ENV, SECRET_FIELDS, type Config } from "../../src/config/schema.ts";

const root = resolve(import.meta.dirname, "../..");
const SERVICE = "matrix-group-sync";
/** Variables the schema does not list that the service may still be given. */
const STANDARD_ENV = ["NODE_ENV", "TZ", "NODE_OPTIONS", "NODE_EXTRA_CA_CERTS"];
/** Folders (and files) whose imports run in production. */
const RUNTIME_CODE = ["src", "migrations", "bin"];

// ---------------------------------------------------------------------------------------
// The files, parsed.
// ---------------------------------------------------------------------------------------

type EnvBlock = Record<string, string | number | boolean | null> | string[];
type VolumeEntry = string | { type?: string; source?: string; target: string; read_only?: boolean };
type SecretRef = string | { source: string; target?: string };
type PortEntry = string | number | { target: number; published?: string | number; host_ip?: string };

interface ComposeService {
  image?: string;
  build?: string | { context?: string; dockerfile?: string };
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: EnvBlock;
  env_file?: unknown;
  volumes?: VolumeEntry[];
  secrets?: SecretRef[];
  tmpfs?: string | string[];
  ports?: PortEntry[];
  healthcheck?: { test?: string | string[]; disable?: boolean };
  depends_on?: string[] | Record<string, { condition?: string; required?: boolean }>;
  profiles?: string[];
}

interface Compose {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
  secrets?: Record<string, { file?: string; environment?: string; external?: boolean }>;
}

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

interface Stage {
  readonly from: string;
  readonly name: string | undefined;
  readonly instructions: Instruction[];
}

interface PackageJson {
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

interface PackageLock {
  packages: Record<string, { dependencies?: Record<string, string>; dev?: boolean; link?: boolean }>;
}

interface Deployment {
  compose: Compose;
  stages: Stage[];
  dockerignore: string[];
  docs: string;
  pkg: PackageJson;
  lock: PackageLock;
}

function read(file: string): string {
  return readFileSync(join(root, file), "utf8");
}

function loadDeployment(): Deployment {
  return {
    compose: parse(read("docker-compose.yml")) as Compose,
    stages: parseDockerfile(read("Dockerfile")),
    dockerignore: read(".dockerignore")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#")),
    docs: read("docs/DEPLOY.md"),
    pkg: JSON.parse(read("package.json")) as PackageJson,
    lock: JSON.parse(read("package-lock.json")) as PackageLock,
  };
}

/** Dockerfile → stages with their instructions (continuations joined, comments dropped). */
function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (/^\s*#/.test(line) || (pending === "" && line.trim() === "")) continue;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = (pending + line).trim();
    pending = "";
    const m = /^(\S+)\s*([\s\S]*)$/.exec(full);
    if (m === null) continue;
    const keyword = (m[1] ?? "").toUpperCase();
    const args = (m[2] ?? "").replace(/\s+/g, " ").trim();
    if (keyword === "FROM") {
      const f = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      stages.push({ from: f?.[1] ?? args, name: f?.[2], instructions: [] });
    } else {
      stages.at(-1)?.instructions.push({ keyword, args }); // ARGs before the first FROM are dropped
    }
  }
  return stages;
}

/** `COPY [--from=x] [--chown=..] src... dest` → flags, sources (normalised), dest. */
function copyArgs(args: string): { from: string | undefined; sources: string[]; dest: string } {
  const words = args.startsWith("[") ? [] : args.split(" ");
  const flags = words.filter((w) => w.startsWith("--"));
  const paths = args.startsWith("[") ? (JSON.parse(args) as string[]) : words.filter((w) => !w.startsWith("--"));
  const from = flags.find((f) => f.startsWith("--from="))?.slice("--from=".length);
  return { from, sources: paths.slice(0, -1).map(normalisePath), dest: paths.at(-1) ?? "" };
}

function normalisePath(p: string): string {
  return posix.normalize(p).replace(/^\.\//, "").replace(/\/$/, "");
}

/** `ENV A=1 B="x y"` or `ENV A 1`. */
function envArgs(args: string): [string, string][] {
  if (!/^\S+=/.test(args)) {
    const [key = "", ...rest] = args.split(" ");
    return [[key, rest.join(" ")]];
  }
  return [...args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|'[^']*'|\S*)/g)].map((m) => {
    const value = m[2] ?? "";
    return [m[1] ?? "", /^["']/.test(value) ? value.slice(1, -1) : value];
  });
}

function execForm(args: string): string[] | undefined {
  if (!args.startsWith("[")) return undefined;
  try {
    return JSON.parse(args) as string[];
  } catch {
    return undefined;
  }
}

function finalStage(d: Deployment): Stage {
  const stage = d.stages.at(-1);
  if (stage === undefined) throw new Error("the Dockerfile has no FROM");
  return stage;
}

function instructions(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((i) => i.keyword === keyword);
}

/** The image's environment: ENV of the final stage. */
function imageEnv(d: Deployment): Map<string, string> {
  return new Map(instructions(finalStage(d), "ENV").flatMap((i) => envArgs(i.args)));
}

function service(d: Deployment, name = SERVICE): ComposeService {
  const svc = d.compose.services[name];
  if (svc === undefined) throw new Error(`docker-compose.yml has no service ${name}`);
  return svc;
}

function environmentOf(svc: ComposeService): Map<string, string> {
  const env = svc.environment;
  if (env === undefined) return new Map();
  if (Array.isArray(env)) {
    return new Map(
      env.map((entry): [string, string] => {
        const at = entry.indexOf("=");
        return at < 0 ? [entry, ""] : [entry.slice(0, at), entry.slice(at + 1)];
      }),
    );
  }
  return new Map(Object.entries(env).map(([k, v]): [string, string] => [k, v === null ? "" : String(v)]));
}

interface Mount {
  readonly kind: "bind" | "volume" | "secret" | "tmpfs";
  readonly target: string;
  /** bind: a host path (relative to the compose file); volume: its name (undefined: anonymous); secret: its name. */
  readonly source: string | undefined;
  readonly readOnly: boolean;
}

function mountsOf(svc: ComposeService): Mount[] {
  const out: Mount[] = [];
  for (const v of svc.volumes ?? []) {
    if (typeof v === "string") {
      const parts = v.split(":");
      if (parts.length === 1) {
        out.push({ kind: "volume", target: parts[0] ?? "", source: undefined, readOnly: false });
        continue;
      }
      const [source = "", target = "", mode = ""] = parts;
      const bind = /^[./~]/.test(source);
      out.push({ kind: bind ? "bind" : "volume", target, source, readOnly: mode.split(",").includes("ro") });
    } else {
      const kind = v.type === "bind" ? "bind" : v.type === "tmpfs" ? "tmpfs" : "volume";
      out.push({ kind, target: v.target, source: v.source, readOnly: v.read_only === true });
    }
  }
  for (const s of svc.secrets ?? []) {
    const name = typeof s === "string" ? s : s.source;
    const target = typeof s === "string" ? undefined : s.target;
    const path = target === undefined ? `/run/secrets/${name}` : target.startsWith("/") ? target : `/run/secrets/${target}`;
    out.push({ kind: "secret", target: path, source: name, readOnly: true });
  }
  const tmpfs = svc.tmpfs === undefined ? [] : Array.isArray(svc.tmpfs) ? svc.tmpfs : [svc.tmpfs];
  for (const t of tmpfs) out.push({ kind: "tmpfs", target: t.split(":")[0] ?? t, source: undefined, readOnly: false });
  return out;
}

/** The mount a container path lies in (the deepest one). */
function mountOf(path: string, mounts: readonly Mount[]): Mount | undefined {
  const p = posix.normalize(path);
  return mounts
    .filter((m) => p === m.target || p.startsWith(m.target.endsWith("/") ? m.target : `${m.target}/`))
    .sort((a, b) => b.target.length - a.target.length)[0];
}

function healthUrl(command: string): { port: number; path: string } | undefined {
  const m = /http:\/\/(?:127\.0\.0\.1|localhost):(\d+)(\/[\w./-]*)/.exec(command);
  return m === null ? undefined : { port: Number(m[1]), path: m[2] ?? "" };
}

function composeHealthcheck(svc: ComposeService): string[] {
  const test = svc.healthcheck?.test;
  if (test === undefined) return [];
  return typeof test === "string" ? ["CMD-SHELL", test] : test;
}

function dockerHealthcheck(d: Deployment): string[] | undefined {
  const hc = instructions(finalStage(d), "HEALTHCHECK").at(-1);
  if (hc === undefined) return undefined;
  const m = /(?:^|\s)CMD\s+(.*)$/.exec(hc.args);
  if (m === null) return undefined;
  const exec = execForm(m[1] ?? "");
  return exec === undefined ? ["CMD-SHELL", m[1] ?? ""] : ["CMD", ...exec];
}

/** The image's command line, as compose runs it: ENTRYPOINT + (compose command ?? CMD). */
function commandLine(d: Deployment): string[] {
  const svc = service(d);
  const entrypoint = execForm(instructions(finalStage(d), "ENTRYPOINT").at(-1)?.args ?? "") ?? [];
  const cmd =
    svc.command === undefined
      ? (execForm(instructions(finalStage(d), "CMD").at(-1)?.args ?? "") ?? [])
      : typeof svc.command === "string"
        ? svc.command.split(" ")
        : svc.command;
  return [...entrypoint, ...cmd];
}

/** Where the service reads its config inside the container: --config, else MGS_CONFIG. */
function containerConfigPath(d: Deployment): string | undefined {
  const line = commandLine(d);
  const at = line.indexOf("--config");
  if (at >= 0) return line[at + 1];
  const inline = line.find((a) => a.startsWith("--config="));
  if (inline !== undefined) return inline.slice("--config=".length);
  return effectiveEnv(d).get(CONFIG_PATH_ENV);
}

/** The container's environment: the image's ENV, then the compose service's. */
function effectiveEnv(d: Deployment): Map<string, string> {
  return new Map([...imageEnv(d), ...environmentOf(service(d))]);
}

function workdir(d: Deployment): string {
  return instructions(finalStage(d), "WORKDIR").at(-1)?.args ?? "/";
}

function containerPath(p: string, base: string): string {
  return posix.isAbsolute(p) ? posix.normalize(p) : posix.join(base, p);
}

function parsePort(p: PortEntry): { hostIp: string | undefined; published: string | undefined; target: number } {
  if (typeof p === "number") return { hostIp: undefined, published: undefined, target: p };
  if (typeof p === "object") {
    return { hostIp: p.host_ip, published: p.published === undefined ? undefined : String(p.published), target: p.target };
  }
  const spec = p.replace(/\/(tcp|udp|sctp)$/, "");
  const m = /^(?:(\[[^\]]+\]|[^:]+):)?(?:([^:]*):)?(\d+)$/.exec(spec);
  if (m === null) return { hostIp: undefined, published: undefined, target: NaN };
  // "a:b:c" → ip a, host b; "a:b" → host a; "c" → container only.
  const [, first, second, target] = m;
  if (second !== undefined) return { hostIp: first?.replace(/^\[|\]$/g, ""), published: second, target: Number(target) };
  return { hostIp: undefined, published: first, target: Number(target) };
}

// ---------------------------------------------------------------------------------------
// The checks. Each returns the problems it finds.
// ---------------------------------------------------------------------------------------

const KNOWN_ENV = new Set<string>([
  CONFIG_PATH_ENV,
  ...ENV_SETTINGS.map((o) => o.env),
  ...SECRET_FIELDS.flatMap((s) => [s.env, s.fileEnv]),
  ...STANDARD_ENV,
]);
const INLINE_SECRET_ENV = new Set(SECRET_FIELDS.map((s) => s.env));

/** The service gets only variables the config loader knows, and secrets only as files. */
function checkEnvironment(d: Deployment): string[] {
  const problems: string[] = [];
  const svc = service(d);
  if (svc.env_file !== undefined) problems.push(`${SERVICE}: env_file cannot be checked; list variables under environment`);
  const sources: [string, Map<string, string>][] = [
    ["docker-compose.yml", environmentOf(svc)],
    ["Dockerfile ENV", imageEnv(d)],
  ];
  for (const [where, env] of sources) {
    for (const [name, value] of env) {
      if (!KNOWN_ENV.has(name)) problems.push(`${where}: ${name} is not a variable the config knows (src/config/schema.ts)`);
      if (INLINE_SECRET_ENV.has(name)) problems.push(`${where}: ${name} puts a secret in the environment; use ${name}_FILE and a compose secret`);
      if (value.includes("${")) problems.push(`${where}: ${name} uses interpolation (${value}); the checks cannot follow it`);
    }
  }
  return problems;
}

/** Host paths mounted into any service exist; secret files are documented where they live. */
function checkHostPaths(d: Deployment): string[] {
  const problems: string[] = [];
  for (const [name, svc] of Object.entries(d.compose.services)) {
    for (const m of mountsOf(svc)) {
      if (m.kind === "bind" && !existsSync(resolve(root, m.source ?? ""))) problems.push(`${name}: mounted ${m.source ?? "?"} does not exist`);
      if (m.kind === "volume" && m.source !== undefined && !Object.hasOwn(d.compose.volumes ?? {}, m.source))
        problems.push(`${name}: volume ${m.source} is not declared under volumes:`);
      if (m.kind === "volume" && m.source === undefined) problems.push(`${name}: ${m.target} is an anonymous volume; name it`);
      if (m.kind === "secret" && !Object.hasOwn(d.compose.secrets ?? {}, m.source ?? ""))
        problems.push(`${name}: secret ${m.source ?? "?"} is not declared under secrets:`);
    }
  }
  for (const [name, secret] of Object.entries(d.compose.secrets ?? {})) {
    if (secret.file === undefined) {
      problems.push(`secret ${name}: not a file (file: ./deploy/secrets/...)`);
      continue;
    }
    const file = resolve(root, secret.file);
    const readme = join(file, "..", "README.md");
    if (!existsSync(readme)) problems.push(`secret ${name}: ${relative(root, readme)} (how to create ${secret.file}) is missing`);
    else if (!readFileSync(readme, "utf8").includes(`\`${posix.basename(secret.file)}\``))
      problems.push(`secret ${name}: ${relative(root, readme)} does not explain ${posix.basename(secret.file)}`);
  }
  return problems;
}

/** Every variable ending in _FILE that holds a path points into a mount of its service. */
function checkFileVariables(d: Deployment): string[] {
  const problems: string[] = [];
  for (const [name, svc] of Object.entries(d.compose.services)) {
    const mounts = mountsOf(svc);
    for (const [variable, value] of environmentOf(svc)) {
      if (!variable.endsWith("_FILE") || value === "") continue;
      const path = containerPath(value, name === SERVICE ? workdir(d) : "/");
      if (mountOf(path, mounts) === undefined) problems.push(`${name}: ${variable}=${value} is not inside a mount or secret of the service`);
    }
  }
  return problems;
}

/** Published ports are bound to the host's loopback only. */
function checkPorts(d: Deployment): string[] {
  const problems: string[] = [];
  for (const [name, svc] of Object.entries(d.compose.services)) {
    for (const p of svc.ports ?? []) {
      const { hostIp } = parsePort(p);
      if (hostIp !== "127.0.0.1") problems.push(`${name}: port ${JSON.stringify(p)} is not bound to 127.0.0.1`);
    }
  }
  return problems;
}

/** depends_on waits for health, of services that have a healthcheck and always run. */
function checkDependsOn(d: Deployment): string[] {
  const problems: string[] = [];
  for (const [name, svc] of Object.entries(d.compose.services)) {
    const deps = svc.depends_on;
    if (deps === undefined) continue;
    if (Array.isArray(deps)) {
      problems.push(`${name}: depends_on ${deps.join(", ")} does not wait for health (use condition: service_healthy)`);
      continue;
    }
    for (const [target, spec] of Object.entries(deps)) {
      const other = d.compose.services[target];
      if (spec.condition !== "service_healthy") problems.push(`${name}: depends_on ${target} without condition: service_healthy`);
      if (other === undefined) problems.push(`${name}: depends_on ${target}, which is not a service`);
      else {
        if (composeHealthcheck(other).length === 0 || other.healthcheck?.disable === true)
          problems.push(`${name}: depends_on ${target}, which has no healthcheck`);
        if ((other.profiles ?? []).length > 0 && (svc.profiles ?? []).length === 0)
          problems.push(`${name}: depends_on ${target}, which runs only with a profile`);
      }
    }
  }
  for (const [name, svc] of Object.entries(d.compose.services)) {
    if (composeHealthcheck(svc).length === 0) problems.push(`${name}: no healthcheck`);
  }
  return problems;
}

/** The healthchecks (compose and Dockerfile) ask the same URL, with what the image has (node). */
function checkHealthchecks(d: Deployment): string[] {
  const problems: string[] = [];
  const composeCmd = composeHealthcheck(service(d));
  const dockerCmd = dockerHealthcheck(d);
  if (dockerCmd === undefined) return ["Dockerfile: no HEALTHCHECK ... CMD"];
  for (const [where, cmd] of [
    ["docker-compose.yml", composeCmd],
    ["Dockerfile", dockerCmd],
  ] as const) {
    if (cmd[0] !== "CMD" || cmd[1] !== "node") problems.push(`${where}: the healthcheck must run node directly (the image has no curl or wget): ${cmd.join(" ")}`);
  }
  const a = healthUrl(composeCmd.join(" "));
  const b = healthUrl(dockerCmd.join(" "));
  if (a === undefined) problems.push("docker-compose.yml: the healthcheck asks no http://127.0.0.1:PORT/PATH");
  if (b === undefined) problems.push("Dockerfile: the HEALTHCHECK asks no http://127.0.0.1:PORT/PATH");
  if (a !== undefined && b !== undefined) {
    if (a.port !== b.port || a.path !== b.path)
      problems.push(`the healthchecks disagree: compose ${a.port}${a.path}, Dockerfile ${b.port}${b.path}`);
    if (a.path !== "/healthz" && a.path !== "/readyz") problems.push(`the healthcheck asks ${a.path}; the service answers /healthz and /readyz`);
    if (!d.docs.includes(`http://127.0.0.1:${a.port}${a.path}`)) problems.push(`docs/DEPLOY.md does not mention http://127.0.0.1:${a.port}${a.path}`);
    if (!instructions(finalStage(d), "EXPOSE").some((e) => e.args.split(" ").includes(String(a.port))))
      problems.push(`Dockerfile: EXPOSE ${a.port} is missing`);
  }
  return problems;
}

/** The image: non-root, production dependencies from the lockfile, vendor/ in time, an entry point that exists. */
function checkDockerfile(d: Deployment): string[] {
  const problems: string[] = [];
  const final = finalStage(d);
  const user = instructions(final, "USER").at(-1)?.args.split(":")[0];
  if (user === undefined || user === "root" || user === "0") problems.push(`Dockerfile: the final stage runs as ${user ?? "root (no USER)"}`);

  const npmStage = d.stages.find((s) => s.instructions.some((i) => i.keyword === "RUN" && /\bnpm ci\b/.test(i.args)));
  if (npmStage === undefined) problems.push("Dockerfile: no RUN npm ci");
  for (const stage of d.stages) {
    for (const run of instructions(stage, "RUN")) {
      if (/\bnpm (install|i)\b/.test(run.args)) problems.push(`Dockerfile: "${run.args}": use npm ci (the lockfile)`);
      if (/\bnpm ci\b/.test(run.args) && !/--omit=dev\b/.test(run.args)) problems.push(`Dockerfile: "${run.args}" without --omit=dev`);
    }
  }
  // file: dependencies (vendor/) must be in the context of npm ci, and next to node_modules at run time.
  const fileDeps = Object.values(d.pkg.dependencies ?? {})
    .filter((spec) => spec.startsWith("file:"))
    .map((spec) => normalisePath(spec.slice("file:".length)).split("/")[0] ?? "");
  const copiesOf = (stage: Stage, upTo: number): string[] =>
    stage.instructions
      .slice(0, upTo)
      .filter((i) => i.keyword === "COPY" && copyArgs(i.args).from === undefined)
      .flatMap((i) => copyArgs(i.args).sources);
  const covers = (sources: readonly string[], wanted: string): boolean =>
    sources.some((s) => s === "." || s === wanted || wanted.startsWith(`${s}/`));
  if (npmStage !== undefined) {
    const at = npmStage.instructions.findIndex((i) => i.keyword === "RUN" && /\bnpm ci\b/.test(i.args));
    const before = copiesOf(npmStage, at);
    for (const wanted of ["vendor", ...fileDeps, "package.json", "package-lock.json"]) {
      if (!covers(before, wanted)) problems.push(`Dockerfile: ${wanted} is not copied before npm ci`);
    }
    if (npmStage !== final) {
      const fromDeps = instructions(final, "COPY").some((i) => {
        const c = copyArgs(i.args);
        return c.from === npmStage.name && c.sources.some((s) => s.endsWith("node_modules"));
      });
      if (!fromDeps) problems.push(`Dockerfile: the final stage does not copy node_modules from the ${npmStage.name ?? "npm ci"} stage`);
    }
  }
  const finalCopies = copiesOf(final, final.instructions.length);
  for (const wanted of ["src", "migrations", "bin", "vendor", "package.json", ...fileDeps]) {
    if (!covers(finalCopies, wanted)) problems.push(`Dockerfile: the final stage does not copy ${wanted}`);
  }

  const entrypoint = execForm(instructions(final, "ENTRYPOINT").at(-1)?.args ?? "");
  if (entrypoint === undefined) problems.push("Dockerfile: no ENTRYPOINT in exec form");
  else {
    const script = entrypoint.find((a) => /\.(c|m)?(j|t)s$/.test(a));
    if (entrypoint[0] !== "node") problems.push(`Dockerfile: ENTRYPOINT ${entrypoint.join(" ")} does not start node`);
    if (script === undefined || !existsSync(join(root, script))) problems.push(`Dockerfile: the ENTRYPOINT script ${script ?? "(none)"} is not in the repository`);
    else if (!covers(finalCopies, normalisePath(script))) problems.push(`Dockerfile: the ENTRYPOINT script ${script} is not copied`);
  }
  if (workdir(d) !== "/app") problems.push(`Dockerfile: WORKDIR is ${workdir(d)}, not /app`);
  const dataDir = imageEnv(d).get("MGS_DATA_DIR");
  if (dataDir === undefined) problems.push("Dockerfile: ENV MGS_DATA_DIR is not set");
  else if (!instructions(final, "VOLUME").some((v) => (execForm(v.args) ?? v.args.split(" ")).includes(dataDir)))
    problems.push(`Dockerfile: MGS_DATA_DIR=${dataDir} is not a VOLUME`);

  // The build context: an allow-list that admits every COPY source and nothing secret.
  const allowList = d.dockerignore[0] === "*";
  if (!allowList) problems.push(".dockerignore: start with * and list what the image needs (!src/ ...)");
  else {
    const allowed = d.dockerignore.filter((l) => l.startsWith("!")).map((l) => normalisePath(l.slice(1)));
    const sources = d.stages.flatMap((s) => instructions(s, "COPY").map((i) => copyArgs(i.args)).filter((c) => c.from === undefined).flatMap((c) => c.sources));
    for (const s of sources) if (!covers(allowed, s)) problems.push(`.dockerignore: ${s} (copied by the Dockerfile) is not let in`);
    for (const a of allowed) if (a === "deploy" || a.startsWith("deploy/secrets") || a === ".") problems.push(`.dockerignore: !${a} lets secrets into the build context`);
  }
  return problems;
}

function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return e.name === "node_modules" ? [] : walk(p);
    return /\.(c|m)?(t|j)s$/.test(e.name) && !/\.d\.ts$/.test(e.name) ? [p] : [];
  });
}

/** Bare specifiers a file loads at run time (type-only imports excluded). */
function runtimeImports(source: string): string[] {
  const specs = [
    ...source.matchAll(/^\s*(?:import|export)\s+(?!type\s)[^'"`;]*?\sfrom\s*["']([^"']+)["']/gm),
    ...source.matchAll(/^\s*import\s*["']([^"']+)["']/gm),
    ...source.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g),
  ].map((m) => m[1] ?? "");
  return specs.filter((s) => s !== "" && !s.startsWith(".") && !s.startsWith("/") && !s.startsWith("node:") && !builtinModules.includes(s.split("/")[0] ?? ""));
}

function packageName(specifier: string): string {
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] ?? specifier);
}

/** Every package production code imports is a dependency (not a devDependency), in package.json and the lockfile. */
function checkDependencies(pkg: PackageJson, lock: PackageLock, imports: ReadonlyMap<string, string>): string[] {
  const problems: string[] = [];
  const deps = pkg.dependencies ?? {};
  for (const [name, file] of imports) {
    if (Object.hasOwn(deps, name)) {
      const entry = lock.packages[`node_modules/${name}`];
      if (entry === undefined) problems.push(`${name} (imported by ${file}) is not in package-lock.json: run npm install`);
      else if (entry.dev === true) problems.push(`${name} (imported by ${file}) is dev-only in package-lock.json: run npm install`);
    } else if (Object.hasOwn(pkg.devDependencies ?? {}, name)) {
      problems.push(`${name} (imported by ${file}) is in devDependencies: npm ci --omit=dev leaves it out; move it to dependencies`);
    } else {
      problems.push(`${name} (imported by ${file}) is not in package.json dependencies`);
    }
  }
  const locked = lock.packages[""]?.dependencies ?? {};
  if (JSON.stringify(Object.entries(locked).sort()) !== JSON.stringify(Object.entries(deps).sort()))
    problems.push("package-lock.json's dependencies differ from package.json's: npm ci would refuse; run npm install");
  return problems;
}

function importsOfRuntimeCode(): Map<string, string> {
  const found = new Map<string, string>();
  for (const file of RUNTIME_CODE.flatMap((d) => walk(join(root, d)))) {
    for (const spec of runtimeImports(readFileSync(file, "utf8"))) {
      const name = packageName(spec);
      if (!found.has(name)) found.set(name, relative(root, file));
    }
  }
  return found;
}

// ---------------------------------------------------------------------------------------
// The mounted config, loaded the way the container would load it.
// ---------------------------------------------------------------------------------------

const temps: string[] = [];
afterAll(() => {
  for (const t of temps) rmSync(t, { recursive: true, force: true });
});

const DUMMY_SECRET: Readonly<Record<string, string>> = {
  MGS_DATABASE_URL_FILE: "postgres://matrix_group_sync:dummy@postgres:5432/matrix_group_sync",
};

interface ContainerConfig {
  readonly config: Config | undefined;
  readonly problems: string[];
  /** Container paths the config reads or writes, with what they are. */
  readonly paths: { what: string; path: string; writable: boolean; secret: boolean }[];
}

/**
 * Loads the mounted config with the container's environment. Secret files (from *_FILE
 * variables and *File keys) are replaced by temp files with dummy content; every path is
 * translated back to where it would be inside the container.
 */
function loadContainerConfig(d: Deployment): ContainerConfig {
  const problems: string[] = [];
  const paths: ContainerConfig["paths"] = [];
  const svc = service(d);
  const mounts = mountsOf(svc);
  const target = containerConfigPath(d);
  if (target === undefined) return { config: undefined, problems: ["no --config in the command line and no MGS_CONFIG"], paths };
  const mount = mounts.find((m) => m.kind === "bind" && m.target === target);
  if (mount?.source === undefined) return { config: undefined, problems: [`the config ${target} is not a file mounted from the repository`], paths };
  if (!mount.readOnly) problems.push(`the config mount ${mount.source}:${target} is not read-only (:ro)`);
  const hostConfig = resolve(root, mount.source);
  if (!existsSync(hostConfig)) return { config: undefined, problems: [`${mount.source} does not exist`], paths };

  const tmp = mkdtempSync(join(tmpdir(), "mgs-deploy-"));
  temps.push(tmp);
  const configDir = join(tmp, "config");
  const appDir = join(tmp, "app");
  const secretsDir = join(tmp, "secrets");
  for (const dir of [configDir, appDir, secretsDir]) mkdirSync(dir, { recursive: true });
  const containerConfigDir = posix.dirname(target);
  const wd = workdir(d);
  let secretCount = 0;
  const fakeSecret = (content: string): string => {
    const file = join(secretsDir, `secret-${secretCount++}`);
    writeFileSync(file, `${content}\n`);
    return file;
  };

  // The environment, its secret files replaced.
  const env: Record<string, string> = {};
  for (const [name, value] of effectiveEnv(d)) {
    const secret = SECRET_FIELDS.find((s) => s.fileEnv === name);
    if (secret !== undefined && value !== "") {
      paths.push({ what: name, path: containerPath(value, wd), writable: false, secret: true });
      env[name] = fakeSecret(DUMMY_SECRET[name] ?? `dummy ${name}`);
    } else {
      env[name] = value;
    }
  }
  // The file, its *File secrets replaced.
  const doc = parseDocument(readFileSync(hostConfig, "utf8"));
  for (const s of SECRET_FIELDS) {
    const at = [...s.parent, s.fileKey];
    const value = doc.getIn(at);
    if (typeof value === "string") {
      paths.push({ what: at.join("."), path: containerPath(value, containerConfigDir), writable: false, secret: true });
      doc.setIn(at, fakeSecret(`dummy ${at.join(".")}`));
    }
  }
  const file = join(configDir, posix.basename(target));
  writeFileSync(file, doc.toString());

  const result = loadConfig({ path: file, env, cwd: appDir });
  if (!result.ok) return { config: undefined, problems: [...problems, ...result.errors.map(formatConfigError)], paths };
  const toContainer = (p: string): string => {
    for (const [host, inside] of [
      [configDir, containerConfigDir],
      [appDir, wd],
    ] as const) {
      const rel = relative(host, p);
      if (rel === "" || (!rel.startsWith("..") && !isAbsolute(rel))) return posix.join(inside, ...rel.split(/[\\/]/));
    }
    return p;
  };
  const config = result.config;
  paths.push({ what: "dataDir", path: toContainer(config.dataDir), writable: true, secret: false });
  const idp = config.idp;
  if (idp.kind === "static") paths.push({ what: "idp.static.file", path: toContainer(idp.static.file), writable: false, secret: false });
  if (idp.kind === "ldap" && idp.ldap.caFile !== undefined) paths.push({ what: "idp.ldap.caFile", path: toContainer(idp.ldap.caFile), writable: false, secret: false });
  if (idp.kind === "azure" && idp.azure.certificateFile !== undefined)
    paths.push({ what: "idp.azure.certificateFile", path: toContainer(idp.azure.certificateFile), writable: false, secret: false });
  return { config, problems, paths };
}

/** Every path the config uses is inside a mount of the service: data in a named volume, secrets in secrets. */
function checkContainerConfig(d: Deployment, loaded: ContainerConfig): string[] {
  const problems = [...loaded.problems];
  const mounts = mountsOf(service(d));
  for (const p of loaded.paths) {
    const m = mountOf(p.path, mounts);
    if (m === undefined) problems.push(`${p.what} (${p.path}) is not inside a volume, mount or secret of ${SERVICE}`);
    else if (p.secret && m.kind !== "secret") problems.push(`${p.what} (${p.path}) is a secret but lies in a ${m.kind} mount, not a compose secret`);
    else if (p.writable && (m.kind !== "volume" || m.readOnly)) problems.push(`${p.what} (${p.path}) must be in a writable named volume, not a ${m.kind}${m.readOnly ? " (read-only)" : ""}`);
  }
  const config = loaded.config;
  if (config === undefined) return problems;

  // serve: the HTTP endpoints the healthcheck and the published port reach.
  const http = config.serve?.http;
  const hc = healthUrl(composeHealthcheck(service(d)).join(" "));
  if (config.serve === undefined) problems.push("the config has no serve section (the image runs serve)");
  else if (http === undefined || !http.enabled) problems.push("serve.http is disabled: the healthcheck has nothing to ask");
  else {
    if (hc !== undefined && hc.port !== http.port) problems.push(`the healthcheck asks port ${hc.port}, serve.http.port is ${http.port}`);
    if (!["0.0.0.0", "::", "127.0.0.1"].includes(http.address)) problems.push(`serve.http.address ${http.address} is not reachable on 127.0.0.1 inside the container`);
    const published = (service(d).ports ?? []).map(parsePort).filter((p) => p.target === http.port);
    if (published.length > 0 && http.address === "127.0.0.1")
      problems.push("serve.http.address is 127.0.0.1: the published port cannot reach it from outside the container (use 0.0.0.0)");
  }
  // The database and the directory are the compose services that run alongside.
  const dependsOn = Object.keys(service(d).depends_on ?? {});
  if (dependsOn.includes("postgres") && config.database === undefined) problems.push("the service depends on postgres but the config has no database (MGS_DATABASE_URL_FILE)");
  if (config.idp.kind === "ldap") {
    const host = /^ldaps?:\/\/([^:/]+)/.exec(config.idp.ldap.url)?.[1] ?? "";
    if (!host.includes(".") && host !== "localhost" && !Object.hasOwn(d.compose.services, host))
      problems.push(`idp.ldap.url names host ${host}, which is not a compose service`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------

const real = loadDeployment();
const mutate = (change: (d: Deployment) => void): Deployment => {
  const copy = structuredClone(real);
  change(copy);
  return copy;
};

describe("docker-compose.yml", () => {
  it("gives the service only variables the config knows, secrets only as files", () => {
    expect(checkEnvironment(real)).toEqual([]);
    expect(environmentOf(service(real)).size).toBeGreaterThan(0);
  });

  it("mounts host paths that exist; secret folders explain their files", () => {
    expect(checkHostPaths(real)).toEqual([]);
  });

  it("points every *_FILE variable into a mount or secret of its service", () => {
    expect(checkFileVariables(real)).toEqual([]);
  });

  it("publishes ports on 127.0.0.1 only", () => {
    expect(checkPorts(real)).toEqual([]);
  });

  it("waits for healthy dependencies; every service has a healthcheck", () => {
    expect(checkDependsOn(real)).toEqual([]);
    expect(Object.keys(service(real).depends_on ?? {})).toContain("postgres");
  });

  it("healthchecks agree with each other, the Dockerfile and docs/DEPLOY.md", () => {
    expect(checkHealthchecks(real)).toEqual([]);
  });

  it("mounts a config that loads, with every path it uses inside a mount", () => {
    const loaded = loadContainerConfig(real);
    expect(checkContainerConfig(real, loaded)).toEqual([]);
    expect(loaded.config?.database).toBeDefined();
    expect(loaded.paths.map((p) => p.what)).toEqual(expect.arrayContaining(["dataDir", "MGS_DATABASE_URL_FILE", "MGS_HOMESERVER_ACCESS_TOKEN_FILE"]));
  });

  it("has an ldap profile whose sample directory follows the naming convention", () => {
    const ldap = Object.entries(real.compose.services).filter(([, s]) => (s.profiles ?? []).includes("ldap"));
    expect(ldap.map(([name]) => name)).toEqual(["openldap"]);
    const ldifDir = mountsOf(ldap[0]![1]).find((m) => m.kind === "bind")?.source ?? "";
    const ldifs = readdirSync(resolve(root, ldifDir)).filter((f) => f.endsWith(".ldif"));
    expect(ldifs.length).toBeGreaterThan(0);
    const text = ldifs.map((f) => readFileSync(join(resolve(root, ldifDir), f), "utf8")).join("\n");
    const groups = [...text.matchAll(/^dn: cn=([^,]+),ou=groups,/gm)].map((m) => m[1]);
    expect(groups.some((g) => /^xxx[^x]\w*xxx[\w.]+$/.test(g ?? ""))).toBe(true);
    expect(groups.some((g) => g?.endsWith("_owners"))).toBe(true);
    // Every member is an entry of the file (nesting included).
    const dns = new Set([...text.matchAll(/^dn: (.+)$/gm)].map((m) => (m[1] ?? "").toLowerCase()));
    const members = [...text.matchAll(/^member: (.+)$/gm)].map((m) => (m[1] ?? "").toLowerCase());
    expect(members.filter((m) => !dns.has(m))).toEqual([]);
    expect(members.some((m) => m.includes("ou=groups"))).toBe(true);
  });
});

describe("Dockerfile", () => {
  it("runs as non-root, installs production dependencies with npm ci after copying vendor/, starts an entry point that exists", () => {
    expect(checkDockerfile(real)).toEqual([]);
    expect(commandLine(real)).toEqual(["node", "bin/matrix-group-sync.js", "serve", "--config", "/config/config.yaml"]);
  });
});

describe("package.json", () => {
  it("lists every package production code imports under dependencies, so npm ci --omit=dev is enough", () => {
    const imports = importsOfRuntimeCode();
    expect([...imports.keys()]).toEqual(expect.arrayContaining(["zod", "yaml", "ldapts", "kysely", "matrix-bot-sdk"]));
    expect(checkDependencies(real.pkg, real.lock, imports)).toEqual([]);
  });
});

describe("the checks catch", () => {
  it("a misspelt or unknown variable, and an inline secret", () => {
    const typo = mutate((d) => {
      const env = service(d).environment as Record<string, string>;
      env["MGS_DATABSE_URL_FILE"] = env["MGS_DATABASE_URL_FILE"] ?? "";
      delete env["MGS_DATABASE_URL_FILE"];
    });
    expect(checkEnvironment(typo)).toEqual([expect.stringContaining("MGS_DATABSE_URL_FILE is not a variable the config knows")]);
    const inline = mutate((d) => {
      (service(d).environment as Record<string, string>)["MGS_HOMESERVER_ACCESS_TOKEN"] = "syt_x";
    });
    expect(checkEnvironment(inline).join("\n")).toContain("puts a secret in the environment");
    const dockerEnv = mutate((d) => finalStage(d).instructions.push({ keyword: "ENV", args: "MGS_DATADIR=/data" }));
    expect(checkEnvironment(dockerEnv).join("\n")).toContain("Dockerfile ENV: MGS_DATADIR");
  });

  it("a mount from a path that does not exist, an undeclared secret, a secret folder without README", () => {
    const missing = mutate((d) => {
      service(d).volumes = ["./deploy/no-such-config.yaml:/config/config.yaml:ro", "mgs-data:/data"];
    });
    expect(checkHostPaths(missing).join("\n")).toContain("no-such-config.yaml does not exist");
    const undeclared = mutate((d) => service(d).secrets?.push("nope"));
    expect(checkHostPaths(undeclared).join("\n")).toContain("secret nope is not declared");
    const noReadme = mutate((d) => {
      d.compose.secrets = { ...d.compose.secrets, extra: { file: "./deploy/openldap/extra" } };
    });
    expect(checkHostPaths(noReadme).join("\n")).toContain("README.md");
  });

  it("a secret file variable outside every mount", () => {
    const d = mutate((d) => {
      (service(d).environment as Record<string, string>)["MGS_IDP_LDAP_BIND_PASSWORD_FILE"] = "/etc/ldap-password";
    });
    expect(checkFileVariables(d)).toEqual([expect.stringContaining("MGS_IDP_LDAP_BIND_PASSWORD_FILE=/etc/ldap-password")]);
    expect(checkContainerConfig(d, loadContainerConfig(d)).join("\n")).toContain("MGS_IDP_LDAP_BIND_PASSWORD_FILE (/etc/ldap-password) is not inside");
  });

  it("a data folder outside a named volume, and a config that does not load", () => {
    const d = mutate((d) => {
      (service(d).environment as Record<string, string>)["MGS_DATA_DIR"] = "/var/lib/mgs";
    });
    expect(checkContainerConfig(d, loadContainerConfig(d)).join("\n")).toContain("dataDir (/var/lib/mgs) is not inside");
    const bad = mutate((d) => {
      (service(d).environment as Record<string, string>)["MGS_LOG_LEVEL"] = "loud";
    });
    expect(checkContainerConfig(bad, loadContainerConfig(bad)).join("\n")).toContain("/log/level");
    const unmounted = mutate((d) => {
      service(d).volumes = ["mgs-data:/data"];
    });
    expect(loadContainerConfig(unmounted).problems.join("\n")).toContain("not a file mounted from the repository");
  });

  it("a port published on every interface", () => {
    for (const port of ["9090:9090", "9090", "0.0.0.0:9090:9090", { target: 9090, published: 9090 }] as PortEntry[]) {
      const d = mutate((d) => {
        service(d).ports = [port];
      });
      expect(checkPorts(d)).toHaveLength(1);
    }
  });

  it("depends_on without health, or on a profile-only service", () => {
    const plain = mutate((d) => {
      service(d).depends_on = ["postgres"];
    });
    expect(checkDependsOn(plain).join("\n")).toContain("does not wait for health");
    const started = mutate((d) => {
      service(d).depends_on = { postgres: { condition: "service_started" } };
    });
    expect(checkDependsOn(started).join("\n")).toContain("without condition: service_healthy");
    const profiled = mutate((d) => {
      service(d).depends_on = { postgres: { condition: "service_healthy" }, openldap: { condition: "service_healthy" } };
    });
    expect(checkDependsOn(profiled).join("\n")).toContain("runs only with a profile");
  });

  it("healthchecks that disagree, or need curl", () => {
    const port = mutate((d) => {
      service(d).healthcheck = { test: ["CMD", "node", "-e", "fetch('http://127.0.0.1:9091/healthz')"] };
    });
    expect(checkHealthchecks(port).join("\n")).toContain("the healthchecks disagree");
    expect(checkContainerConfig(port, loadContainerConfig(port)).join("\n")).toContain("serve.http.port is 9090");
    const curl = mutate((d) => {
      service(d).healthcheck = { test: ["CMD", "curl", "-f", "http://127.0.0.1:9090/healthz"] };
    });
    expect(checkHealthchecks(curl).join("\n")).toContain("must run node directly");
  });

  it("a root image, npm install, vendor/ copied too late, a missing entry point, secrets in the build context", () => {
    const rootUser = mutate((d) => finalStage(d).instructions.push({ keyword: "USER", args: "root" }));
    expect(checkDockerfile(rootUser)).toEqual(["Dockerfile: the final stage runs as root"]);
    const install = mutate((d) => {
      const run = d.stages[0]!.instructions.find((i) => i.keyword === "RUN")!;
      d.stages[0]!.instructions[d.stages[0]!.instructions.indexOf(run)] = { keyword: "RUN", args: "npm install --omit=dev" };
    });
    expect(checkDockerfile(install).join("\n")).toContain("use npm ci");
    const late = mutate((d) => {
      const ins = d.stages[0]!.instructions;
      const vendor = ins.findIndex((i) => i.keyword === "COPY" && i.args.includes("vendor"));
      ins.push(...ins.splice(vendor, 1));
    });
    expect(checkDockerfile(late).join("\n")).toContain("vendor is not copied before npm ci");
    const entry = mutate((d) => finalStage(d).instructions.push({ keyword: "ENTRYPOINT", args: '["node", "bin/mgs.js"]' }));
    expect(checkDockerfile(entry).join("\n")).toContain("bin/mgs.js is not in the repository");
    const context = mutate((d) => d.dockerignore.push("!deploy/"));
    expect(checkDockerfile(context).join("\n")).toContain("lets secrets into the build context");
  });

  it("a runtime import that is only a devDependency, and a stale lockfile", () => {
    const imports = new Map([
      ["zod", "src/config/schema.ts"],
      ["tsx", "bin/matrix-group-sync.js"],
    ]);
    const pkg: PackageJson = { dependencies: { zod: "4.0.0" }, devDependencies: { tsx: "4.0.0" } };
    const lock: PackageLock = { packages: { "": { dependencies: { zod: "4.0.0" } }, "node_modules/zod": {}, "node_modules/tsx": { dev: true } } };
    expect(checkDependencies(pkg, lock, imports)).toEqual([expect.stringContaining("tsx (imported by bin/matrix-group-sync.js) is in devDependencies")]);
    const moved: PackageJson = { dependencies: { zod: "4.0.0", tsx: "4.0.0" } };
    expect(checkDependencies(moved, lock, imports).join("\n")).toContain("package-lock.json's dependencies differ");
    expect(checkDependencies(moved, lock, imports).join("\n")).toContain("tsx (imported by bin/matrix-group-sync.js) is dev-only in package-lock.json");
  });

  it("imports of every form, and not type-only ones", () => {
    const source = [
      'import { a } from "alpha";',
      'import type { B } from "beta";',
      'export { c } from "@scope/gamma/sub/path.js";',
      'import "delta";',
      'const e = await import("epsilon");',
      'import {\n  f,\n  g,\n} from "zeta";',
      'import { readFileSync } from "node:fs";',
      'import path from "path";',
      'import { h } from "./local.ts";',
    ].join("\n");
    expect(runtimeImports(source).map(packageName).sort()).toEqual(["@scope/gamma", "alpha", "delta", "epsilon", "zeta"]);
  });
});
