// The web demo (examples/web) in headless Chromium against the real daemon: Ava (1) signs
// in and sees her match Ben (2) come online, change his status and text, and post a moment,
// live and without a reload; the feed pages back to older moments (Chloé's, 3) with its
// cursor. Writes docs/screenshots/demo.png with Emi (5) away.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { launch, newPage, screenshot } from "./support/browser.mjs";
import { DemoPage } from "./support/demo-page.mjs";
import { startStack } from "./support/stack.mjs";

const AVA = 1;
const BEN = 2;
const CHLOE = 3;
const EMI = 5;
const PAGE_SIZE = 5;
/** Chloé's moments, oldest first: more than one page of PAGE_SIZE. */
const SEEDED = [
  "Morning croissant at the market, as every Saturday.",
  "Found a first edition of L'Écume des jours at the bouquiniste!",
  "Rain all day. Perfect excuse for a long novel.",
  "Jazz at the Hot Club tonight: who's in?",
  "Trying a new recipe: tarte Tatin, attempt number three.",
  "Walked along the Saône at sunset. Lyon, you charmer.",
  "Reading in the park until the light goes.",
];
const NEWEST_FIRST = [...SEEDED].reverse();

describe("web demo", () => {
  let stack;
  let browser;
  let ava;
  let ben;

  before(async () => {
    stack = await startStack({ env: { HEARTLINE_LIMITS__POST_RATE: "0", HEARTLINE_LIMITS__STATUS_RATE: "0" } });
    browser = await launch();
    ava = new DemoPage(await newPage(browser));
    ben = new DemoPage(await newPage(browser));
  });

  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it("Chloé posts moments before Ava arrives", async () => {
    const chloe = new DemoPage(await newPage(browser));
    await chloe.signIn(stack.demoUrl, CHLOE, PAGE_SIZE);
    for (const text of SEEDED) await chloe.post(text);
    await chloe.signOut();
    await chloe.page.context().close();
  });

  it("Ava signs in: her matches with their presence, the newest page of moments", async () => {
    await ava.signIn(stack.demoUrl, AVA, PAGE_SIZE);
    await ava.markWindow();
    assert.equal(await ava.page.getByTestId("me-name").textContent(), "Ava");
    await ava.waitForMatchStatus(BEN, "offline");
    assert.equal(await ava.matchText(BEN, "seen"), "Not seen yet");
    await ava.waitForMatchStatus(CHLOE, "offline");
    assert.match(await ava.matchText(CHLOE, "seen"), /^Last seen /);
    assert.deepEqual(await ava.momentTexts(), NEWEST_FIRST.slice(0, PAGE_SIZE));
  });

  it("paging: 'Older moments' walks back with the cursor to the end", async () => {
    await ava.page.getByTestId("older").click();
    await ava.moment(SEEDED[0]).waitFor();
    assert.deepEqual(await ava.momentTexts(), NEWEST_FIRST);
    await ava.page.getByTestId("older").click();
    await ava.page.getByTestId("feed-end").waitFor();
    assert.equal(await ava.page.getByTestId("older").isVisible(), false);
  });

  it("Ava sees Ben come online, live", async () => {
    await ben.signIn(stack.demoUrl, BEN, PAGE_SIZE);
    await ava.waitForMatchStatus(BEN, "online");
    assert.equal(await ava.matchText(BEN, "status"), "Online");
    assert.equal(await ava.matchText(BEN, "seen"), "Active now");
    // Ben sees Ava too, and Chloé's moments in his feed (he follows his matches on sign-in).
    await ben.waitForMatchStatus(AVA, "online");
    await ben.moment(SEEDED[SEEDED.length - 1]).waitFor();
  });

  it("Ava sees Ben's status and text change, live", async () => {
    await ben.setStatus("busy", "On a call until 7");
    await ava.waitForMatchStatus(BEN, "busy");
    assert.equal(await ava.matchText(BEN, "status"), "Busy");
    await ava.page.getByTestId(`match-${BEN}-text`).filter({ hasText: "On a call until 7" }).waitFor();
    await ben.setStatus("away", "Back in 10");
    await ava.waitForMatchStatus(BEN, "away");
    await ava.page.getByTestId(`match-${BEN}-text`).filter({ hasText: "Back in 10" }).waitFor();
    await ben.setStatus("online", "Free for coffee after 6");
    await ava.waitForMatchStatus(BEN, "online");
    await ava.page.getByTestId(`match-${BEN}-text`).filter({ hasText: "Free for coffee after 6" }).waitFor();
  });

  it("Ava sees Ben's new moment on top of her feed, live, without a reload", async () => {
    await ben.post("Anyone up for the jazz night on Friday?");
    await ava.moment("Anyone up for the jazz night on Friday?").waitFor();
    assert.equal((await ava.momentTexts())[0], "Anyone up for the jazz night on Friday?");
    const author = await ava.moment("jazz night").locator(".moment-author").textContent();
    assert.equal(author, "Ben");
    await ava.post("Count me in! Bring your best dance moves.");
    await ben.moment("Count me in!").waitFor();
    assert.equal(await ava.reloaded(), false, "Ava's page was reloaded");
  });

  it("screenshot: Ava's home page with a few matches around", async () => {
    await ava.setStatus("online", "Looking for a jazz buddy");
    const emi = new DemoPage(await newPage(browser));
    await emi.signIn(stack.demoUrl, EMI, PAGE_SIZE);
    await emi.setStatus("away", "Hiking until Sunday");
    await ava.waitForMatchStatus(EMI, "away");
    await ava.page.getByTestId("status-note").evaluate((note) => (note.textContent = ""));
    const path = await screenshot(ava.page, "demo");
    console.log(`screenshot: ${path}`);
  });

  it("Ava sees Ben sign out: offline with a last-seen time", async () => {
    await ben.signOut();
    await ava.waitForMatchStatus(BEN, "offline");
    assert.match(await ava.matchText(BEN, "seen"), /^Last seen (just now|\d+ seconds? ago)$/);
    assert.equal(await ava.reloaded(), false);
  });
});
