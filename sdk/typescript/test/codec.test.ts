/**
 * Codec properties the vectors do not pin down: the varint and zigzag tables of SPEC.md
 * §2.2–§2.3, the frame-length rules of §4.1, the stream splitter, encoder refusals, and
 * that no input, however broken, makes the decoder throw anything but a ProtocolError.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  BodyReader,
  BodyWriter,
  decodeFrame,
  EncodeError,
  encodeFrame,
  FrameSplitter,
  ProtocolError,
  readFrameLength,
  unzigzag,
  zigzag,
} from "../src/codec/index.js";
import { fromHex, toHex } from "./support/hex.js";
import { loadVectorFile } from "./support/vectors.js";

const U64_MAX = (1n << 64n) - 1n;

function readVarint(hex: string): bigint {
  const r = new BodyReader(fromHex(hex));
  const value = r.varint();
  r.finish();
  return value;
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof ProtocolError) return e.codeName;
    throw e;
  }
  return "none";
}

describe("varint (§2.2)", () => {
  const table: [bigint, string][] = [
    [0n, "00"], [1n, "01"], [127n, "7f"], [128n, "8001"], [300n, "ac02"], [1000n, "e807"],
    [16383n, "ff7f"], [16384n, "808001"], [1n << 20n, "808040"], [U64_MAX, "ffffffffffffffffff01"],
  ];
  for (const [value, hex] of table) {
    it(`${value} <-> ${hex}`, () => {
      const w = new BodyWriter();
      w.varint(value);
      assert.equal(toHex(w.bytes()), hex);
      assert.equal(readVarint(hex), value);
    });
  }
  for (const hex of ["8000", "ff00", "ffffffffffffffffff02", "8080808080808080808100", "8080"]) {
    it(`rejects ${hex}`, () => assert.equal(codeOf(() => readVarint(hex)), "MALFORMED"));
  }
  it("varint32 rejects 2^32", () => assert.equal(codeOf(() => new BodyReader(fromHex("8080808010")).varint32()), "MALFORMED"));
  it("numbers and bigints encode alike", () => {
    for (const n of [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 35, Number.MAX_SAFE_INTEGER]) {
      const a = new BodyWriter();
      a.varint(n);
      const b = new BodyWriter();
      b.varint(BigInt(n));
      assert.equal(toHex(a.bytes()), toHex(b.bytes()));
    }
  });
  it("refuses values outside u64", () => {
    assert.throws(() => new BodyWriter().varint(-1n), EncodeError);
    assert.throws(() => new BodyWriter().varint(U64_MAX + 1n), EncodeError);
    assert.throws(() => new BodyWriter().varint(1.5), EncodeError);
  });
});

describe("zigzag (§2.3)", () => {
  const table: [bigint, bigint][] = [
    [0n, 0n], [-1n, 1n], [1n, 2n], [-2n, 3n], [2n, 4n], [-3n, 5n], [5n, 10n], [15n, 30n], [-16n, 31n],
    [16n, 32n], [2047n, 4094n], [-2048n, 4095n], [(1n << 63n) - 1n, U64_MAX - 1n], [-(1n << 63n), U64_MAX],
  ];
  for (const [n, z] of table) {
    it(`${n} <-> ${z}`, () => {
      assert.equal(zigzag(n), z);
      assert.equal(unzigzag(z), n);
    });
  }
});

describe("frame length (§4.1)", () => {
  it("accepts 1 MiB and refuses one byte more or a 4th byte", () => {
    assert.deepEqual(readFrameLength(fromHex("808040")), { length: 1_048_576, prefixSize: 3 });
    assert.equal(codeOf(() => readFrameLength(fromHex("818040"))), "FRAME_TOO_LARGE");
    assert.equal(codeOf(() => readFrameLength(fromHex("80808001"))), "FRAME_TOO_LARGE");
    assert.equal(codeOf(() => readFrameLength(fromHex("8000"))), "MALFORMED");
    assert.equal(codeOf(() => readFrameLength(fromHex("00"))), "MALFORMED");
    assert.equal(readFrameLength(fromHex("80")), null, "needs more bytes");
  });
  it("honours a lower announced max_frame", () => {
    assert.equal(codeOf(() => readFrameLength(fromHex("8001"), 100)), "FRAME_TOO_LARGE");
    assert.throws(() => encodeFrame({ type: "PUBLISH", req: 1n, kind: 0, payload: new Uint8Array(200) }, 100), EncodeError);
  });
  it("a frame with bytes missing or left over is MALFORMED", () => {
    assert.equal(codeOf(() => decodeFrame(fromHex("020600ff"))), "MALFORMED");
    assert.equal(codeOf(() => decodeFrame(fromHex("0306"))), "MALFORMED");
  });
  it("the spec's 300-byte PUBLISH has a 2-byte length", () => {
    const frame = encodeFrame({ type: "PUBLISH", req: 10n, kind: 1, payload: new Uint8Array(300).fill(0x78) });
    assert.equal(toHex(frame.subarray(0, 7)), "b102300a01ac02");
  });
  it("a bytes(max) length over max and past the body gets the field's error (§2.4)", () => {
    assert.equal(codeOf(() => decodeFrame(fromHex("0630010181800" + "4"))), "PAYLOAD_TOO_LARGE");
  });
});

describe("FrameSplitter", () => {
  it("splits a stream cut at every byte", () => {
    const frames = ["021000", "0103", "1005070b0c746f6f206d616e7920696473", "040401d00f"];
    const stream = fromHex(frames.join(""));
    const splitter = new FrameSplitter();
    const out: string[] = [];
    for (const byte of stream) out.push(...splitter.push(Uint8Array.of(byte)).map(toHex));
    assert.deepEqual(out, frames);
  });
});

describe("encoder refusals", () => {
  it("refuses what no valid frame carries", () => {
    assert.throws(() => encodeFrame({ type: "SET_STATUS", req: 1n, session: null, status: "online", text: "x".repeat(129) }), EncodeError);
    assert.throws(() => encodeFrame({ type: "TIMELINE", req: 1n, source: "home", cursor: { maxId: null, sinceId: 1n, minId: 2n }, limit: 10 }), EncodeError);
    assert.throws(() => encodeFrame({ type: "TIMELINE", req: 1n, source: "home", cursor: { maxId: null, sinceId: null, minId: null }, limit: 0 }), EncodeError);
    assert.throws(() => encodeFrame({ type: "PRESENCE_PUSH", entries: [] }), EncodeError);
    assert.throws(() => encodeFrame({ type: "WATCH", req: -1n, users: [] }), EncodeError);
  });
  it("keeps ids above 2^53 exact", () => {
    const post = (1n << 63n) + 12345n;
    const { message } = decodeFrame(encodeFrame({ type: "DELETE", req: 9007199254740993n, post }));
    assert.deepEqual(message, { type: "DELETE", req: 9007199254740993n, post });
  });
});

describe("hostile input", () => {
  /** A deterministic generator, so that a failure can be replayed. */
  function random(seed: number): () => number {
    let state = seed >>> 0;
    return () => {
      state = (Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
      return state / 2 ** 32;
    };
  }
  const seeds = ["tcp.json", "batch.json", "malformed.json"].flatMap((f) => loadVectorFile(f).vectors.map((v) => fromHex(v.hex as string)));

  it("mutated vectors and random bytes throw only ProtocolError", () => {
    const next = random(12345);
    for (let round = 0; round < 20_000; round++) {
      const base = seeds[Math.floor(next() * seeds.length)]!;
      const input = base.slice();
      const mutations = 1 + Math.floor(next() * 3);
      for (let m = 0; m < mutations && input.length > 0; m++) input[Math.floor(next() * input.length)] = Math.floor(next() * 256);
      const cut = next() < 0.2 ? input.subarray(0, Math.floor(next() * input.length)) : input;
      const noise = Uint8Array.from({ length: Math.floor(next() * 24) }, () => Math.floor(next() * 256));
      for (const candidate of [cut, noise]) {
        try {
          const { message, canonical } = decodeFrame(candidate);
          // What decodes re-encodes to the same bytes, unless it is a decode-only form.
          if (canonical) assert.equal(toHex(encodeFrame(message)), toHex(candidate));
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw new Error(`${toHex(candidate)}: ${String(e)}`);
        }
      }
    }
  });
});
