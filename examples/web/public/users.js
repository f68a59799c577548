// The demo's cast: six users of a dating site and who matched with whom. Shared by the
// page (sign-in list, names, avatars) and the dev server (which users it mints tokens for).
// A real site keeps these in its own database; heartline only knows the numeric ids.

/** @typedef {{ id: number, name: string, age: number, city: string, about: string, hue: number }} DemoUser */

/** @type {readonly DemoUser[]} */
export const USERS = Object.freeze([
  { id: 1, name: "Ava", age: 29, city: "Lisbon", about: "Sunrise runs, bad puns, good coffee.", hue: 340 },
  { id: 2, name: "Ben", age: 32, city: "Porto", about: "Cooks for friends, climbs on weekends.", hue: 200 },
  { id: 3, name: "Chloé", age: 27, city: "Lyon", about: "Bookshops, jazz bars and long walks.", hue: 28 },
  { id: 4, name: "Dev", age: 34, city: "Berlin", about: "Builds synths, collects houseplants.", hue: 150 },
  { id: 5, name: "Emi", age: 30, city: "Kyoto", about: "Film cameras and mountain trails.", hue: 265 },
  { id: 6, name: "Farid", age: 31, city: "Marseille", about: "Sailing, football, grandmother's recipes.", hue: 95 },
]);

/** Mutual matches, as unordered pairs of ids. */
const MATCH_PAIRS = [
  [1, 2], [1, 3], [1, 4], [1, 5],
  [2, 3], [2, 6],
  [3, 5], [4, 6], [5, 6],
];

/** @param {number} id */
export function userById(id) {
  return USERS.find((user) => user.id === id) ?? null;
}

/** The ids `id` matched with, ascending. @param {number} id @returns {number[]} */
export function matchesOf(id) {
  return MATCH_PAIRS.flatMap(([a, b]) => (a === id ? [b] : b === id ? [a] : [])).sort((x, y) => x - y);
}
