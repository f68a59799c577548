// Everything a browser test talks to: the real daemon (the SDK's test helper: free ports, a
// temporary data dir), its WebSocket listener or, with HEARTLINE_WS_BRIDGE=1, the SDK's
// test bridge in front of its TCP port, and the demo's dev server (examples/web/serve.mjs)
// minting tokens from the same data dir. One `stop()` ends them all.
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { flags, REPO } from "./env.mjs";

const SDK_SUPPORT = resolve(REPO, "sdk/typescript/build-test/test/support");
// Imported after env.mjs has settled HEARTLINE_BIN, which the daemon helper reads on import.
const { Daemon, freePort } = await import(pathToFileURL(resolve(SDK_SUPPORT, "daemon.js")).href);
const { TcpBridge } = await import(pathToFileURL(resolve(SDK_SUPPORT, "bridge.js")).href);

async function waitForHttp(url, deadlineMs = 15_000) {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      const response = await fetch(url);
      await response.body?.cancel();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${url} is not answering: ${error.message}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** @param {{ env?: Record<string, string> }} options extra HEARTLINE_* settings for the daemon */
export async function startStack(options = {}) {
  const adminPort = await freePort();
  const daemon = await Daemon.start({
    websocket: !flags.bridge,
    env: { HEARTLINE_ADMIN__LISTEN: `127.0.0.1:${adminPort}`, ...options.env },
  });
  const bridge = flags.bridge ? await TcpBridge.start(await freePort(), daemon.tcpPort) : undefined;
  const wsUrl = bridge?.url ?? daemon.websocketUrl;
  const demoPort = await freePort();
  const server = spawn(
    process.execPath,
    [resolve(REPO, "examples/web/serve.mjs"), "--port", String(demoPort), "--ws-url", wsUrl, "--data-dir", daemon.dataDir, "--heartline-bin", flags.bin],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const demoUrl = `http://127.0.0.1:${demoPort}/`;
  await waitForHttp(demoUrl);
  return {
    daemon,
    demoUrl,
    adminUrl: `http://127.0.0.1:${adminPort}/`,
    async stop() {
      if (server.exitCode === null) await new Promise((done) => (server.once("exit", done), server.kill("SIGTERM")));
      await bridge?.close();
      await daemon.dispose();
    },
  };
}
