/**
 * Where the bot's end-to-end encryption state lives between runs.
 *
 * The Rust crypto (matrix-sdk-crypto-wasm) keeps its state — the Olm account, Olm sessions,
 * Megolm sessions, the device lists it tracks — in IndexedDB, which Node does not have. Here it
 * gets an IndexedDB in memory (fake-indexeddb, pure JavaScript), and every change it commits is
 * copied into the project's store (PGlite or PostgreSQL), so the next start loads it back and
 * the bot is the same device with the same identity keys.
 *
 * - The crypto library encrypts what it stores with a key derived from `serve.encryption.storeKey`
 *   (its store cipher: ChaCha20-Poly1305 values, keyed hashes for keys), so the rows in our store
 *   are ciphertext; without the store key they are of no use.
 * - Changes are found cheaply: the object stores written to since the last save are marked (a
 *   hook on `put`/`add`/`delete`/`clear`); only those are read and compared with what was saved.
 * - Each bot instance gets its own database names (a random prefix): several in one process
 *   (tests) never share one.
 */
import { createHash, randomUUID } from "node:crypto";
import { deserialize, serialize } from "node:v8";
import * as fakeIndexedDb from "fake-indexeddb";

/** One object store's layout, as IndexedDB needs it to be created again. */
export interface ObjectStoreSchema {
  readonly name: string;
  readonly keyPath: string | string[] | null;
  readonly autoIncrement: boolean;
  readonly indexes: readonly { name: string; keyPath: string | string[]; unique: boolean; multiEntry: boolean }[];
}

/** A database of the crypto store: its name (without our prefix), version and layout. */
export interface CryptoDatabaseSchema {
  readonly name: string;
  readonly version: number;
  readonly stores: readonly ObjectStoreSchema[];
}

/** One record: `key` and `value` in Node's structured-clone serialisation (v8.serialize). */
export interface CryptoRecord {
  readonly database: string;
  readonly store: string;
  readonly key: Uint8Array;
  readonly value: Uint8Array;
}

/** Everything saved: what `load` gives back. */
export interface CryptoSnapshot {
  readonly databases: readonly CryptoDatabaseSchema[];
  readonly records: readonly CryptoRecord[];
}

/** The changes since the last save. */
export interface CryptoChanges {
  /** Databases created or upgraded since (their layout). */
  readonly databases: readonly CryptoDatabaseSchema[];
  readonly put: readonly CryptoRecord[];
  readonly deleted: readonly Omit<CryptoRecord, "value">[];
}

/** The store's side (store/kysely-store.ts). */
export interface CryptoStatePort {
  loadCryptoState(owner: string): Promise<CryptoSnapshot>;
  saveCryptoState(owner: string, changes: CryptoChanges): Promise<void>;
}

// ---------------------------------------------------------------------------------------
// The in-memory IndexedDB, once per process. The few IndexedDB types used here, written out
// (the project compiles without the DOM library).

interface IdbRequest<T> {
  readonly result: T;
  readonly error: unknown;
  onsuccess: (() => void) | null;
  onerror: (() => void) | null;
}
interface IdbOpenRequest extends IdbRequest<IdbDatabase> {
  onupgradeneeded: (() => void) | null;
}
interface IdbCursor {
  readonly primaryKey: unknown;
  readonly value: unknown;
  continue(): void;
}
interface IdbIndex {
  readonly keyPath: string | string[];
  readonly unique: boolean;
  readonly multiEntry: boolean;
}
interface IdbObjectStore {
  readonly keyPath: string | string[] | null;
  readonly autoIncrement: boolean;
  readonly indexNames: Iterable<string>;
  index(name: string): IdbIndex;
  put(value: unknown, key?: unknown): unknown;
  createIndex(name: string, keyPath: string | string[], options: { unique: boolean; multiEntry: boolean }): unknown;
  openCursor(): IdbRequest<IdbCursor | null>;
}
interface IdbTransaction {
  readonly error: unknown;
  objectStore(name: string): IdbObjectStore;
  oncomplete: (() => void) | null;
  onerror: (() => void) | null;
  onabort: (() => void) | null;
}
interface IdbDatabase {
  readonly version: number;
  readonly objectStoreNames: Iterable<string>;
  onversionchange: (() => void) | null;
  transaction(stores: string[], mode: "readonly" | "readwrite"): IdbTransaction;
  createObjectStore(name: string, options: { keyPath?: string | string[] | undefined; autoIncrement: boolean }): IdbObjectStore;
  close(): void;
}
interface IdbFactory {
  open(name: string, version?: number): IdbOpenRequest;
  deleteDatabase(name: string): IdbRequest<unknown> & { onblocked: (() => void) | null };
  databases(): Promise<{ name?: string; version?: number }[]>;
}

