/**
 * Maps between the SDK's message objects and the JSON shape of protocol-spec/vectors
 * (vectors/README.md): camelCase ↔ snake_case keys, Uint8Array ↔ lowercase hex, and integer
 * fields that the SDK keeps as `number` (≤ 32 bits) ↔ the exact integers of the JSON.
 */
import type { JsonValue } from "./json-bigint.js";
import { fromHex, toHex } from "./hex.js";

/** Byte-string fields, hex in the vectors. */
const BYTE_FIELDS = new Set(["token", "payload", "udp_key"]);
/** Integer fields the SDK types as number (all others are bigint). */
const NUMBER_FIELDS = new Set([
  "version", "heartbeat_interval_ms", "ttl_ms", "max_frame", "udp_port", "reconnect_after_ms",
  "code", "jitter_ms", "dseq", "kind", "limit", "seq", "ts", "interval_ms", "partitions",
]);
/** Messages whose `version` is a map version, a u64 (SPEC.md §14). */
const U64_VERSION = new Set(["REDIRECT", "CLUSTER_MAP_REPLY"]);

const toSnake = (key: string): string => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const toCamel = (key: string): string => key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

/** An SDK value in the vectors' JSON shape, integers as bigint. */
export function toVectorShape(value: unknown): JsonValue {
  if (value instanceof Uint8Array) return toHex(value);
  if (typeof value === "number") return Number.isInteger(value) ? BigInt(value) : value;
  if (value === null || typeof value === "boolean" || typeof value === "bigint" || typeof value === "string") return value;
  if (Array.isArray(value)) return value.map(toVectorShape);
  if (typeof value === "object") {
    const out: { [key: string]: JsonValue } = {};
    for (const [key, field] of Object.entries(value as Record<string, unknown>)) out[toSnake(key)] = toVectorShape(field);
    return out;
  }
  throw new TypeError(`no vector shape for ${typeof value}`);
}

/** Fields that are numbers except inside a list of this name (a presence entry's version is a u64). */
const BIGINT_INSIDE: Record<string, string> = { version: "entries" };

/**
 * A vector's JSON value as the SDK's objects; `field` names the key it sits under and
 * `list` the list it is an element of.
 */
export function fromVectorShape(value: JsonValue, field = "", list = ""): unknown {
  if (BYTE_FIELDS.has(field) && typeof value === "string") return fromHex(value);
  if (typeof value === "bigint" && NUMBER_FIELDS.has(field) && BIGINT_INSIDE[field] !== list) return Number(value);
  if (Array.isArray(value)) {
    // BATCH_HEARTBEAT statuses are [index, status] pairs: the index is a number.
    if (field === "statuses") return value.map((pair) => [Number((pair as JsonValue[])[0]), (pair as JsonValue[])[1]]);
    return value.map((v) => fromVectorShape(v, field, field));
  }
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    const mapVersion = U64_VERSION.has(String((value as { type?: JsonValue }).type));
    for (const [key, v] of Object.entries(value)) {
      out[toCamel(key)] = mapVersion && key === "version" ? v : fromVectorShape(v, key, list);
    }
    return out;
  }
  return value;
}

/** A canonical text of a vector-shaped value: bigints and numbers tagged, keys sorted. */
export function canonical(value: JsonValue): string {
  if (typeof value === "bigint") return `${value}n`;
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k]!)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
