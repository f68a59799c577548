/**
 * A JSON parser that keeps integers exact: every integer literal becomes a bigint (the
 * vectors hold u64 values up to 2^64 − 1, beyond what a JSON.parse number keeps). Other
 * numbers stay numbers. Only for reading the conformance vectors.
 */

export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | { [key: string]: JsonValue };

export function parseJsonExact(text: string): JsonValue {
  let pos = 0;
  const fail = (what: string): never => {
    throw new SyntaxError(`JSON: ${what} at offset ${pos}`);
  };
  const skipSpace = (): void => {
    while (pos < text.length && " \t\n\r".includes(text[pos]!)) pos++;
  };
  const expect = (char: string): void => {
    skipSpace();
    if (text[pos] !== char) fail(`expected ${char}`);
    pos++;
  };
  const value = (): JsonValue => {
    skipSpace();
    const char = text[pos];
    if (char === "{") {
      pos++;
      const object: { [key: string]: JsonValue } = {};
      skipSpace();
      if (text[pos] === "}") return pos++, object;
      for (;;) {
        skipSpace();
        const key = value();
        if (typeof key !== "string") fail("object key");
        expect(":");
        object[key as string] = value();
        skipSpace();
        if (text[pos] === "}") return pos++, object;
        expect(",");
      }
    }
    if (char === "[") {
      pos++;
      const array: JsonValue[] = [];
      skipSpace();
      if (text[pos] === "]") return pos++, array;
      for (;;) {
        array.push(value());
        skipSpace();
        if (text[pos] === "]") return pos++, array;
        expect(",");
      }
    }
    if (char === '"') {
      const start = pos;
      pos++;
      while (text[pos] !== '"') {
        if (pos >= text.length) fail("unterminated string");
        pos += text[pos] === "\\" ? 2 : 1;
      }
      pos++;
      return JSON.parse(text.slice(start, pos)) as string;
    }
    const literal = /^-?\d+(\.\d+)?([eE][+-]?\d+)?|^true|^false|^null/.exec(text.slice(pos, pos + 400));
    if (!literal) return fail("unexpected character");
    pos += literal[0].length;
    const token = literal[0];
    if (token === "true") return true;
    if (token === "false") return false;
    if (token === "null") return null;
    return /^-?\d+$/.test(token) ? BigInt(token) : Number(token);
  };
  const result = value();
  skipSpace();
  if (pos !== text.length) fail("trailing text");
  return result;
}
