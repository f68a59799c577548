// The demo's composition: renders the sign-in list, and on sign-in opens one SDK client and
// hands it to the panels (status, matches, moments); on sign-out closes it (BYE: the user's
// matches see them offline at once). `?pageSize=N` (1..100, default 10) sets the feed's page.
import { MatchesPanel } from "./matches.js";
import { MomentsFeed } from "./moments.js";
import { loadConfig, signIn } from "./session.js";
import { StatusForm } from "./status.js";
import { avatar, fromTemplate, placeAvatar } from "./ui.js";
import { matchesOf, userById, USERS } from "./users.js";

const $ = (id) => document.getElementById(id);
const pageSize = Math.min(100, Math.max(1, Number(new URLSearchParams(location.search).get("pageSize")) || 10));

const matches = new MatchesPanel($("matches"), $("matches-count"));
const feed = new MomentsFeed(
  { list: $("moments"), older: $("older"), end: $("feed-end"), empty: $("feed-empty"), error: $("feed-error"), form: $("composer"), input: $("moment-text"), counter: $("moment-count") },
  pageSize,
);
const status = new StatusForm({ form: $("status-form"), select: $("status-select"), input: $("status-text"), note: $("status-note") }, (value) => showMe(value));

/** @type {import("/sdk/index.js").HeartlineClient | undefined} */
let client;
let me = 0;

function showMe(presence) {
  placeAvatar($("me"), avatar(me, presence));
}

function renderPeople(onPick) {
  $("people").replaceChildren(
    ...USERS.map((user) => {
      const card = fromTemplate("person-template");
      placeAvatar(card, avatar(user.id));
      card.querySelector(".person-name").textContent = user.name;
      card.querySelector(".person-meta").textContent = `${user.age} · ${user.city} · ${matchesOf(user.id).length} matches`;
      card.querySelector(".person-about").textContent = user.about;
      const button = card.querySelector("button");
      button.textContent = `Sign in as ${user.name}`;
      button.dataset.testid = `signin-${user.id}`;
      button.addEventListener("click", () => void onPick(user.id));
      return card;
    }),
  );
}

function showView(signedIn) {
  $("signin").hidden = signedIn;
  $("home").hidden = !signedIn;
  $("me").hidden = !signedIn;
}

async function start(config, id) {
  const buttons = $("people").querySelectorAll("button");
  buttons.forEach((button) => (button.disabled = true));
  $("signin-error").textContent = "";
  try {
    client = await signIn(config, id, $("connection"));
    me = id;
    const user = userById(id);
    $("me-name").textContent = user.name;
    document.title = `${user.name} · heartline`;
    showMe("online");
    status.start(client);
    showView(true);
    // Follow every match first, so that the home timeline holds their moments.
    const ids = matchesOf(id);
    await Promise.all(ids.map((match) => client.follow(match)));
    await Promise.all([matches.start(client, ids), feed.start(client, BigInt(id))]);
  } catch (error) {
    await stop();
    $("signin-error").textContent = `Could not sign in: ${error.message}`;
  } finally {
    buttons.forEach((button) => (button.disabled = false));
  }
}

async function stop() {
  const closing = client;
  client = undefined;
  matches.stop();
  feed.reset();
  status.start(undefined);
  showView(false);
  $("connection").hidden = true;
  document.title = "heartline · meet people who are around";
  await closing?.close();
}

try {
  const config = await loadConfig();
  renderPeople((id) => start(config, id));
  $("sign-out").addEventListener("click", () => void stop());
  // Leaving the page says BYE, so matches see the user offline at once rather than after the grace window.
  window.addEventListener("pagehide", () => void client?.close());
} catch (error) {
  $("signin-error").textContent = `The demo server is not answering: ${error.message}`;
}