/** fake-indexeddb's classes (its types need the DOM library). */
const idb = fakeIndexedDb as unknown as { IDBFactory: new () => IdbFactory; IDBKeyRange: unknown; IDBObjectStore: { prototype: object } };
const factory = new idb.IDBFactory();
/** `${database}\u0000${store}` of every object store written to since its owner last looked. */
const dirty = new Set<string>();
let installed = false;

/** Gives the crypto library its IndexedDB (the global it looks for) and the write hook. */
function installIndexedDb(): void {
  if (installed) return;
  installed = true;
  const g = globalThis as { indexedDB?: unknown; IDBKeyRange?: unknown };
  g.indexedDB = factory;
  g.IDBKeyRange ??= idb.IDBKeyRange;
  const proto = idb.IDBObjectStore.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const method of ["put", "add", "delete", "clear"]) {
    const original = proto[method]!;
    proto[method] = function (this: { name: string; transaction: { db: { name: string } } }, ...args: unknown[]) {
      dirty.add(`${this.transaction.db.name}\u0000${this.name}`);
      return original.apply(this, args);
    };
  }
}

/**
 * A deletion, done or blocked: a connection the crypto library left open (it does on a failed
 * open) blocks it for ever; the database is then left to be deleted when that closes.
 */
function deleted(req: IdbRequest<unknown> & { onblocked?: (() => void) | null }): Promise<void> {
  return new Promise<void>((resolve) => {
    req.onsuccess = () => resolve();
    req.onerror = () => resolve();
    req.onblocked = () => resolve();
  });
}

function request<T>(req: IdbRequest<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error instanceof Error ? req.error : new Error(String(req.error)));
  });
}

type Db = IdbDatabase;

