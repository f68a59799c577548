"""HELLO -> WELCOME over TCP with a JWT minted by PyJWT (third-party): a
backend that shares no code with the daemon mints the token (SPEC.md §12.1)
and a raw-frame client presents it (SPEC.md §4.6).

Usage: jwt_hello.py HOST PORT HS256_SECRET_FILE USER_ID
"""

import sys
import time

import jwt

from wire import Peer


def main() -> None:
    host, port, secret_file, user = sys.argv[1:5]
    with open(secret_file, "rb") as f:
        secret = f.read().strip()
    now = int(time.time())
    token = jwt.encode({"sub": user, "exp": now + 300, "nbf": now, "iat": now}, secret, algorithm="HS256")
    token = token.encode("ascii") if isinstance(token, str) else token
    Peer(host, port, token)  # fails unless the answer is WELCOME
    print(f"WELCOME for a PyJWT {jwt.__version__} HS256 token ({len(token)} bytes)")


main()
