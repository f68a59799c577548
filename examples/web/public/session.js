// Signing in: the page's settings and a token from the dev server, then one SDK client for
// the signed-in user. DEV-ONLY token source: /dev/token is served by serve.mjs for demo
// users on loopback; a real site gets the token from its own backend after its login.
import { connect } from "/sdk/index.js";

/** @returns {Promise<{ wsUrl: string }>} */
export async function loadConfig() {
  const response = await fetch("/dev/config");
  if (!response.ok) throw new Error(`dev config: HTTP ${response.status}`);
  return response.json();
}

/** DEV-ONLY: a token for a demo user. @param {number} user */
async function demoToken(user) {
  const response = await fetch(`/dev/token?user=${encodeURIComponent(user)}`);
  const body = (await response.text()).trim();
  if (!response.ok) throw new Error(`token: ${body || `HTTP ${response.status}`}`);
  return body;
}

/**
 * A connected client for `user`, whose connection state shows in `pill`.
 * @param {{ wsUrl: string }} config @param {number} user @param {HTMLElement} pill
 */
export async function signIn(config, user, pill) {
  const client = await connect({ url: config.wsUrl, token: await demoToken(user), device: "web" });
  const show = (state, text) => {
    pill.hidden = false;
    pill.dataset.state = state;
    pill.textContent = text;
  };
  show("live", "Live");
  client.on("connected", () => show("live", "Live"));
  client.on("reconnecting", ({ attempt }) => show("reconnecting", attempt > 1 ? `Reconnecting… (try ${attempt})` : "Reconnecting…"));
  client.on("goaway", () => show("reconnecting", "Server restarting…"));
  // Closed for good: say why, unless the user signed out (then the badge goes away).
  client.on("closed", (error) => (error ? show("closed", `Disconnected: ${error.message}`) : (pill.hidden = true)));
  return client;
}
