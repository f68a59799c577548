// The variables that steer the browser tests, read once. The daemon reads every HEARTLINE_*
// variable as a setting (and refuses unknown ones), so the tests' own are removed from the
// environment here, before anything is spawned; HEARTLINE_BIN is made absolute and kept
// for the SDK's daemon helper, which filters it out itself.
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

export const flags = Object.freeze({
  /** The daemon under test. */
  bin: resolve(process.env.HEARTLINE_BIN ?? resolve(REPO, "target/debug/heartline")),
  /** Relay WebSocket through the SDK's test bridge to the daemon's TCP port (a daemon without the listener). */
  bridge: process.env.HEARTLINE_WS_BRIDGE === "1",
  /** The admin dashboard must exist: its test fails instead of skipping. */
  dashboard: process.env.HEARTLINE_DASHBOARD === "1",
  /** Debian's chromium; Playwright's own browsers are never downloaded. */
  chromium: process.env.CHROMIUM ?? "/usr/bin/chromium",
});

process.env.HEARTLINE_BIN = flags.bin;
delete process.env.HEARTLINE_WS_BRIDGE;
delete process.env.HEARTLINE_DASHBOARD;

for (const [what, path] of [["HEARTLINE_BIN", flags.bin], ["CHROMIUM", flags.chromium]]) {
  if (!existsSync(path)) throw new Error(`${what}: ${path} does not exist (build the daemon with \`cargo build -p heartline\`; install chromium with apt)`);
}
