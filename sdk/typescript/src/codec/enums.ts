/**
 * The enumerations of SPEC.md §2.8 as string unions, with their wire values. A table's
 * index is the wire value; null marks a value the enumeration does not define.
 */

/** A presence status. `offline` is only ever reported by the server, never set. */
export type Status = "offline" | "online" | "away" | "busy" | "invisible";
/** The statuses a client may set (1..=4). */
export type SettableStatus = Exclude<Status, "offline">;
export type Device = "unknown" | "desktop" | "mobile" | "web" | "bot";
export type Role = "client" | "gateway";
export type GraphOp = "follow" | "unfollow" | "block" | "unblock";
export type GoawayReason = "shutdown" | "restart" | "overload";

export const STATUSES: readonly Status[] = ["offline", "online", "away", "busy", "invisible"];
export const DEVICES: readonly Device[] = ["unknown", "desktop", "mobile", "web", "bot"];
export const ROLES: readonly Role[] = ["client", "gateway"];
export const GRAPH_OPS: readonly (GraphOp | null)[] = [null, "follow", "unfollow", "block", "unblock"];
export const GOAWAY_REASONS: readonly GoawayReason[] = ["shutdown", "restart", "overload"];

/** The wire value of `name` in `table`, or -1 when it is not one of its names. */
export function wireValue<T>(table: readonly (T | null)[], name: T): number {
  return table.indexOf(name);
}

export function isSettableStatus(value: unknown): value is SettableStatus {
  return value === "online" || value === "away" || value === "busy" || value === "invisible";
}
