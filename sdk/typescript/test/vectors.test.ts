/**
 * Runs every conformance vector of protocol-spec/vectors through the codec, both ways, as
 * vectors/README.md describes and check_vectors.py does: a valid frame decodes to exactly
 * its fields and its fields encode to exactly its bytes (decode-only forms excepted); a
 * malformed frame fails with exactly its error and `closes`; a heartbeat moves the state.
 */
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { describe, it } from "node:test";
import {
  decodeFrame,
  encodeFrame,
  HeartbeatState,
  Message,
  ProtocolError,
  SettableStatus,
} from "../src/codec/index.js";
import { nameHash, ownerOf, partitionOf, weight } from "../src/route.js";
import { fromHex, toHex } from "./support/hex.js";
import { canonical, fromVectorShape, toVectorShape } from "./support/vector-shape.js";
import { loadVectorFile, Vector, VECTOR_DIR } from "./support/vectors.js";

function assertSameShape(actual: unknown, expected: Vector[string]): void {
  assert.equal(canonical(toVectorShape(actual)), canonical(expected));
}

function decodeError(hex: string): { error: string; closes: boolean } {
  try {
    decodeFrame(fromHex(hex));
  } catch (e) {
    if (e instanceof ProtocolError) return { error: e.codeName, closes: e.closes };
    throw e;
  }
  throw new assert.AssertionError({ message: `${hex} decoded without an error` });
}

for (const file of ["tcp.json", "batch.json"]) {
  describe(`vectors ${file}`, () => {
    for (const v of loadVectorFile(file).vectors) {
      it(`${v.name}`, () => {
        const { message, canonical: isCanonical } = decodeFrame(fromHex(v.hex as string));
        assertSameShape(message, v.message!);
        if (isCanonical) {
          assert.equal(toHex(encodeFrame(fromVectorShape(v.message!) as Message)), v.hex);
        }
      });
    }
  });
}

describe("vectors malformed.json", () => {
  for (const v of loadVectorFile("malformed.json").vectors) {
    it(`${v.name}`, () => {
      assert.deepEqual(decodeError(v.hex as string), { error: v.error, closes: v.closes });
    });
  }
});

describe("vectors heartbeat.json", () => {
  for (const v of loadVectorFile("heartbeat.json").vectors) {
    it(`${v.name}`, () => {
      const interval = Number(v.interval_ms);
      const before = fromVectorShape(v.before!) as { seq: number; ts: number; status: SettableStatus };
      const stateOf = (s: HeartbeatState) => ({ seq: s.seq, ts: s.ts, status: s.status });
      const receiver = new HeartbeatState(interval, before.status, before.seq, before.ts);
      const { message } = decodeFrame(fromHex(v.hex as string));
      assert.equal(message.type, "HEARTBEAT");
      if (message.type !== "HEARTBEAT") return;
      if (v.error !== undefined) {
        assert.throws(() => receiver.apply(message), (e: unknown) => e instanceof ProtocolError && e.codeName === v.error);
        assert.deepEqual(stateOf(receiver), before, "a refused heartbeat leaves the state as it was");
        return;
      }
      receiver.apply(message);
      assertSameShape(stateOf(receiver), v.after!);
      const sender = new HeartbeatState(interval, before.status, before.seq, before.ts);
      const after = fromVectorShape(v.after!) as { seq: number; ts: number; status: SettableStatus };
      assert.equal(toHex(encodeFrame(sender.encode(after))), v.hex);
    });
  }
});

describe("vectors route.json", () => {
  for (const v of loadVectorFile("route.json").vectors) {
    it(`${v.name}`, () => {
      if (v.weight !== undefined) {
        const hash = nameHash(v.node as string);
        assert.equal(hash.toString(16).padStart(16, "0"), v.name_hash);
        assert.equal(weight(hash, Number(v.partition)).toString(16).padStart(16, "0"), v.weight);
      } else if (v.owner !== undefined) {
        const members = (v.members as string[]).map((node) => ({ node }));
        assert.equal(ownerOf(members, v.user as bigint, Number(v.partitions))?.node, v.owner);
      } else {
        assert.equal(partitionOf(v.user as bigint, Number(v.partitions)), Number(v.partition));
      }
    });
  }
});

describe("vector files", () => {
  it("every vector file is checked (udp.json: see udp.test)", () => {
    const files = readdirSync(VECTOR_DIR).filter((f) => f.endsWith(".json")).sort();
    assert.deepEqual(files, ["batch.json", "heartbeat.json", "malformed.json", "route.json", "tcp.json", "udp.json"]);
  });
});

describe("vectors udp.json", () => {
  it("UDP datagrams (SPEC §8)", { skip: "a WebSocket client cannot send UDP datagrams; the SDK implements no UDP codec" }, () => undefined);
});
