// The admin dashboard (the admin listener's "/") in headless Chromium against the real
// daemon: it renders, and its live counters (data-testid sessions-online, users-online,
// connections, heartbeats-per-second) move when demo users sign in and out. Writes
// docs/screenshots/dashboard.png.
//
// Skipped, saying why, when the daemon serves no dashboard with those hooks (a build from
// before the dashboard); HEARTLINE_DASHBOARD=1 turns that skip into a failure.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { launch, newPage, screenshot } from "./support/browser.mjs";
import { DemoPage } from "./support/demo-page.mjs";
import { flags } from "./support/env.mjs";
import { startStack } from "./support/stack.mjs";

const TIMEOUT = 15_000;
const HOOKS = ["sessions-online", "users-online", "connections", "heartbeats-per-second"];

/** Why the dashboard cannot be tested on this daemon, or null when it can. */
async function missingDashboard(adminUrl) {
  const response = await fetch(adminUrl);
  const body = await response.text();
  if (response.status !== 200) return `GET ${adminUrl} answered HTTP ${response.status}`;
  const missing = HOOKS.filter((hook) => !body.includes(`data-testid="${hook}"`));
  return missing.length ? `the page at ${adminUrl} has no data-testid ${missing.join(", ")}` : null;
}

/** A counter's value as a number (NaN while it reads "—"). */
async function counter(page, testid) {
  return Number((await page.getByTestId(testid).textContent()).replace(/[^\d.]/g, "") || NaN);
}

/**
 * Waits until counter `testid` is `equals`, at least `atLeast` or above `above` (no code is
 * evaluated in the page: its CSP allows none).
 * @param {{ equals?: number, atLeast?: number, above?: number }} bound
 */
async function waitForCounter(page, testid, bound) {
  await page.waitForFunction(
    ([id, { equals, atLeast, above }]) => {
      const value = Number((document.querySelector(`[data-testid="${id}"]`)?.textContent ?? "").replace(/[^\d.]/g, "") || NaN);
      return equals !== undefined ? value === equals : atLeast !== undefined ? value >= atLeast : value > above;
    },
    [testid, bound],
    { timeout: TIMEOUT, polling: 200 },
  );
}

describe("admin dashboard", () => {
  let stack;
  let browser;
  let page;
  let skipReason = null;

  before(async () => {
    // Heartbeats every 500 ms, so that heartbeats/s is visibly above zero.
    stack = await startStack({ env: { HEARTLINE_PRESENCE__HEARTBEAT_INTERVAL: "500ms" } });
    skipReason = await missingDashboard(stack.adminUrl);
    if (skipReason && flags.dashboard) throw new Error(`HEARTLINE_DASHBOARD=1 but ${skipReason}`);
    if (skipReason) console.log(`SKIPPING the dashboard test: ${skipReason} (a daemon without the dashboard; HEARTLINE_DASHBOARD=1 makes this a failure)`);
    browser = await launch();
    page = await newPage(browser);
  });

  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  /** Marks the test skipped (with the reason) when there is no dashboard; true then. */
  const skipped = (t) => (skipReason ? (t.skip(skipReason), true) : false);

  it("renders with its counters", async (t) => {
    if (skipped(t)) return;
    await page.goto(stack.adminUrl);
    assert.equal(await page.title(), "heartline");
    await waitForCounter(page, "sessions-online", { equals: 0 });
    for (const hook of HOOKS) assert.equal(await page.getByTestId(hook).isVisible(), true, hook);
  });

  it("its counters move as clients connect, heartbeat and leave", async (t) => {
    if (skipped(t)) return;
    const ava = new DemoPage(await newPage(browser));
    const ben = new DemoPage(await newPage(browser));
    await ava.signIn(stack.demoUrl, 1);
    await ben.signIn(stack.demoUrl, 2);
    await waitForCounter(page, "sessions-online", { atLeast: 2 });
    await waitForCounter(page, "users-online", { atLeast: 2 });
    await waitForCounter(page, "connections", { atLeast: 2 });
    await waitForCounter(page, "heartbeats-per-second", { above: 0 });
    await page.waitForTimeout(2_000); // a few points on the charts
    console.log(`screenshot: ${await screenshot(page, "dashboard")}`);
    const before = await counter(page, "sessions-online");
    await ben.signOut();
    await waitForCounter(page, "sessions-online", { equals: before - 1 });
  });
});
