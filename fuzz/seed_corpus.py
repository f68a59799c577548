#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from the conformance vectors in protocol-spec/vectors."""
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent
vectors = root.parent / "protocol-spec" / "vectors"
out = root / "corpus" / "frame_decoder"
out.mkdir(parents=True, exist_ok=True)
count = 0
for path in sorted(vectors.glob("*.json")):
    if path.name == "udp.json":
        continue
    for vector in json.loads(path.read_text())["vectors"]:
        frame = bytes.fromhex(vector["hex"])
        if len(frame) <= 64 * 1024:
            # The target reads its first byte as the read size.
            (out / f"{path.stem}-{vector['name']}").write_bytes(bytes([7]) + frame)
            count += 1
print(f"{count} seeds in {out}")
