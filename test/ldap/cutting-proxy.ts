/**
 * A TCP proxy between an LDAP client and a server (plain ldap://, no TLS) that can drop the
 * connection in the middle of a paged search: the fault "the LDAP connection went away after
 * the first page" (a load balancer's idle cut, a restarting domain controller, a NAT timeout).
 *
 * Modes, taken by each connection when it is accepted (`setMode` changes later connections):
 * - "pass": bytes are relayed both ways untouched.
 * - "cut": bytes are relayed until the server has sent a SearchResultDone that carries a
 *   paged-results cookie (RFC 2696: "this was one page, more follow"). The next request the
 *   client sends on that connection (the request for page two) is not forwarded: both sockets
 *   are destroyed instead, and `cuts` goes up by one.
 *
 * Why the cut is placed like this: it is defined by LDAP messages, not by byte counts or
 * timing, so it does not depend on how TCP splits the stream or how large the entries are.
 * Waiting for the client's next request, rather than destroying the sockets right after
 * relaying the SearchResultDone, guarantees the first page really reached the client (a
 * `destroy()` right after a write may drop bytes still in the write buffer, which would make
 * this a cut *during* page one); and it proves the client did not have everything yet (the
 * cookie was non-empty and the client asked for more). The withheld request has already left
 * the client, so the client sees its connection close while it waits for page two.
 *
 * The parsing is the minimum BER the cut needs: LDAPMessage framing (SEQUENCE, messageID,
 * protocolOp tag) and, in a SearchResultDone, the controls' paged-results value.
 */
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from "node:net";

export type CuttingProxyMode = "cut" | "pass";

export interface CuttingProxy {
  /** ldap://127.0.0.1:PORT — put this in the config instead of the server's URL. */
  readonly url: string;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections cut so far (faults injected). */
  readonly cuts: number;
  /**
   * protocolOp tag of each request withheld at a cut, in order (0x63 = SearchRequest: the
   * client was asking for the next page).
   */
  readonly withheld: readonly number[];
  setMode(mode: CuttingProxyMode): void;
  /** Destroys every open connection and stops listening. Idempotent. */
  close(): Promise<void>;
}

/** LDAP protocolOp tags (RFC 4511, [APPLICATION n] constructed). */
export const LDAP_OP = { searchRequest: 0x63, searchResultDone: 0x65 } as const;
const PAGED_RESULTS_OID = "1.2.840.113556.1.4.319";

interface Tlv {
  readonly tag: number;
  /** Offset of the value's first byte. */
  readonly start: number;
  /** Offset after the value's last byte. */
  readonly end: number;
}

/** One BER TLV at `pos` (single-byte tags, definite lengths, as LDAP uses); undefined if incomplete. */
function readTlv(buf: Buffer, pos: number, limit = buf.length): Tlv | undefined {
  if (pos + 2 > limit) return undefined;
  const tag = buf[pos]!;
  const first = buf[pos + 1]!;
  let length = first;
  let start = pos + 2;
  if (first & 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > 4) throw new Error(`cutting proxy: unsupported BER length form 0x${first.toString(16)}`);
    if (pos + 2 + n > limit) return undefined;
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + buf[pos + 2 + i]!;
    start = pos + 2 + n;
  }
  const end = start + length;
  return end > limit ? undefined : { tag, start, end };
}

/** The children of a constructed TLV. */
function children(buf: Buffer, tlv: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let pos = tlv.start; pos < tlv.end; ) {
    const child = readTlv(buf, pos, tlv.end);
    if (child === undefined) throw new Error("cutting proxy: truncated BER inside a complete message");
    out.push(child);
    pos = child.end;
  }
  return out;
}

interface LdapMessage {
  readonly bytes: Buffer;
  readonly op: number;
  /** SearchResultDone only: a paged-results control with a non-empty cookie (more pages follow). */
  readonly morePages: boolean;
}

