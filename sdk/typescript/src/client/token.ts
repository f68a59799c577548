/**
 * Tokens as the client accepts them: the raw bytes HELLO carries (SPEC.md §12.1), or the
 * lowercase hexadecimal `heartline token` prints (surrounding whitespace ignored).
 */
import { MAX_TOKEN } from "../codec/limits.js";
import { InvalidArgumentError } from "./errors.js";

export function tokenBytes(token: string | Uint8Array): Uint8Array {
  if (token instanceof Uint8Array) {
    if (token.length > MAX_TOKEN) throw new InvalidArgumentError(`a token has at most ${MAX_TOKEN} bytes`);
    return token.slice();
  }
  const hex = token.trim();
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new InvalidArgumentError("a text token must be the hexadecimal `heartline token` prints");
  }
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return tokenBytes(bytes);
}
