/**
 * The static identity provider: a directory kept in one YAML or JSON file, read again on every
 * `snapshot()` (edit the file, the next sync sees it). For small installations, tests and the
 * demo. A `.json` file is read as JSON, anything else as YAML.
 *
 * ```yaml
 * users:
 *   # id: the directory key that groups refer to. attributes: string → string, read by the
 *   # user mapping ({uid}, {attr:mail}); default { uid: <id> }. enabled: default true.
 *   - { id: alice, attributes: { uid: alice, mail: alice@example.org, cn: Alice Liddell } }
 *   - { id: frank, enabled: false }
 *   - bob                      # shorthand for { id: bob, attributes: { uid: bob } }
 * groups:
 *   # name: what the naming convention reads, default the id. members: user ids, or
 *   # "group:<id>" for a nested group. owners: optional (Graph-style owners), same syntax.
 *   # incomplete: optional; marks the group as not completely read, with this reason
 *   # (simulates a failed directory read: rooms fed by it get no removals).
 *   - id: engineers
 *     members: [alice, bob, "group:eng-leads"]
 *     owners: [carol]
 *   - { id: eng-leads, members: [carol], incomplete: "simulated page limit" }
 * ```
 *
 * Unknown keys are errors. Errors name the file and the JSON pointer of the offending value
 * (`directory.yaml: /groups/3/members/1: ...`). Duplicate user or group ids are errors. A member
 * or owner that is neither a known user nor a known group is left out with a note in the
 * snapshot's `notes`; it does not fail the read.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { parseDocument } from "yaml";
import { z } from "zod";
import { describeError, fail, ok, type Result } from "../result.ts";
import type { DirectoryGroup, DirectorySnapshot, DirectoryUser, IdentityProvider, MemberRef } from "./types.ts";

const GROUP_PREFIX = "group:";
const MAX_ISSUES = 20;

const userSchema = z.preprocess(
  (value) => (typeof value === "string" ? { id: value } : value),
  z.strictObject({
    id: z.string().min(1),
    attributes: z.record(z.string(), z.string()).optional(),
    enabled: z.boolean().optional(),
  }),
);

const refSchema = z.string().min(1);

const groupSchema = z.strictObject({
  id: z.string().min(1),
  name: z.string().min(1).optional(),
  members: z.array(refSchema).nullish(),
  owners: z.array(refSchema).nullish(),
  incomplete: z.string().min(1).optional(),
});

const fileSchema = z.strictObject({
  users: z.array(userSchema).nullish(),
  groups: z.array(groupSchema).nullish(),
});

type DirectoryFile = z.infer<typeof fileSchema>;

export class StaticIdentityProvider implements IdentityProvider {
  readonly kind = "static";
  readonly #path: string;

  constructor(path: string) {
    this.#path = path;
  }

  /** The file's SHA-256: a change of the file, any change, is a change of the directory. */
  async changeMarker(): Promise<Result<string | undefined>> {
    try {
      return ok(createHash("sha256").update(await readFile(this.#path)).digest("hex"));
    } catch (err) {
      return fail(`${this.#path}: cannot read the directory file: ${describeError(err)}`, { cause: err });
    }
  }

  async snapshot(): Promise<Result<DirectorySnapshot>> {
    let text: string;
    try {
      text = await readFile(this.#path, "utf8");
    } catch (err) {
      return fail(`${this.#path}: cannot read the directory file: ${describeError(err)}`, { cause: err });
    }
    return parseDirectory(text, this.#path);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Parses the text of a directory file; `file` names it in messages and picks the format. */
export function parseDirectory(text: string, file: string): Result<DirectorySnapshot> {
  let data: unknown;
  if (file.toLowerCase().endsWith(".json")) {
    try {
      data = JSON.parse(text);
    } catch (err) {
      return fail(`${file}: not valid JSON: ${describeError(err)}`);
    }
  } else {
    const doc = parseDocument(text, { prettyErrors: true });
    const error = doc.errors[0];
    if (error !== undefined) return fail(`${file}: not valid YAML: ${error.message.trim()}`);
    try {
      data = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      return fail(`${file}: not valid YAML: ${describeError(err)}`);
    }
  }
  if (data === null || data === undefined) return fail(`${file}: the file is empty (expected users and groups)`);

  const parsed = fileSchema.safeParse(data);
  if (!parsed.success) return fail(formatIssues(file, parsed.error.issues));
  return build(parsed.data, file);
}

function build(data: DirectoryFile, file: string): Result<DirectorySnapshot> {
  const problems: string[] = [];
  const notes: string[] = [];

  const users = new Map<string, DirectoryUser>();
  const userAt = new Map<string, number>();
  (data.users ?? []).forEach((entry, i) => {
    const first = userAt.get(entry.id);
    if (first !== undefined) {
      problems.push(`${file}: /users/${i}/id: duplicate user id ${JSON.stringify(entry.id)} (first at /users/${first})`);
      return;
    }
    userAt.set(entry.id, i);
    users.set(entry.id, {
      id: entry.id,
      attributes: entry.attributes ?? { uid: entry.id },
      enabled: entry.enabled ?? true,
    });
  });

  const groupAt = new Map<string, number>();
  const entries = data.groups ?? [];
  entries.forEach((entry, i) => {
    const first = groupAt.get(entry.id);
    if (first !== undefined) {
      problems.push(`${file}: /groups/${i}/id: duplicate group id ${JSON.stringify(entry.id)} (first at /groups/${first})`);
      return;
    }
    groupAt.set(entry.id, i);
  });
  if (problems.length > 0) return fail(limit(problems));

  const groups = new Map<string, DirectoryGroup>();
  entries.forEach((entry, i) => {
    if (groupAt.get(entry.id) !== i) return;
    const name = entry.name ?? entry.id;
    const refs = (list: readonly string[], what: "member" | "owner"): MemberRef[] => {
      const out: MemberRef[] = [];
      const seen = new Set<string>();
      for (const raw of list) {
        const ref = resolveRef(raw, users, groupAt);
        if (typeof ref === "string") {
          notes.push(`group ${name}: ${what} ${raw} ${ref}`);
          continue;
        }
        const key = `${ref.kind}:${ref.id}`;
        if (seen.has(key)) continue;
        seen.add(key);
        out.push(ref);
      }
      return out;
    };
    const group: DirectoryGroup = {
      id: entry.id,
      name,
      members: refs(entry.members ?? [], "member"),
      ...(entry.owners !== undefined && entry.owners !== null ? { owners: refs(entry.owners, "owner") } : {}),
      complete: entry.incomplete === undefined,
      ...(entry.incomplete !== undefined ? { incompleteReason: entry.incomplete } : {}),
    };
    groups.set(entry.id, group);
  });

  return ok({ groups, users, notes });
}

/** A reference, or why it is left out. */
function resolveRef(
  raw: string,
  users: ReadonlyMap<string, DirectoryUser>,
  groups: ReadonlyMap<string, number>,
): MemberRef | string {
  if (raw.startsWith(GROUP_PREFIX)) {
    const id = raw.slice(GROUP_PREFIX.length);
    return groups.has(id) ? { kind: "group", id } : "is not a known group";
  }
  if (users.has(raw)) return { kind: "user", id: raw };
  if (groups.has(raw)) return `is not a user (write "${GROUP_PREFIX}${raw}" for the nested group)`;
  return "is neither a user nor a group";
}

function formatIssues(file: string, issues: readonly z.core.$ZodIssue[]): string {
  const lines: string[] = [];
  for (const issue of issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) lines.push(`${file}: ${pointer([...issue.path, key])}: unknown key`);
    } else {
      lines.push(`${file}: ${pointer(issue.path)}: ${issue.message}`);
    }
  }
  return limit(lines);
}

function limit(lines: readonly string[]): string {
  if (lines.length <= MAX_ISSUES) return lines.join("\n");
  return [...lines.slice(0, MAX_ISSUES), `(and ${lines.length - MAX_ISSUES} more problems)`].join("\n");
}

/** RFC 6901 JSON pointer; "/" for the document itself. */
function pointer(path: readonly PropertyKey[]): string {
  if (path.length === 0) return "/";
  return path.map((p) => "/" + String(p).replaceAll("~", "~0").replaceAll("/", "~1")).join("");
}