/** Splits complete LDAPMessages off the front of `buf`; returns them and the rest. */
function takeMessages(buf: Buffer): { messages: LdapMessage[]; rest: Buffer } {
  const messages: LdapMessage[] = [];
  let pos = 0;
  for (;;) {
    const msg = readTlv(buf, pos);
    if (msg === undefined) break;
    if (msg.tag !== 0x30) throw new Error(`cutting proxy: not an LDAPMessage (tag 0x${msg.tag.toString(16)})`);
    const [, op, controls] = children(buf, msg);
    if (op === undefined) throw new Error("cutting proxy: LDAPMessage without a protocolOp");
    messages.push({
      bytes: buf.subarray(pos, msg.end),
      op: op.tag,
      morePages: op.tag === LDAP_OP.searchResultDone && controls?.tag === 0xa0 && hasPagedCookie(buf, controls),
    });
    pos = msg.end;
  }
  return { messages, rest: buf.subarray(pos) };
}

/** Control ::= SEQUENCE { controlType OCTET STRING, criticality BOOLEAN OPTIONAL, controlValue OCTET STRING OPTIONAL } */
function hasPagedCookie(buf: Buffer, controls: Tlv): boolean {
  for (const control of children(buf, controls)) {
    const parts = children(buf, control);
    const type = parts[0];
    const value = parts.at(-1);
    if (type === undefined || value === undefined || value === type) continue;
    if (buf.toString("latin1", type.start, type.end) !== PAGED_RESULTS_OID) continue;
    // realSearchControlValue ::= SEQUENCE { size INTEGER, cookie OCTET STRING }
    const inner = readTlv(buf, value.start, value.end);
    if (inner === undefined) return false;
    const cookie = children(buf, inner)[1];
    return cookie !== undefined && cookie.end > cookie.start;
  }
  return false;
}

/** `target`: ldap://host:port of the real server. */
export async function startCuttingProxy(opts: { target: string; mode: CuttingProxyMode }): Promise<CuttingProxy> {
  const target = new URL(opts.target);
  if (target.protocol !== "ldap:") throw new Error(`cutting proxy: only ldap:// targets (the proxy reads the messages), got ${opts.target}`);
  const targetPort = Number(target.port || 389);
  let mode = opts.mode;
  let connections = 0;
  let cuts = 0;
  const withheld: number[] = [];
  const open = new Set<Socket>();
  const track = (s: Socket): void => {
    open.add(s);
    s.on("close", () => open.delete(s));
    // A peer that went away is what this proxy is for: never an unhandled error.
    s.on("error", () => undefined);
  };

  const server: Server = createServer((client) => {
    connections++;
    const upstream = createConnection({ host: target.hostname, port: targetPort });
    track(client);
    track(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());

    if (mode === "pass") {
      client.pipe(upstream);
      upstream.pipe(client);
      return;
    }

    let armed = false;
    let fromServer = Buffer.alloc(0);
    let fromClient = Buffer.alloc(0);
    upstream.on("data", (chunk: Buffer) => {
      if (!client.destroyed) client.write(chunk);
      fromServer = Buffer.concat([fromServer, chunk]);
      const { messages, rest } = takeMessages(fromServer);
      fromServer = Buffer.from(rest);
      if (messages.some((m) => m.morePages)) armed = true;
    });
    client.on("data", (chunk: Buffer) => {
      fromClient = Buffer.concat([fromClient, chunk]);
      const { messages, rest } = takeMessages(fromClient);
      fromClient = Buffer.from(rest);
      for (const m of messages) {
        if (armed) {
          cuts++;
          withheld.push(m.op);
          drop();
          return;
        }
        upstream.write(m.bytes);
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  return {
    url: `ldap://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    get cuts() {
      return cuts;
    },
    get withheld() {
      return [...withheld];
    },
    setMode(next) {
      mode = next;
    },
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      })),
  };
}
