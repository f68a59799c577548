"""An application backend drives heartline's write API end to end, with
third-party libraries only (PyJWT, requests, jsonschema), while a watcher
connected over the binary protocol sees every effect:

- PyJWT mints the watcher's token; the watcher connects over TCP (HELLO),
  WATCHes user 1 and turns LIVE on.
- The API makes the watcher follow user 1, sets user 1's server-side
  presence (busy, "in a call"), publishes a post as user 1 (with an
  idempotency key, sent twice), reads the watcher's timeline, deletes the
  post, clears the presence; then mints a token for user 1, user 1 connects
  with it, and the API disconnects user 1 (ERROR DISCONNECTED).
- Every JSON answer is checked against the daemon's /v1/openapi.json.

Usage: write_api.py ADMIN_URL ADMIN_TOKEN TCP_HOST TCP_PORT HS256_SECRET_FILE
Exits non-zero with a reason on the first thing that is not as it should be.
"""

import re
import sys
import time

import jsonschema
import jwt
import requests

from wire import (
    DELETED_PUSH, ERROR, ITEM_PUSH, LIVE, OK, PRESENCE, PRESENCE_PUSH, STATUSES, WATCH, Body, Peer, fail, varint,
)

DISCONNECTED = 20
WATCHER, USER = 100, 1


def presence_of(user):
    """Matches a PRESENCE_PUSH entry for `user`: (status, text)."""

    def match(kind, body):
        if kind != PRESENCE_PUSH:
            return None
        b = Body(body)
        found = None
        for _ in range(b.varint()):
            entry_user, status = b.varint(), STATUSES[b.u8()]
            b.varint(), b.varint()  # version, last_seen_ms
            text = b.bytes().decode()
            if entry_user == user:
                found = (status, text)
        return found

    return match


class Api:
    """The admin API, each answer checked against the OpenAPI document."""

    def __init__(self, base, token):
        self.base, self.session = base.rstrip("/"), requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.doc = requests.get(f"{self.base}/v1/openapi.json", timeout=10).json()
        if not self.doc.get("openapi", "").startswith("3.1"):
            fail(f"not an OpenAPI 3.1 document: {self.doc.get('openapi')}")
        self.checked = 0

    def operation(self, method, path):
        for template, item in self.doc["paths"].items():
            pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
            if re.match(pattern, path) and method.lower() in item:
                return item[method.lower()]
        fail(f"{method} {path} is not in the OpenAPI document")

    def call(self, method, path, expect, json=None, headers=None, params=None):
        response = self.session.request(
            method, f"{self.base}{path}", json=json, headers=headers, params=params, timeout=10
        )
        if response.status_code != expect:
            fail(f"{method} {path}: status {response.status_code}, wanted {expect}: {response.text}")
        documented = self.operation(method, path)["responses"].get(str(expect))
        if documented is None:
            fail(f"{method} {path}: status {expect} is not documented")
        schema = documented["content"]["application/json"]["schema"]
        body = response.json()
        # The document's components resolve the schema's "#/components/..." references.
        jsonschema.validate(body, {**schema, "components": self.doc["components"]})
        self.checked += 1
        return body, response


