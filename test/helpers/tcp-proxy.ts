/**
 * A TCP proxy in front of a server (PostgreSQL in the replica tests), to cut one process off
 * from it: `cut()` drops every connection through the proxy and refuses new ones until
 * `restore()`, as a network partition between that process and the server would.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";

export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private readonly upstream = new Set<Socket>();
  private refusing = false;

  private readonly server: Server;

  private constructor(private readonly target: { host: string; port: number }) {
    this.server = createServer((client) => this.accept(client));
  }

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const proxy = new TcpProxy(target);
    await new Promise<void>((resolve, reject) => {
      proxy.server.once("error", reject);
      proxy.server.listen(0, "127.0.0.1", () => resolve());
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  private accept(client: Socket): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    const upstream = createConnection(this.target);
    this.upstream.add(upstream);
    upstream.on("close", () => this.upstream.delete(upstream));
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  }

  /** The local ports of the connections to the server (what the server sees as client ports). */
  upstreamPorts(): number[] {
    return [...this.upstream].flatMap((s) => (s.localPort !== undefined ? [s.localPort] : []));
  }

  /** Drops every connection and refuses new ones. */
  cut(): void {
    this.refusing = true;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.refusing = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** `url` (postgres://...) with its host and port replaced. */
export function viaProxy(url: string, proxy: TcpProxy): string {
  const u = new URL(url);
  u.hostname = "127.0.0.1";
  u.port = String(proxy.port);
  return u.toString();
}

/** The host and port a postgres:// URL names (defaults: localhost, 5432). */
export function hostPort(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname || "localhost", port: u.port === "" ? 5432 : Number(u.port) };
}