function openDb(name: string, version?: number, upgrade?: (db: Db) => void): Promise<Db> {
  const req = version === undefined ? factory.open(name) : factory.open(name, version);
  if (upgrade) req.onupgradeneeded = () => upgrade(req.result);
  return request<Db>(req).then((db) => {
    db.onversionchange = () => db.close();
    return db;
  });
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
const digest = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("base64");

/**
 * The crypto store of one bot: an IndexedDB prefix (what the crypto library is given as its
 * store name), loaded from and saved to the project's store.
 */
export class CryptoPersistence {
  /** The store name to give the crypto library. */
  readonly prefix = `mgs-${randomUUID()}`;
  /** What was last saved: database → store → hex key → digest of the value. */
  readonly #saved = new Map<string, Map<string, Map<string, string>>>();
  readonly #versions = new Map<string, number>();

  constructor(
    private readonly port: CryptoStatePort,
    /** Whose state it is (the bot's user id). */
    private readonly owner: string,
  ) {
    installIndexedDb();
  }

  /** Loads the saved state into the in-memory IndexedDB; whether there was any. */
  async load(): Promise<{ records: number }> {
    const snapshot = await this.port.loadCryptoState(this.owner);
    for (const schema of snapshot.databases) {
      const db = await openDb(this.prefix + schema.name, schema.version, (d) => {
        for (const s of schema.stores) {
          const store = d.createObjectStore(s.name, { keyPath: s.keyPath ?? undefined, autoIncrement: s.autoIncrement });
          for (const i of s.indexes) store.createIndex(i.name, i.keyPath, { unique: i.unique, multiEntry: i.multiEntry });
        }
      });
      const records = snapshot.records.filter((r) => r.database === schema.name);
      const layout = new Map(schema.stores.map((s) => [s.name, s]));
      if (records.length > 0) {
        const tx = db.transaction([...new Set(records.map((r) => r.store))], "readwrite");
        const done = new Promise<void>((resolve, reject) => {
          tx.oncomplete = () => resolve();
          tx.onerror = () => reject(tx.error instanceof Error ? tx.error : new Error(String(tx.error)));
          tx.onabort = () => reject(tx.error instanceof Error ? tx.error : new Error("the transaction was aborted"));
        });
        for (const r of records) {
          const store = tx.objectStore(r.store);
          const value: unknown = deserialize(r.value);
          if (layout.get(r.store)?.keyPath != null) store.put(value);
          else store.put(value, deserialize(r.key));
        }
        await done;
      }
      db.close();
      this.#versions.set(schema.name, schema.version);
      const stores = new Map<string, Map<string, string>>();
      for (const s of schema.stores) stores.set(s.name, new Map());
      for (const r of records) stores.get(r.store)?.set(hex(r.key), digest(r.value));
      this.#saved.set(schema.name, stores);
    }
    for (const schema of snapshot.databases) for (const s of schema.stores) dirty.delete(`${this.prefix}${schema.name}\u0000${s.name}`);
    return { records: snapshot.records.length };
  }

  /** Saves what changed since the last save (nothing when nothing did). */
  async save(): Promise<{ put: number; deleted: number }> {
    const databases: CryptoDatabaseSchema[] = [];
    const put: CryptoRecord[] = [];
    const deleted: Omit<CryptoRecord, "value">[] = [];
    for (const info of await factory.databases()) {
      const fullName = info.name;
      if (fullName === undefined || !fullName.startsWith(this.prefix)) continue;
      const name = fullName.slice(this.prefix.length);
      const mine = [...dirty].filter((d) => d.startsWith(`${fullName}\u0000`));
      const upgraded = this.#versions.get(name) !== info.version;
      if (mine.length === 0 && !upgraded) continue;
      const db = await openDb(fullName);
      try {
        const storeNames = [...db.objectStoreNames];
        if (upgraded) {
          databases.push({ name, version: db.version, stores: describeStores(db, storeNames) });
          this.#versions.set(name, db.version);
        }
        const toRead = upgraded ? storeNames : mine.map((d) => d.slice(fullName.length + 1)).filter((s) => storeNames.includes(s));
        for (const d of mine) dirty.delete(d);
        if (toRead.length === 0) continue;
        const saved = this.#saved.get(name) ?? new Map<string, Map<string, string>>();
        this.#saved.set(name, saved);
        const tx = db.transaction(toRead, "readonly");
        for (const storeName of toRead) {
          const now = await readStore(tx.objectStore(storeName));
          const before = saved.get(storeName) ?? new Map<string, string>();
          const after = new Map<string, string>();
          for (const [keyHex, rec] of now) {
            const d = digest(rec.value);
            after.set(keyHex, d);
            if (before.get(keyHex) !== d) put.push({ database: name, store: storeName, key: rec.key, value: rec.value });
          }
          for (const keyHex of before.keys()) if (!now.has(keyHex)) deleted.push({ database: name, store: storeName, key: Buffer.from(keyHex, "hex") });
          saved.set(storeName, after);
        }
      } finally {
        db.close();
      }
    }
    if (databases.length + put.length + deleted.length > 0) await this.port.saveCryptoState(this.owner, { databases, put, deleted });
    return { put: put.length, deleted: deleted.length };
  }

  /** Drops the in-memory databases (after the crypto library has closed them). */
  async discard(): Promise<void> {
    for (const info of await factory.databases()) {
      if (info.name?.startsWith(this.prefix) !== true) continue;
      await deleted(factory.deleteDatabase(info.name));
      for (const d of [...dirty]) if (d.startsWith(`${info.name}\u0000`)) dirty.delete(d);
    }
  }
}

function describeStores(db: Db, names: string[]): ObjectStoreSchema[] {
  if (names.length === 0) return [];
  const tx = db.transaction(names, "readonly");
  return names.map((name) => {
    const store = tx.objectStore(name);
    const indexNames = [...store.indexNames];
    return {
      name,
      keyPath: store.keyPath,
      autoIncrement: store.autoIncrement,
      indexes: indexNames.map((i) => {
        const index = store.index(i);
        return { name: i, keyPath: index.keyPath, unique: index.unique, multiEntry: index.multiEntry };
      }),
    };
  });
}

/** Every record of a store: hex key → serialised key and value. */
function readStore(store: IdbObjectStore): Promise<Map<string, { key: Uint8Array; value: Uint8Array }>> {
  return new Promise((resolve, reject) => {
    const out = new Map<string, { key: Uint8Array; value: Uint8Array }>();
    const req = store.openCursor();
    req.onerror = () => reject(req.error instanceof Error ? req.error : new Error(String(req.error)));
    req.onsuccess = () => {
      const cursor = req.result;
      if (cursor === null) return resolve(out);
      const key = new Uint8Array(serialize(cursor.primaryKey));
      out.set(hex(key), { key, value: new Uint8Array(serialize(cursor.value)) });
      cursor.continue();
    };
  });
}