def main():
    admin, admin_token, host, port, secret_file = sys.argv[1:6]
    port = int(port)
    with open(secret_file, "rb") as f:
        secret = f.read().strip()
    api = Api(admin, admin_token)

    # The watcher: a PyJWT token, a raw protocol connection.
    now = int(time.time())
    token = jwt.encode({"sub": str(WATCHER), "exp": now + 300, "iat": now}, secret, algorithm="HS256")
    watcher = Peer(host, port, token.encode("ascii") if isinstance(token, str) else token)
    watcher.send(WATCH, varint(1) + varint(1) + varint(USER))
    watcher.expect("the WATCH snapshot", lambda k, b: True if k == PRESENCE else None)
    watcher.send(LIVE, varint(2) + bytes([1]))
    watcher.expect("OK for LIVE", lambda k, b: True if k == OK else None)

    # Graph: the watcher follows the user.
    counts, _ = api.call("PUT", f"/v1/users/{WATCHER}/following/{USER}", 200)
    if counts != {"user": str(WATCHER), "followers": 0, "following": 1}:
        fail(f"follow counts: {counts}")

    # Presence: a server-side session (a call in progress).
    session, _ = api.call("PUT", f"/v1/users/{USER}/presence", 200, json={"status": "busy", "text": "in a call"})
    if session["status"] != "busy" or not session["session"].isdigit():
        fail(f"server session: {session}")
    seen = watcher.expect("user 1 busy", presence_of(USER))
    if seen != ("busy", "in a call"):
        fail(f"the watcher saw {seen}, not busy 'in a call'")
    entry, _ = api.call("GET", f"/v1/presence/{USER}", 200)
    if (entry["status"], entry["text"]) != ("busy", "in a call"):
        fail(f"GET presence: {entry}")

    # Feed: a post, sent twice with one idempotency key.
    key = {"Idempotency-Key": f"post-{now}"}
    post_body = {"payload": "hello from the backend"}
    first, _ = api.call("POST", f"/v1/users/{USER}/posts", 201, json=post_body, headers=key)
    again, replay = api.call("POST", f"/v1/users/{USER}/posts", 201, json=post_body, headers=key)
    if again != first or replay.headers.get("Idempotent-Replayed") != "true":
        fail(f"the repeated post was not a replay: {first} then {again} ({dict(replay.headers)})")
    api.call("POST", f"/v1/users/{USER}/posts", 422, json={"payload": "other"}, headers=key)
    post = first["post"]

    def item(kind, body):
        if kind != ITEM_PUSH:
            return None
        b = Body(body)
        return (str(b.u64()), b.varint(), b.u8(), b.bytes().decode())

    pushed = watcher.expect("ITEM_PUSH of the post", item)
    if pushed != (post, USER, 0, "hello from the backend"):
        fail(f"pushed item {pushed}")
    page, _ = api.call("GET", f"/v1/users/{WATCHER}/timeline", 200, params={"limit": 10})
    if [i["post"] for i in page["items"]] != [post]:
        fail(f"timeline {page}")

    api.call("DELETE", f"/v1/users/{USER}/posts/{post}", 200)
    deleted = watcher.expect("DELETED_PUSH", lambda k, b: str(Body(b).u64()) if k == DELETED_PUSH else None)
    if deleted != post:
        fail(f"DELETED_PUSH for {deleted}, not {post}")
    api.call("DELETE", f"/v1/users/{USER}/posts/{post}", 404)
    page, _ = api.call("GET", f"/v1/users/{WATCHER}/timeline", 200)
    if page["items"]:
        fail(f"the deleted post is still in the timeline: {page}")

    cleared, _ = api.call("DELETE", f"/v1/users/{USER}/presence", 200)
    if not cleared["cleared"]:
        fail(f"clear: {cleared}")
    if watcher.expect("user 1 offline", presence_of(USER))[0] != "offline":
        fail("not offline after the clear")

    # Tokens from the API; then a disconnect ends the user's connection.
    minted, _ = api.call("POST", "/v1/tokens", 201, json={"user": str(USER), "ttl_s": 60})
    user = Peer(host, port, bytes.fromhex(minted["token"]))
    if watcher.expect("user 1 online", presence_of(USER))[0] != "online":
        fail("the minted token's connection did not bring user 1 online")
    gone, _ = api.call("POST", f"/v1/users/{USER}/disconnect", 200)
    if (gone["sessions"], gone["connections"]) != (1, 1):
        fail(f"disconnect: {gone}")

    def error_code(kind, body):
        if kind != ERROR:
            return None
        b = Body(body)
        b.varint()
        return b.varint()

    code = user.expect("ERROR DISCONNECTED", error_code)
    if code != DISCONNECTED:
        fail(f"user 1 got ERROR {code}, not DISCONNECTED ({DISCONNECTED})")
    if watcher.expect("user 1 offline again", presence_of(USER))[0] != "offline":
        fail("not offline after the disconnect")

    # Errors: the spec's codes, as documented.
    bad, _ = api.call("PUT", f"/v1/users/{USER}/presence", 400, json={"status": "offline"})
    unauthenticated = requests.get(f"{admin}/v1/users/{USER}/timeline", timeout=10)
    if unauthenticated.status_code != 401 or unauthenticated.json()["code"] != "UNAUTHENTICATED":
        fail(f"no token: {unauthenticated.status_code} {unauthenticated.text}")
    if bad["code"] != "MALFORMED":
        fail(f"bad status: {bad}")
    print(
        f"write API end to end: OK ({api.checked} answers valid against the OpenAPI document; "
        f"PyJWT {jwt.__version__}, requests {requests.__version__})"
    )


main()
