#!/usr/bin/env node
// DEV-ONLY stand-in for the daemon's WebSocket listener, for daemons built without it:
// runs the SDK's test bridge (sdk/typescript/test/support/bridge.ts, built by
// `npm run build:test` there), which relays each binary WebSocket message to the daemon's
// TCP port as one frame and back. Usage: node bridge.mjs WS_PORT DAEMON_TCP_PORT
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [wsPort, tcpPort] = process.argv.slice(2).map(Number);
if (!wsPort || !tcpPort) {
  console.error("usage: node bridge.mjs WS_PORT DAEMON_TCP_PORT");
  process.exit(2);
}
const built = join(dirname(fileURLToPath(import.meta.url)), "../../sdk/typescript/build-test/test/support/bridge.js");
const { TcpBridge } = await import(pathToFileURL(built).href);
const bridge = await TcpBridge.start(wsPort, tcpPort);
console.log(`WebSocket bridge (dev-only): ${bridge.url} -> tcp 127.0.0.1:${tcpPort}`);
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => void bridge.close().then(() => process.exit(0)));
