#!/usr/bin/env node
// DEV-ONLY server for the heartline web demo. It serves the static page (public/), the
// TypeScript SDK's built ES modules (sdk/typescript/dist/ at /sdk/), the page's settings
// (/dev/config) and — the part no production site may copy — demo tokens:
// GET /dev/token?user=N runs `heartline token` against the daemon's data dir and hands
// the token to whoever asks. A real site mints tokens in its backend, for the user its own
// login authenticated. This server therefore binds to loopback only, refuses any peer that
// is not loopback, and only mints tokens for the demo's users (public/users.js).
// Node's standard library only.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { createServer } from "node:http";
import { isIP } from "node:net";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { userById } from "./public/users.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "../..");
const ROOTS = { page: join(HERE, "public"), sdk: join(REPO, "sdk/typescript/dist") };
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".map": "application/json",
  ".json": "application/json",
};
// The page loads nothing from elsewhere; it only opens WebSockets (to the daemon).
const CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const { values: flags } = parseArgs({
  options: {
    port: { type: "string", default: process.env.DEMO_PORT ?? "7480" },
    host: { type: "string", default: "127.0.0.1" },
    "ws-url": { type: "string", default: "ws://127.0.0.1:7402/v1/ws" },
    "data-dir": { type: "string", default: "heartline-data" },
    "heartline-bin": { type: "string", default: defaultBinary() },
    help: { type: "boolean", default: false },
  },
});

if (flags.help) {
  console.log(`usage: node serve.mjs [--port 7480] [--ws-url ws://127.0.0.1:7402/v1/ws] [--data-dir DIR] [--heartline-bin PATH]
DEV-ONLY: serves the demo page and mints demo tokens for anyone on this machine. Never expose it.`);
  process.exit(0);
}
if (!isLoopback(flags.host)) {
  console.error(`serve.mjs: refusing --host ${flags.host}: this dev server hands out tokens and listens on loopback only`);
  process.exit(2);
}

function defaultBinary() {
  if (process.env.HEARTLINE_BIN) return process.env.HEARTLINE_BIN;
  const built = ["release", "debug"].map((profile) => join(REPO, "target", profile, "heartline")).find((path) => existsSync(path));
  return built ?? "heartline";
}

function isLoopback(address) {
  if (address === "localhost") return true;
  const plain = address.replace(/^::ffff:/, "");
  return (isIP(plain) === 4 && plain.startsWith("127.")) || plain === "::1";
}

/** DEV-ONLY: a one-hour token for a demo user, exactly as `heartline token` prints it. */
function mintToken(user) {
  const args = ["token", "--data-dir", flags["data-dir"], "--user", String(user), "--ttl", "1h"];
  return new Promise((done, fail) => {
    execFile(flags["heartline-bin"], args, { timeout: 10_000 }, (error, stdout, stderr) => {
      if (error) fail(new Error(`heartline token failed: ${stderr.trim().split("\n")[0] || error.message}`));
      else done(stdout.trim());
    });
  });
}

function send(response, status, type, body) {
  response.writeHead(status, {
    "Content-Type": type,
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
  });
  response.end(body);
}

/** A file under `root`, or null when the path leaves it or names nothing. */
async function fileUnder(root, relative) {
  const path = resolve(root, "." + sep + decodeURIComponent(relative));
  if (path !== root && !path.startsWith(root + sep)) return null;
  const info = await stat(path).catch(() => null);
  return info?.isFile() ? path : null;
}

async function serveFile(response, root, relative) {
  const path = await fileUnder(root, relative);
  if (!path) return send(response, 404, "text/plain; charset=utf-8", "not found\n");
  send(response, 200, TYPES[extname(path)] ?? "application/octet-stream", await readFile(path));
}

async function route(request, response) {
  const url = new URL(request.url ?? "/", "http://localhost");
  if (request.method !== "GET" && request.method !== "HEAD") return send(response, 405, "text/plain; charset=utf-8", "method not allowed\n");
  if (url.pathname === "/dev/config") {
    return send(response, 200, "application/json", JSON.stringify({ wsUrl: flags["ws-url"], devOnly: true }));
  }
  if (url.pathname === "/dev/token") {
    const id = Number(url.searchParams.get("user"));
    if (!userById(id)) return send(response, 404, "text/plain; charset=utf-8", "not a demo user\n");
    return send(response, 200, "text/plain; charset=utf-8", await mintToken(id));
  }
  if (url.pathname.startsWith("/sdk/")) return serveFile(response, ROOTS.sdk, url.pathname.slice("/sdk/".length));
  return serveFile(response, ROOTS.page, url.pathname === "/" ? "index.html" : url.pathname.slice(1));
}

const server = createServer((request, response) => {
  if (!isLoopback(request.socket.remoteAddress ?? "")) return send(response, 403, "text/plain; charset=utf-8", "loopback only\n");
  route(request, response).catch((error) => send(response, 500, "text/plain; charset=utf-8", `${error.message}\n`));
});
server.listen(Number(flags.port), flags.host, () => {
  const { port } = server.address();
  console.log(`heartline demo (dev server, loopback only): http://${flags.host}:${port}/`);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
