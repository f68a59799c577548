// The "Moments" feed: the home timeline (the user's own posts and their matches', since
// sign-in follows every match), newest first. Owns the list, its paging cursor ("Older
// moments" walks back with maxId until an empty page), live items (LIVE on: ITEM_PUSH and
// DELETED_PUSH without reload; after a reconnection, `gap` catches up forwards with minId),
// the composer and the moment payload (kind 1: JSON { text, at }; the post id is opaque).
import { announce, avatar, ago, fromTemplate, nameOf, placeAvatar } from "./ui.js";

export const MOMENT_KIND = 1;
const MAX_CATCH_UP_PAGES = 10;
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** @param {string} text */
export function encodeMoment(text) {
  return utf8.encode(JSON.stringify({ text, at: Date.now() }));
}

/** A payload as { text, at }; text of any other shape shows as it is. @param {Uint8Array} payload */
export function decodeMoment(payload) {
  const raw = fromUtf8.decode(payload);
  try {
    const value = JSON.parse(raw);
    if (typeof value?.text === "string") return { text: value.text, at: Number.isFinite(value.at) ? value.at : null };
  } catch {
    // not JSON: another client's plain text
  }
  return { text: raw, at: null };
}

export class MomentsFeed {
  /** @param {{ list: HTMLElement, older: HTMLButtonElement, end: HTMLElement, empty: HTMLElement, error: HTMLElement, form: HTMLFormElement, input: HTMLTextAreaElement, counter: HTMLElement }} view @param {number} pageSize */
  constructor(view, pageSize) {
    this.view = view;
    this.pageSize = pageSize;
    /** A page request is out: "Older moments" waits for it. */
    this.loading = false;
    this.reset();
    this.handlers = {
      item: (item) => this.add(item, true),
      deleted: (post) => this.remove(post),
      gap: () => void this.catchUp(),
    };
    view.older.addEventListener("click", () => void this.loadOlder());
    view.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.post();
    });
    view.input.addEventListener("input", () => this.count());
    view.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) view.form.requestSubmit();
    });
    window.setInterval(() => this.refreshTimes(), 30_000);
  }

  reset() {
    this.client?.off("item", this.handlers.item).off("deleted", this.handlers.deleted).off("gap", this.handlers.gap);
    this.client = undefined;
    this.me = 0n;
    /** Oldest post id of the pages walked back so far (the `maxId` cursor); null before the first page. */
    this.cursor = null;
    this.exhausted = false;
    this.view.list.replaceChildren();
    this.view.older.hidden = true;
    this.view.end.hidden = true;
    this.view.empty.hidden = true;
    this.view.error.textContent = "";
  }

  /**
   * LIVE on first, then the newest page: an item published in between is in one or both,
   * and `add` keeps one copy.
   * @param {import("/sdk/index.js").HeartlineClient} client @param {bigint} me
   */
  async start(client, me) {
    this.reset();
    this.client = client;
    this.me = me;
    client.on("item", this.handlers.item).on("deleted", this.handlers.deleted).on("gap", this.handlers.gap);
    await client.setLive(true);
    await this.loadOlder();
  }

  /** The next page back (the first page when nothing is loaded). */
  async loadOlder() {
    if (!this.client || this.exhausted || this.loading) return;
    this.loading = true;
    this.view.older.disabled = true;
    try {
      const page = await this.client.homeTimeline(this.cursor === null ? {} : { maxId: this.cursor }, this.pageSize);
      for (const item of page) this.add(item, false);
      if (page.length === 0) this.exhausted = true;
      else this.cursor = page[page.length - 1].post;
      this.view.error.textContent = "";
    } catch (error) {
      this.view.error.textContent = `Could not load moments: ${error.message}`;
    } finally {
      this.loading = false;
      this.view.older.disabled = false;
      this.showPagingState();
    }
  }

  /** After a reconnection with LIVE: walk forwards from the newest moment held. */
  async catchUp() {
    const first = this.view.list.firstElementChild;
    if (!this.client || !first) return;
    let minId = BigInt(first.dataset.post);
    for (let pages = 0; pages < MAX_CATCH_UP_PAGES; pages++) {
      const page = await this.client.homeTimeline({ minId }, 100).catch(() => []);
      if (page.length === 0) return;
      for (const item of page) this.add(item, true);
      minId = page[0].post;
    }
  }

  async post() {
    const text = this.view.input.value.trim();
    if (!this.client || text === "") return;
    const button = this.view.form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const post = await this.client.publish(MOMENT_KIND, encodeMoment(text));
      this.add({ post, author: this.me, kind: MOMENT_KIND, payload: encodeMoment(text) }, false);
      this.view.input.value = "";
      this.count();
      this.view.error.textContent = "";
    } catch (error) {
      this.view.error.textContent = error.codeName === "RATE_LIMITED" ? "Easy there! Wait a second before posting again." : `Could not post: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }

  /** Inserts an item at its place by post id, once. @param {{ post: bigint, author: bigint, kind: number, payload: Uint8Array }} item @param {boolean} live */
  add(item, live) {
    const key = String(item.post);
    if (item.kind !== MOMENT_KIND || this.view.list.querySelector(`[data-post="${key}"]`)) return;
    const element = this.render(item);
    const after = [...this.view.list.children].find((li) => BigInt(li.dataset.post) < item.post);
    this.view.list.insertBefore(element, after ?? null);
    if (live) {
      element.classList.add("fresh");
      if (item.author !== this.me) announce(`New moment from ${nameOf(item.author)}`);
    }
    this.showPagingState();
  }

  /** @param {bigint} post */
  remove(post) {
    this.view.list.querySelector(`[data-post="${String(post)}"]`)?.remove();
    this.showPagingState();
  }

  render(item) {
    const moment = decodeMoment(item.payload);
    const element = fromTemplate("moment-template");
    element.dataset.post = String(item.post);
    element.dataset.author = String(item.author);
    placeAvatar(element, avatar(item.author));
    element.querySelector(".moment-author").textContent = item.author === this.me ? `${nameOf(item.author)} (you)` : nameOf(item.author);
    element.querySelector(".moment-text").textContent = moment.text;
    const time = element.querySelector("time");
    if (moment.at !== null) {
      time.dateTime = new Date(moment.at).toISOString();
      time.title = new Date(moment.at).toLocaleString();
      time.textContent = ago(moment.at);
    }
    if (item.author === this.me) {
      const remove = element.querySelector(".delete");
      remove.hidden = false;
      remove.setAttribute("aria-label", `Delete your moment: ${moment.text.slice(0, 40)}`);
      remove.addEventListener("click", () => {
        this.client?.deletePost(item.post).then(() => this.remove(item.post), (error) => (this.view.error.textContent = `Could not delete: ${error.message}`));
      });
    }
    return element;
  }

  showPagingState() {
    const any = this.view.list.childElementCount > 0;
    this.view.older.hidden = this.exhausted || this.cursor === null;
    this.view.end.hidden = !(this.exhausted && any);
    this.view.empty.hidden = any || !this.exhausted;
  }

  count() {
    this.view.counter.textContent = `${this.view.input.value.length} / ${this.view.input.maxLength}`;
  }

  refreshTimes() {
    for (const time of this.view.list.querySelectorAll("time[datetime]")) time.textContent = ago(Date.parse(time.dateTime));
  }
}
