/**
 * The hard limits of protocol version 1 (SPEC.md §3) and the other fixed numbers of the
 * wire format. A server may configure lower values; it announces only `max_frame`.
 */

export const PROTOCOL_VERSION = 1;
/** Largest frame, type byte and body, in either direction. */
export const MAX_FRAME = 1_048_576;
/** Users in WATCH, UNWATCH, QUERY; entries in PRESENCE and PRESENCE_PUSH. */
export const MAX_IDS = 1_000;
/** Entries in OPEN, OPENED, CLOSE and a batch. */
export const MAX_BATCH = 65_536;
export const MAX_TOKEN = 1_024;
export const MAX_STATUS_TEXT = 128;
export const MAX_ERROR_TEXT = 256;
export const MAX_PAYLOAD = 65_536;
/** TIMELINE `limit` and PAGE `count`. */
export const MAX_PAGE = 100;
export const MAX_DATAGRAM = 65_507;
export const MIN_DATAGRAM = 13;
/** Routing in a cluster (§14): partitions, members in CLUSTER_MAP_REPLY, a member's name and addresses. */
export const MAX_PARTITIONS = 65_536;
export const MAX_MEMBERS = 1_024;
export const MAX_NODE = 64;
export const MAX_ADDR = 255;

export const U32_LIMIT = 2 ** 32;
export const U64_MAX = (1n << 64n) - 1n;
/** HEARTBEAT `word` is below 2^35 (§4.12). */
export const HEARTBEAT_WORD_LIMIT = 2 ** 35;
/** The HELLO magic, "HL". */
export const HELLO_MAGIC = [0x48, 0x4c] as const;
