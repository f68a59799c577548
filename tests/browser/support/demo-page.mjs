// The demo page as the tests drive it: sign in, post, set a status, read matches and
// moments, all through the data-testid hooks of examples/web/public/index.html.
const TIMEOUT = 10_000;

export class DemoPage {
  /** @param {import("playwright-core").Page} page */
  constructor(page) {
    this.page = page;
  }

  /** Opens the demo and signs in as demo user `id`; resolves once the feed's first page is shown. */
  async signIn(url, id, pageSize = 10) {
    await this.page.goto(`${url}?pageSize=${pageSize}`);
    await this.page.getByTestId(`signin-${id}`).click();
    await this.page.locator('[data-testid="connection"][data-state="live"]').waitFor({ timeout: TIMEOUT });
    await this.page.locator('[data-testid="older"]:visible, [data-testid="feed-empty"]:visible, [data-testid="feed-end"]:visible').first().waitFor({ timeout: TIMEOUT });
  }

  async signOut() {
    await this.page.getByTestId("sign-out").click();
    await this.page.getByTestId("people").waitFor({ timeout: TIMEOUT });
  }

  /** Posts a moment and waits until it heads the author's own feed. */
  async post(text) {
    await this.page.getByTestId("moment-text").fill(text);
    await this.page.getByTestId("moment-post").click();
    await this.moment(text).waitFor({ timeout: TIMEOUT });
  }

  async setStatus(status, text) {
    await this.page.getByTestId("status-select").selectOption(status);
    await this.page.getByTestId("status-text").fill(text);
    await this.page.getByTestId("status-save").click();
    await this.page.getByTestId("status-note").filter({ hasText: "Saved" }).waitFor({ timeout: TIMEOUT });
  }

  /** Waits until match `id` shows `status` (the row's data-status). */
  async waitForMatchStatus(id, status) {
    await this.page.locator(`[data-testid="match-${id}"][data-status="${status}"]`).waitFor({ timeout: TIMEOUT });
  }

  async matchText(id, what) {
    return (await this.page.getByTestId(`match-${id}-${what}`).textContent())?.trim() ?? "";
  }

  moment(text) {
    return this.page.getByTestId("moments").getByTestId("moment").filter({ hasText: text });
  }

  /** The texts of the moments shown, top to bottom. */
  momentTexts() {
    return this.page.locator('[data-testid="moments"] .moment-text').allTextContents();
  }

  /** Marks the window, so that `reloaded()` tells whether the page was loaded again since. */
  async markWindow() {
    await this.page.evaluate(() => (window.__heartlineTestMark = true));
  }

  async reloaded() {
    return !(await this.page.evaluate(() => window.__heartlineTestMark === true));
  }
}
