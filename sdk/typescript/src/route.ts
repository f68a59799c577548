/**
 * Routing in a cluster (SPEC.md §14.2): a user's partition and a partition's owner, as
 * every server and SDK computes them. Pure functions of bigints; no I/O. A client never
 * needs them (servers redirect it and {@link HeartlineClient} follows); a gateway over WebSocket may
 * use them with the members of a CLUSTER_MAP_REPLY.
 */
import type { MapMember } from "./codec/messages.js";
import type { HeartlineClient } from "./client.js";

const MASK = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;

/** SplitMix64's finalizer. */
export function mix(x: bigint): bigint {
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & MASK;
  return x ^ (x >> 31n);
}

/** FNV-1a 64 of a member's name (its UTF-8 bytes). */
export function nameHash(name: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(name)) h = ((h ^ BigInt(b)) * 0x100000001b3n) & MASK;
  return h;
}

/** The partition of `user` among `partitions` (0 counts as 1). */
export function partitionOf(user: bigint, partitions: number): number {
  return Number(mix((user ^ GOLDEN) & MASK) % BigInt(Math.max(partitions, 1)));
}

/** The rendezvous weight, for `partition`, of the member whose name hashes to `node`. */
export function weight(node: bigint, partition: number): bigint {
  return mix(node ^ mix((BigInt(partition) + GOLDEN) & MASK));
}

/** The member owning `user`: highest weight, ties to the smaller name; undefined without members. */
export function ownerOf<M extends Pick<MapMember, "node">>(members: readonly M[], user: bigint, partitions: number): M | undefined {
  const partition = partitionOf(user, partitions);
  let best: { member: M; weight: bigint } | undefined;
  for (const member of members) {
    const w = weight(nameHash(member.node), partition);
    if (!best || w > best.weight || (w === best.weight && member.node < best.member.node)) best = { member, weight: w };
  }
  return best?.member;
}
