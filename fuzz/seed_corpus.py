#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from the conformance vectors in protocol-spec/vectors."""
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent
vectors = root.parent / "protocol-spec" / "vectors"


def seeds(target, items):
    out = root / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, data in items:
        if len(data) <= 64 * 1024:
            (out / name).write_bytes(data)
            count += 1
    print(f"{count} seeds in {out}")


def vectors_of(*files):
    for file in files:
        for vector in json.loads((vectors / file).read_text())["vectors"]:
            yield f"{pathlib.Path(file).stem}-{vector['name']}", bytes.fromhex(vector["hex"])


# frame_decoder reads its first byte as the read size.
seeds("frame_decoder", ((n, bytes([7]) + d) for n, d in vectors_of("tcp.json", "batch.json", "malformed.json", "heartbeat.json")))
seeds("udp_datagram", vectors_of("udp.json"))


def batch_bodies():
    """The body of each BATCH_HEARTBEAT frame: past its length prefix and type byte."""
    for name, frame in vectors_of("batch.json", "malformed.json"):
        at = 0
        while at < len(frame) and frame[at] & 0x80:
            at += 1
        if at + 1 < len(frame) and frame[at + 1] == 0x23:
            yield name, frame[at + 2:]


seeds("batch_unpacker", batch_bodies())
