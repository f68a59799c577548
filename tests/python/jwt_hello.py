"""HELLO -> WELCOME over TCP with a JWT minted by PyJWT (third-party): a
backend that shares no code with the daemon mints the token (SPEC.md §12.1)
and a raw-frame client presents it (SPEC.md §4.6).

Usage: jwt_hello.py HOST PORT HS256_SECRET_FILE USER_ID WELCOME_TYPE
"""

import socket
import sys
import time

import jwt


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(sock: socket.socket) -> int:
    value, shift = 0, 0
    while True:
        byte = sock.recv(1)
        if not byte:
            raise SystemExit("connection closed before a reply")
        value |= (byte[0] & 0x7F) << shift
        shift += 7
        if byte[0] < 0x80:
            return value


def main() -> None:
    host, port, secret_file, user, welcome_type = sys.argv[1:6]
    with open(secret_file, "rb") as f:
        secret = f.read().strip()
    now = int(time.time())
    token = jwt.encode({"sub": user, "exp": now + 300, "nbf": now, "iat": now}, secret, algorithm="HS256")
    token = token.encode("ascii") if isinstance(token, str) else token
    # HELLO: magic "HL", version 1, role client, device desktop, no flags, resume 0, token.
    body = b"\x01" + b"HL" + bytes([1, 0, 1, 0]) + varint(0) + varint(len(token)) + token
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(varint(len(body)) + body)
        length = read_varint(sock)
        reply = b""
        while len(reply) < length:
            chunk = sock.recv(length - len(reply))
            if not chunk:
                raise SystemExit("connection closed mid-frame")
            reply += chunk
    if reply[0] != int(welcome_type):
        raise SystemExit(f"expected WELCOME (type {welcome_type}), got type {reply[0]}: {reply.hex()}")
    print(f"WELCOME for a PyJWT {jwt.__version__} HS256 token ({len(token)} bytes)")


main()
