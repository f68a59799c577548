/** Loads protocol-spec/vectors/*.json (exact integers) from the repository. */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { JsonValue, parseJsonExact } from "./json-bigint.js";

/** sdk/typescript/build-test/test/support → the repository root. */
const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../../..");
export const VECTOR_DIR = resolve(REPO_ROOT, "protocol-spec/vectors");

export type Vector = { [key: string]: JsonValue };

export function loadVectorFile(name: string): { [key: string]: JsonValue; vectors: Vector[] } {
  const file = parseJsonExact(readFileSync(resolve(VECTOR_DIR, name), "utf8"));
  return file as { [key: string]: JsonValue; vectors: Vector[] };
}
