// The "Your matches" panel: watches the signed-in user's matches and keeps one row per
// match current from the WATCH snapshot and every presence diff the SDK emits (status,
// status text, last seen). Owns the rows and the online count; relative times refresh on a
// timer so that "2 minutes ago" does not go stale.
import { announce, avatar, ago, fromTemplate, nameOf, placeAvatar, STATUS_LABELS } from "./ui.js";
import { userById } from "./users.js";

const RANK = { online: 0, busy: 1, away: 2, invisible: 3, offline: 3 };

export class MatchesPanel {
  /** @param {HTMLElement} list @param {HTMLElement} count */
  constructor(list, count) {
    this.list = list;
    this.count = count;
    /** @type {Map<string, { user: bigint, status: string, text: string, lastSeenMs: bigint }>} */
    this.entries = new Map();
    this.timer = 0;
    this.onPresence = (entry) => this.update(entry, true);
  }

  /**
   * Watches `ids` on `client`: renders the snapshot, then follows diffs.
   * @param {import("/sdk/index.js").HeartlineClient} client @param {number[]} ids
   */
  async start(client, ids) {
    this.stop();
    this.client = client;
    client.on("presence", this.onPresence);
    for (const entry of await client.watch(ids)) this.update(entry, false);
    this.timer = window.setInterval(() => this.render(), 15_000);
  }

  stop() {
    this.client?.off("presence", this.onPresence);
    this.client = undefined;
    window.clearInterval(this.timer);
    this.entries.clear();
    this.list.replaceChildren();
    this.count.textContent = "";
  }

  /** @param {{ user: bigint, status: string, text: string, lastSeenMs: bigint }} entry @param {boolean} live */
  update(entry, live) {
    const key = String(entry.user);
    const before = this.entries.get(key);
    this.entries.set(key, entry);
    this.render();
    if (live && before && before.status !== entry.status) announce(`${nameOf(entry.user)} is now ${STATUS_LABELS[entry.status] ?? entry.status}`);
  }

  /** Rows sorted online first, then by name; each row rebuilt from its entry. */
  render() {
    const sorted = [...this.entries.values()].sort((a, b) => RANK[a.status] - RANK[b.status] || nameOf(a.user).localeCompare(nameOf(b.user)));
    this.list.replaceChildren(...sorted.map((entry) => row(entry)));
    const online = sorted.filter((entry) => entry.status !== "offline").length;
    this.count.textContent = `${online} of ${sorted.length} online`;
  }
}

/** One match's row. */
function row(entry) {
  const id = String(entry.user);
  const item = fromTemplate("match-template");
  item.dataset.testid = `match-${id}`;
  item.dataset.status = entry.status;
  placeAvatar(item, avatar(entry.user, entry.status));
  const user = userById(Number(entry.user));
  const name = item.querySelector(".match-name");
  name.textContent = nameOf(entry.user);
  if (user) name.title = `${user.age}, ${user.city}`;
  const label = item.querySelector(".status-label");
  label.textContent = STATUS_LABELS[entry.status] ?? entry.status;
  label.dataset.status = entry.status;
  label.dataset.testid = `match-${id}-status`;
  const text = item.querySelector(".match-text");
  text.textContent = entry.text;
  text.hidden = entry.text === "";
  text.dataset.testid = `match-${id}-text`;
  const seen = item.querySelector(".match-seen");
  seen.textContent = seenLine(entry);
  seen.dataset.testid = `match-${id}-seen`;
  return item;
}

/** "Active now", "Away since 5 minutes ago", "Last seen yesterday", "Not seen yet". */
function seenLine(entry) {
  const since = entry.lastSeenMs > 0n ? ago(Number(entry.lastSeenMs)) : null;
  if (entry.status === "online") return "Active now";
  if (entry.status === "offline") return since ? `Last seen ${since}` : "Not seen yet";
  return since ? `${STATUS_LABELS[entry.status]} since ${since}` : STATUS_LABELS[entry.status];
}
