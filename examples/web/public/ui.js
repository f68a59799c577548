// Small view helpers every panel of the demo shares: templates, avatars, status labels,
// relative times and the screen-reader announcer. No state lives here.
import { userById } from "./users.js";

/** A fresh copy of `<template id=ID>`'s first element. @param {string} id @returns {HTMLElement} */
export function fromTemplate(id) {
  const template = /** @type {HTMLTemplateElement} */ (document.getElementById(id));
  return /** @type {HTMLElement} */ (template.content.firstElementChild.cloneNode(true));
}

/** A demo user's name, or "Member N" for an id the demo does not know. @param {number | bigint} id */
export function nameOf(id) {
  return userById(Number(id))?.name ?? `Member ${String(id)}`;
}

/**
 * A round avatar with the user's initial, optionally with a status dot.
 * @param {number | bigint} id @param {string | null} status
 */
export function avatar(id, status = null) {
  const user = userById(Number(id));
  const element = document.createElement("span");
  element.className = "avatar";
  element.setAttribute("aria-hidden", "true");
  element.style.setProperty("--hue", String(user?.hue ?? 220));
  element.textContent = (user?.name ?? "?").slice(0, 1);
  if (status) {
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.dataset.status = status;
    element.append(dot);
  }
  return element;
}

/** Puts `child` into the element's `.avatar-slot`. @param {Element} parent @param {Element} child */
export function placeAvatar(parent, child) {
  parent.querySelector(".avatar-slot")?.replaceChildren(child);
}

/** What others see, in words: offline covers invisible. */
export const STATUS_LABELS = { online: "Online", away: "Away", busy: "Busy", invisible: "Invisible", offline: "Offline" };

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const STEPS = [
  [60, "second"],
  [60, "minute"],
  [24, "hour"],
  [7, "day"],
  [Infinity, "week"],
];

/** "just now", "5 minutes ago", "yesterday". @param {number} ms unix ms */
export function ago(ms, now = Date.now()) {
  let value = Math.round((ms - now) / 1000);
  if (Math.abs(value) < 10) return "just now";
  for (const [size, unit] of STEPS) {
    if (Math.abs(value) < size) return relative.format(value, /** @type {Intl.RelativeTimeFormatUnit} */ (unit));
    value = Math.round(value / size);
  }
  return relative.format(value, "week");
}

/** Reads `message` to screen-reader users without moving focus. @param {string} message */
export function announce(message) {
  const announcer = document.getElementById("announcer");
  if (announcer) announcer.textContent = message;
}
