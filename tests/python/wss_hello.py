"""HELLO -> WELCOME over wss:// with Python's third-party `websockets` and
`ssl`: a client that shares no code with the daemon.

Usage: wss_hello.py URL CA_PEM HELLO_FRAME_HEX WELCOME_TYPE

The HELLO frame comes ready-made (hex) from the Rust test that starts the
daemon; this script checks the transport: TLS verified against CA_PEM, the
upgrade on /v1/ws, one binary message per frame both ways (SPEC.md §13),
and that the answer is one whole WELCOME frame.
"""

import asyncio
import ssl
import sys

import websockets


def frame_type(message: bytes) -> int:
    """The type byte of the one frame in `message` (a LEB128 length prefix, then the frame)."""
    length, shift, at = 0, 0, 0
    while True:
        byte = message[at]
        at += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    if len(message) != at + length:
        raise SystemExit(f"not exactly one frame: prefix says {length}, message has {len(message) - at}")
    return message[at]


async def main() -> None:
    url, ca, hello_hex, welcome_type = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    context = ssl.create_default_context(cafile=ca)
    async with websockets.connect(url, ssl=context) as ws:
        await ws.send(bytes.fromhex(hello_hex))
        reply = await asyncio.wait_for(ws.recv(), timeout=10)
        if not isinstance(reply, bytes):
            raise SystemExit(f"expected a binary message, got {reply!r}")
        kind = frame_type(reply)
        if kind != welcome_type:
            raise SystemExit(f"expected WELCOME (type {welcome_type}), got type {kind}")
        print(f"WELCOME over {url} ({len(reply)} bytes)")


asyncio.run(main())
