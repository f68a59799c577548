// Headless Chromium for the tests: Debian's binary driven by playwright-core (no browser
// download), pages of a fixed size, and screenshots written under docs/screenshots/.
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { chromium } from "playwright-core";
import { flags, REPO } from "./env.mjs";

export const VIEWPORT = { width: 1280, height: 900 };

export function launch() {
  return chromium.launch({ executablePath: flags.chromium, headless: true, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
}

/** A fresh context (its own storage: one signed-in user each) and a page in it. */
export async function newPage(browser) {
  const context = await browser.newContext({ viewport: VIEWPORT, reducedMotion: "reduce", locale: "en-US" });
  const page = await context.newPage();
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  return page;
}

/** Writes docs/screenshots/NAME.png and returns its path. */
export async function screenshot(page, name) {
  const dir = resolve(REPO, "docs/screenshots");
  mkdirSync(dir, { recursive: true });
  const path = resolve(dir, `${name}.png`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path, fullPage: true });
  return path;
}
