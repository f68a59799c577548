/**
 * The per-connection presence version table (SPEC.md §6.4): an entry whose version is not
 * greater than the last accepted one for its user is stale and dropped; the first entry
 * for a user is always accepted. The table is discarded when the connection ends.
 */
import type { PresenceEntry } from "../codec/messages.js";

export class VersionTable {
  private readonly latest = new Map<bigint, bigint>();

  /** Whether `entry` is news; if so it becomes the user's latest. */
  accept(entry: PresenceEntry): boolean {
    const known = this.latest.get(entry.user);
    if (known !== undefined && entry.version <= known) return false;
    this.latest.set(entry.user, entry.version);
    return true;
  }

  forget(user: bigint): void {
    this.latest.delete(user);
  }

  clear(): void {
    this.latest.clear();
  }
}
