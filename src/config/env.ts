/**
 * Every setting from the environment. The list is derived from the config schema, so a new
 * setting gets its variable without anyone remembering to add it: one variable per leaf of
 * the schema (a scalar, a list or a map), named by `envName`. Secrets are not in this list:
 * they have their own pair of variables (value and `_FILE`) in `SECRET_FIELDS`.
 *
 * Values are read by the setting's type: text as written; numbers and booleans strictly;
 * lists, maps and `mapping.rooms` as YAML or JSON (`[a, b]`, `{member: 0, admin: 100}`).
 */
import { parse as parseYaml } from "yaml";
import { envName } from "./env-names.ts";
import { SECRET_FIELDS, configFileSchema } from "./schema.ts";

export type EnvValueKind = "text" | "number" | "boolean" | "structured";

export interface EnvSetting {
  readonly env: string;
  readonly path: readonly string[];
  readonly kind: EnvValueKind;
  /** Text that stands for a literal of another type (`disabledFilter: false`). */
  readonly literals: readonly (boolean | number)[];
  /** A file or folder: a relative value is taken from the working directory. */
  readonly isPath: boolean;
}

interface ZodLike {
  readonly _zod: { readonly def: ZodDef };
}
interface ZodDef {
  readonly type: string;
  readonly innerType?: ZodLike;
  readonly in?: ZodLike;
  readonly shape?: Record<string, ZodLike>;
  readonly options?: readonly ZodLike[];
  readonly values?: readonly unknown[];
}

const WRAPPERS = new Set(["optional", "default", "prefault", "nullable", "readonly", "catch", "nonoptional", "exact_optional"]);

function unwrap(schema: ZodLike): ZodDef {
  let def = schema._zod.def;
  for (;;) {
    if (WRAPPERS.has(def.type) && def.innerType) def = def.innerType._zod.def;
    else if (def.type === "pipe" && def.in) def = def.in._zod.def;
    else return def;
  }
}

function leafKind(def: ZodDef): { kind: EnvValueKind; literals: (boolean | number)[] } {
  switch (def.type) {
    case "string":
    case "enum":
      return { kind: "text", literals: [] };
    case "literal": {
      const values = def.values ?? [];
      return values.every((v) => typeof v === "string") ? { kind: "text", literals: [] } : { kind: "structured", literals: [] };
    }
    case "number":
    case "int":
      return { kind: "number", literals: [] };
    case "boolean":
      return { kind: "boolean", literals: [] };
    case "union": {
      const options = (def.options ?? []).map((o) => unwrap(o));
      const literals: (boolean | number)[] = [];
      let textual = true;
      for (const o of options) {
        if (o.type === "string" || o.type === "enum") continue;
        if (o.type === "literal") {
          for (const v of o.values ?? []) if (typeof v === "boolean" || typeof v === "number") literals.push(v);
          continue;
        }
        textual = false;
      }
      return textual ? { kind: "text", literals } : { kind: "structured", literals: [] };
    }
    default:
      return { kind: "structured", literals: [] };
  }
}

const secretKeys = new Set(SECRET_FIELDS.flatMap((s) => [[...s.parent, s.key].join("."), [...s.parent, s.fileKey].join(".")]));

function collect(schema: ZodLike, path: string[], out: Map<string, EnvSetting>): void {
  const def = unwrap(schema);
  if (def.type === "object" && def.shape) {
    for (const [key, child] of Object.entries(def.shape)) collect(child, [...path, key], out);
    return;
  }
  // A union of sections (idp by kind): the keys of every variant.
  if (def.type === "union" && (def.options ?? []).every((o) => unwrap(o).type === "object")) {
    for (const option of def.options ?? []) collect(option, path, out);
    return;
  }
  const dotted = path.join(".");
  if (secretKeys.has(dotted) || out.has(dotted)) return;
  const key = path[path.length - 1] ?? "";
  const { kind, literals } = leafKind(def);
  out.set(dotted, {
    env: envName(path),
    path,
    kind,
    literals,
    isPath: kind === "text" && (key === "dataDir" || key === "file" || key.endsWith("File")),
  });
}

function buildSettings(): readonly EnvSetting[] {
  const out = new Map<string, EnvSetting>();
  collect(configFileSchema, [], out);
  return [...out.values()];
}

/** Every non-secret setting and its variable, in schema order. */
export const ENV_SETTINGS: readonly EnvSetting[] = buildSettings();

/** Every variable that sets a key (MGS_CONFIG, which names the file, is not one), with that key. */
export function allEnvVariables(): { readonly env: string; readonly key: string; readonly secret: boolean }[] {
  return [
    ...ENV_SETTINGS.map((s) => ({ env: s.env, key: s.path.join("."), secret: false })),
    ...SECRET_FIELDS.flatMap((s) => [
      { env: s.env, key: [...s.parent, s.key].join("."), secret: true },
      { env: s.fileEnv, key: [...s.parent, s.fileKey].join("."), secret: true },
    ]),
  ];
}

/** The value a variable gives for a setting, or why it cannot be read. */
export function readEnvValue(setting: EnvSetting, text: string): { ok: true; value: unknown } | { ok: false; message: string } {
  switch (setting.kind) {
    case "text": {
      const literal = setting.literals.find((l) => String(l) === text.trim());
      return { ok: true, value: literal ?? text };
    }
    case "number": {
      const t = text.trim();
      return /^-?\d+(\.\d+)?$/.test(t) ? { ok: true, value: Number(t) } : { ok: false, message: `"${text}" is not a number` };
    }
    case "boolean": {
      const t = text.trim().toLowerCase();
      if (["true", "yes", "on", "1"].includes(t)) return { ok: true, value: true };
      if (["false", "no", "off", "0"].includes(t)) return { ok: true, value: false };
      return { ok: false, message: `"${text}" is not a boolean (true or false)` };
    }
    case "structured":
      try {
        return { ok: true, value: parseYaml(text) as unknown };
      } catch (err) {
        const first = ((err instanceof Error ? err.message : String(err)).split("\n")[0] ?? "").replace(/:\s*$/, "");
        return { ok: false, message: `not valid YAML or JSON: ${first}` };
      }
  }
}
