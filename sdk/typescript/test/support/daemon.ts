/**
 * Runs the real `heartline` binary for tests: free ports, a temporary data dir, tokens
 * minted with `heartline token`, and stop/restart on the same ports and data.
 *
 * The binary is `HEARTLINE_BIN`, default `../../target/debug/heartline` (from sdk/typescript).
 */
import { ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const HEARTLINE_BIN = process.env.HEARTLINE_BIN ?? resolve(process.cwd(), "../../target/debug/heartline");

/** Variables that steer the tests, not the daemon. */
const TEST_VARIABLES = new Set(["HEARTLINE_BIN", "HEARTLINE_WS_BRIDGE"]);

/** This process's environment less the tests' own HEARTLINE_* variables. */
function daemonEnvironment(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !TEST_VARIABLES.has(key))) as Record<string, string>;
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? done(address.port) : fail(new Error("no port"))));
    });
  });
}

async function waitForPort(port: number, deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const up = await new Promise<boolean>((done) => {
      const socket = new Socket();
      socket.once("connect", () => (socket.destroy(), done(true)));
      socket.once("error", () => (socket.destroy(), done(false)));
      socket.connect(port, "127.0.0.1");
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface DaemonOptions {
  /** Also serve WebSocket on `websocketPort` (the daemon's `websocket.listen`). */
  websocket: boolean;
  /** Extra HEARTLINE_* settings. */
  env?: Record<string, string>;
}

export class Daemon {
  private child: ChildProcess | undefined;

  private constructor(
    readonly dataDir: string,
    readonly tcpPort: number,
    readonly websocketPort: number,
    private readonly options: DaemonOptions,
  ) {}

  static async start(options: DaemonOptions): Promise<Daemon> {
    const daemon = new Daemon(mkdtempSync(join(tmpdir(), "heartline-ts-")), await freePort(), await freePort(), options);
    await daemon.spawn();
    return daemon;
  }

  /** The URL of the daemon's WebSocket listener. */
  get websocketUrl(): string {
    return `ws://127.0.0.1:${this.websocketPort}/v1/ws`;
  }

  /** A user token, as the hexadecimal `heartline token` prints. */
  token(user: number): string {
    return execFileSync(HEARTLINE_BIN, ["token", "--data-dir", this.dataDir, "--user", String(user), "--ttl", "1h"], {
      encoding: "utf8",
      env: daemonEnvironment(),
    }).trim();
  }

  private async spawn(): Promise<void> {
    const env: Record<string, string> = {
      ...daemonEnvironment(),
      HEARTLINE_ADMIN__LISTEN: "127.0.0.1:0",
      RUST_LOG: "warn",
      ...this.options.env,
    };
    if (this.options.websocket) env.HEARTLINE_WEBSOCKET__LISTEN = `127.0.0.1:${this.websocketPort}`;
    const child = spawn(HEARTLINE_BIN, ["serve", "--listen", `127.0.0.1:${this.tcpPort}`, "--udp", "127.0.0.1:0", "--data-dir", this.dataDir], {
      env,
      stdio: ["ignore", "ignore", "inherit"],
    });
    this.child = child;
    const exited = new Promise<never>((_, fail) => child.once("exit", (code) => fail(new Error(`heartline exited with ${code}`))));
    const ready = (async () => {
      await waitForPort(this.tcpPort, 15_000);
      if (this.options.websocket) await waitForPort(this.websocketPort, 15_000);
    })();
    await Promise.race([ready, exited]);
    exited.catch(() => undefined);
  }

  /** SIGINT: the daemon sends GOAWAY, drains, stores last-seen times and exits. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((done) => {
      child.once("exit", () => done());
      child.kill("SIGINT");
    });
  }

  /** A new process on the same ports and data. */
  async restart(): Promise<void> {
    await this.stop();
    await this.spawn();
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
