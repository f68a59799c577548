"""The binary protocol, as much as the Python tests need of it: varints,
a frame body reader, and a raw TCP connection past HELLO/WELCOME
(SPEC.md §2.2, §4.1, §4.6). Shared by the scripts in this directory.
"""

import socket
import time

# Frame types (SPEC.md §4.2).
HELLO, WELCOME, ERROR, OK = 0x01, 0x02, 0x05, 0x06
WATCH, PRESENCE, PRESENCE_PUSH = 0x12, 0x15, 0x16
LIVE, ITEM_PUSH, DELETED_PUSH = 0x36, 0x37, 0x38
STATUSES = ["offline", "online", "away", "busy", "invisible"]


def fail(why):
    raise SystemExit(f"FAIL: {why}")


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Body:
    """Reads a frame body field by field."""

    def __init__(self, data):
        self.data, self.at = data, 0

    def varint(self):
        value, shift = 0, 0
        while True:
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    def u8(self):
        self.at += 1
        return self.data[self.at - 1]

    def u64(self):
        self.at += 8
        return int.from_bytes(self.data[self.at - 8 : self.at], "big")

    def bytes(self):
        n = self.varint()
        self.at += n
        return self.data[self.at - n : self.at]


class Peer:
    """A raw protocol connection: frames out, frames in."""

    def __init__(self, host, port, token):
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""
        # HELLO: magic "HL", version 1, role client, device web, no flags, resume 0, token.
        self.send(HELLO, b"HL" + bytes([1, 0, 3, 0]) + varint(0) + varint(len(token)) + token)
        kind, body = self.recv()
        if kind != WELCOME:
            fail(f"expected WELCOME, got type {kind}: {body.hex()}")

    def send(self, kind, body):
        frame = bytes([kind]) + body
        self.sock.sendall(varint(len(frame)) + frame)

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed by the server")
            self.buf += chunk

    def recv(self):
        self._fill(1)
        length, shift, used = 0, 0, 0
        while True:
            self._fill(used + 1)
            byte = self.buf[used]
            used += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        self._fill(used + length)
        frame, self.buf = self.buf[used : used + length], self.buf[used + length :]
        return frame[0], frame[1:]

    def expect(self, what, match, seconds=5):
        """Reads frames until `match(kind, body)` returns something; returns it."""
        self.sock.settimeout(seconds)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                kind, body = self.recv()
            except socket.timeout:
                break
            found = match(kind, body)
            if found is not None:
                return found
        fail(f"the watcher never saw {what}")
