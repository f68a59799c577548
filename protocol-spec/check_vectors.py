#!/usr/bin/env python3
"""Independent check of the heartline v1 golden vectors, written from SPEC.md alone.

Implements an encoder and a decoder for TCP frames (every message type), the HEARTBEAT
delta state (§7.1-7.2), the batch bit layout (§7.4) and UDP datagrams (§8), then checks
every vector in vectors/*.json both ways, as vectors/README.md describes.

Usage: python3 check_vectors.py     (standard library only; exit status 1 on any failure)

Readings where SPEC.md leaves the decoder's verdict open (no vector depends on them):
- S→C conditions that only say "client-close" are reported as MALFORMED (WELCOME version 0
  or max_frame > 1 MiB, PAGE not newest first) or LIMIT_EXCEEDED (a count over its §3
  limit); any error in an S→C type closes the connection (client-close, §4.4).
- Decoding uses the v1 limits of §3 (payload 65,536, text 128), not a server's lower ones.
- A UDP datagram with an empty body fails step 3 of §8.6; a HEARTBEAT body of 2+ bytes
  fails step 8 (after the tag). Step 4 (known id) needs server state: every id is known.
- Input that is not exactly one frame is reported as INCOMPLETE / TRAILING_INPUT.
"""
import hashlib
import hmac
import json
import pathlib
import sys

VECTOR_DIR = pathlib.Path(__file__).parent / "vectors"

MOD32 = 1 << 32
MOD64 = 1 << 64
MAX_FRAME = 1_048_576          # §3
MAX_IDS = 1_000
MAX_BATCH = 65_536
MAX_TOKEN = 1_024
MAX_STATUS_TEXT = 128
MAX_ERROR_TEXT = 256
MAX_PAYLOAD = 65_536
MAX_PAGE = 100
MAX_DATAGRAM = 65_507
MAX_PARTITIONS = 65_536        # §14
MAX_NODE = 64
MAX_ADDR = 255
MAX_MEMBERS = 1_024
MIN_DATAGRAM = 13

# §9.1: the error codes 1..=21, in order, and whether the connection is closed after each
CLOSES = {
    "MALFORMED": True, "UNKNOWN_TYPE": False, "FRAME_TOO_LARGE": True,
    "UNSUPPORTED_VERSION": True, "UNAUTHENTICATED": True, "BAD_TOKEN": True,
    "TOKEN_EXPIRED": True, "HANDSHAKE_TIMEOUT": True, "UNEXPECTED": True, "FORBIDDEN": False,
    "LIMIT_EXCEEDED": False, "PAYLOAD_TOO_LARGE": False, "NOT_FOUND": False,
    "RATE_LIMITED": False, "SLOW_CONSUMER": True, "SESSION_EXPIRED": True,
    "UNAVAILABLE": False, "TOO_MANY_CONNECTIONS": True, "INTERNAL": False,
    "DISCONNECTED": True, "MOVED": False,
}

# §2.8 enumerations: the index is the wire value (None = undefined value)
STATUSES = ["offline", "online", "away", "busy", "invisible"]
DEVICES = ["unknown", "desktop", "mobile", "web", "bot"]
ROLES = ["client", "gateway"]
GRAPH_OPS = [None, "follow", "unfollow", "block", "unblock"]
GOAWAY_REASONS = ["shutdown", "restart", "overload"]
CURSORS = [(0x01, "max_id"), (0x02, "since_id"), (0x04, "min_id")]   # §4.29, wire order


class ProtocolError(Exception):
    """A decoding failure named by its §9 code (TCP) or §8.6 drop reason (UDP)."""

    def __init__(self, code, frame_type=None):
        super().__init__(code)
        self.code = code
        self.frame_type = frame_type


def fail(code="MALFORMED"):
    raise ProtocolError(code)


# ----------------------------------------------------------------------------- primitives

class Reader:
    """Reads the fields of one body left to right (§2.6); every shortfall is MALFORMED."""

    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0
        self.canonical = True       # cleared by decode-only forms (§11)

    def left(self):
        return len(self.data) - self.pos

    def take(self, n):
        if n > self.left():
            fail()
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return int.from_bytes(self.take(2), "big")

    def u64(self):
        return int.from_bytes(self.take(8), "big")

    def varint(self):                                   # §2.2
        value = 0
        for i in range(10):
            b = self.u8()
            if i == 9 and b > 0x01:
                fail()                                  # overflow
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if i > 0 and b == 0:
                    fail()                              # non-minimal
                return value
        raise AssertionError("unreachable")

    def varint32(self):
        value = self.varint()
        if value >= MOD32:
            fail()
        return value

    def enum(self, names, lo=0):                        # §2.8
        value = self.u8()
        if value < lo or value >= len(names) or names[value] is None:
            fail()
        return names[value]

    def flags(self, defined):                           # §2.7
        value = self.u8()
        if value & ~defined & 0xFF:
            fail()
        return value

    def blob(self, limit, error):                       # §2.4 bytes(max)
        n = self.varint()
        if n > limit:
            fail(error)
        return self.take(n)

    def text(self, limit, error):                       # §2.4 text(max)
        try:
            return self.blob(limit, error).decode("utf-8")
        except UnicodeDecodeError:
            fail()

    def count(self, limit, error, entry_size, minimum=0):   # §3: limit, then bytes left
        n = self.varint()
        if n < minimum:
            fail()
        if n > limit:
            fail(error)
        if n * entry_size > self.left():
            fail()
        return n

    def finish(self):
        if self.left():
            fail()                                      # trailing bytes, checked last


class Writer:
    def __init__(self):
        self.buf = bytearray()

    def raw(self, data):
        self.buf += data

    def u8(self, v):
        self.buf.append(v)

    def u16(self, v):
        self.buf += v.to_bytes(2, "big")

    def u64(self, v):
        self.buf += v.to_bytes(8, "big")

    def varint(self, v):
        while v >= 0x80:
            self.buf.append(v & 0x7F | 0x80)
            v >>= 7
        self.buf.append(v)

    def blob(self, data):
        self.varint(len(data))
        self.buf += data

    def text(self, s):
        self.blob(s.encode("utf-8"))


class BitReader:
    """MSB-first bit stream (§7.4): stream bit 0 is bit 0x80 of the first byte."""

    def __init__(self, data):
        self.bits, self.pos = "".join(f"{b:08b}" for b in data), 0

    def read(self, n):
        chunk = self.bits[self.pos:self.pos + n]
        self.pos += n
        return int(chunk or "0", 2)


def pack_bits(fields):
    """[(value, width), ...] written MSB first, zero-padded to a byte boundary."""
    bits = "".join(f"{value:0{width}b}" for value, width in fields if width)
    bits += "0" * (-len(bits) % 8)
    return int(bits or "0", 2).to_bytes(len(bits) // 8, "big")


def zigzag(n):                                          # §2.3
    return (n << 1) ^ (n >> 63)                         # Python ints: >> is arithmetic


def unzigzag(z):
    return (z >> 1) ^ -(z & 1)


# ----------------------------------------------------------------------------- batch (§7.4)

def decode_batch(r, limit_error="LIMIT_EXCEEDED"):
    count = r.varint()
    if count > MAX_BATCH:
        fail(limit_error)
    if count == 0:
        return {"sessions": [], "statuses": []}
    sp = r.flags(0x01) & 1
    first = r.varint()
    width = r.u8()
    if width > 64:
        fail()
    left = r.left()
    need = (count - 1) * width + (count if sp else 0)
    if need > 8 * left:
        fail()                                          # before reserving count entries
    bits = BitReader(r.take(left))
    ids = [first]
    max_gap = 0
    for _ in range(count - 1):
        gap = bits.read(width)
        max_gap = max(max_gap, gap)
        ids.append(ids[-1] + gap + 1)
        if ids[-1] >= MOD64:
            fail()
    flagged = [i for i in range(count) if bits.read(1)] if sp else []
    if sp and not flagged:
        fail()
    need += 3 * len(flagged)
    if left != -(-need // 8):
        fail()
    statuses = []
    for i in flagged:
        code = bits.read(3)
        if not 1 <= code <= 4:
            fail()
        statuses.append([i, STATUSES[code]])
    if bits.read(8 * left - need):
        fail()                                          # nonzero padding
    if width != max_gap.bit_length():
        r.canonical = False                             # wider than necessary: decode-only
    return {"sessions": ids, "statuses": statuses}


def encode_batch(w, m):
    ids, flagged = m["sessions"], dict(m["statuses"])
    w.varint(len(ids))
    if not ids:
        return
    w.u8(1 if flagged else 0)
    w.varint(ids[0])
    gaps = [b - a - 1 for a, b in zip(ids, ids[1:])]
    width = max(gaps, default=0).bit_length()
    w.u8(width)
    fields = [(gap, width) for gap in gaps]
    if flagged:
        fields += [(int(i in flagged), 1) for i in range(len(ids))]
        fields += [(STATUSES.index(flagged[i]), 3) for i in sorted(flagged)]
    w.raw(pack_bits(fields))


# ----------------------------------------------------------------------------- TCP messages (§4)
# A codec is a pair (decode(reader) -> value, encode(writer, value)). Most messages are a
# struct of field codecs; the few with flag-dependent layouts have their own functions.

VARINT = (Reader.varint, Writer.varint)
VARINT32 = (Reader.varint32, Writer.varint)
U8 = (Reader.u8, Writer.u8)
U16 = (Reader.u16, Writer.u16)
U64 = (Reader.u64, Writer.u64)
FLAG = (lambda r: bool(r.flags(0x01)), lambda w, v: w.u8(int(v)))      # one defined bit


def enum(names, lo=0):
    return lambda r: r.enum(names, lo), lambda w, v: w.u8(names.index(v))


def blob(limit, error):                                 # bytes(max), as lowercase hex
    return (lambda r: r.blob(limit, error).hex(), lambda w, v: w.blob(bytes.fromhex(v)))


def text(limit, error):
    return lambda r: r.text(limit, error), Writer.text


def fixed(n):
    return lambda r: r.take(n).hex(), lambda w, v: w.raw(bytes.fromhex(v))


def checked(codec, ok, error="MALFORMED"):
    def decode(r):
        value = codec[0](r)
        if not ok(value):
            fail(error)
        return value
    return decode, codec[1]


def array(limit, error, entry_size, item, minimum=0):  # count, then entries (§3)
    def decode(r):
        return [item[0](r) for _ in range(r.count(limit, error, entry_size, minimum))]

    def encode(w, values):
        w.varint(len(values))
        for value in values:
            item[1](w, value)
    return decode, encode


def struct(*fields):                                    # fields left to right; name None = constant
    def decode(r):
        out = {}
        for name, (dec, _) in fields:
            value = dec(r)
            if name:
                out[name] = value
        return out

    def encode(w, m):
        for name, (_, enc) in fields:
            enc(w, m[name] if name else None)
    return decode, encode


REQ = ("req", VARINT)
MAGIC = checked((lambda r: r.take(2), lambda w, _: w.raw(b"HL")), lambda v: v == b"HL")
STATUS_SET = enum(STATUSES, lo=1)                      # a client sets 1..=4
ENTRY = struct(("user", VARINT), ("status", enum(STATUSES)), ("version", VARINT),
               ("last_seen_ms", VARINT), ("text", text(MAX_STATUS_TEXT, "LIMIT_EXCEEDED")))
ITEM = struct(("post", U64), ("author", VARINT), ("kind", U8),
              ("payload", blob(MAX_PAYLOAD, "PAYLOAD_TOO_LARGE")))
USERS = struct(REQ, ("users", array(MAX_IDS, "LIMIT_EXCEEDED", 1, VARINT)))
SESSIONS = struct(REQ, ("sessions", array(MAX_BATCH, "LIMIT_EXCEEDED", 1, VARINT)))
REQ_POST = struct(REQ, ("post", U64))

HELLO = struct(
    (None, MAGIC),
    ("version", checked(U8, lambda v: v != 0, "UNSUPPORTED_VERSION")),
    ("role", enum(ROLES)), ("device", enum(DEVICES)), ("want_udp", FLAG),
    ("resume", VARINT), ("token", blob(MAX_TOKEN, "MALFORMED")))

WELCOME = struct(
    ("version", checked(U8, lambda v: v != 0)),        # 0: client-close (§4.7)
    ("session", VARINT), ("heartbeat_interval_ms", VARINT32), ("ttl_ms", VARINT32),
    ("server_time_ms", VARINT), ("max_frame", checked(VARINT32, lambda v: v <= MAX_FRAME)),
    ("udp_port", U16), ("udp_key", fixed(16)))


def dec_welcome(r):
    m = WELCOME[0](r)
    if m["udp_port"] == 0 and int(m["udp_key"], 16):
        r.canonical = False                             # accepted, never produced (§11)
    return m


def enc_welcome(w, m):
    WELCOME[1](w, {**m, "udp_key": m["udp_key"] if m["udp_port"] else "00" * 16})


def dec_heartbeat(r):                                   # §4.12, §7.2 (the stateless part)
    word = r.varint()
    if word >= 1 << 35:
        fail()
    dseq = r.varint32() if word & 2 else 1
    if word & 2 and dseq == 1:
        fail()                                          # 1 must be expressed by omission
    status = STATUS_SET[0](r) if word & 1 else None
    return {"jitter_ms": unzigzag(word >> 2), "dseq": dseq, "status": status}


def enc_heartbeat(w, m):
    seq_present, status_present = m["dseq"] != 1, m["status"] is not None
    w.varint(zigzag(m["jitter_ms"]) << 2 | seq_present << 1 | status_present)
    if seq_present:
        w.varint(m["dseq"])
    if status_present:
        STATUS_SET[1](w, m["status"])


def dec_set_status(r):
    req = r.varint()
    session = r.varint() if r.flags(0x01) else None
    return {"req": req, "session": session, "status": STATUS_SET[0](r),
            "text": r.text(MAX_STATUS_TEXT, "LIMIT_EXCEEDED")}


def enc_set_status(w, m):
    w.varint(m["req"])
    w.u8(int(m["session"] is not None))
    if m["session"] is not None:
        w.varint(m["session"])
    STATUS_SET[1](w, m["status"])
    w.text(m["text"])


def dec_timeline(r):
    req = r.varint()
    source = r.u8()
    if source > 1:
        fail()
    source = {"author": r.varint()} if source == 1 else "home"
    flags = r.flags(0x07)
    if flags & 0x06 == 0x06:
        fail()                                          # since_id together with min_id
    cursor = {name: (r.u64() if flags & bit else None) for bit, name in CURSORS}
    limit = r.u8()
    if limit == 0 or limit > MAX_PAGE:
        fail("MALFORMED" if limit == 0 else "LIMIT_EXCEEDED")
    return {"req": req, "source": source, "cursor": cursor, "limit": limit}


def enc_timeline(w, m):
    w.varint(m["req"])
    w.u8(0 if m["source"] == "home" else 1)
    if m["source"] != "home":
        w.varint(m["source"]["author"])
    present = [(bit, m["cursor"][name]) for bit, name in CURSORS if m["cursor"][name] is not None]
    w.u8(sum(bit for bit, _ in present))
    for _, value in present:
        w.u64(value)
    w.u8(m["limit"])

MEMBER = checked(struct(("node", text(MAX_NODE, "MALFORMED")), ("addr", text(MAX_ADDR, "MALFORMED")),
                        ("ws", text(MAX_ADDR, "MALFORMED")), ("tls", text(MAX_ADDR, "MALFORMED"))),
                 lambda m: m["node"] != "" and m["addr"] != "")
REDIRECT = (lambda r: {"version": r.varint(), **MEMBER[0](r)},
            lambda w, m: (w.varint(m["version"]), MEMBER[1](w, m)))
CLUSTER_MAP_REPLY = struct(REQ, ("version", VARINT),
                           ("partitions", checked(VARINT32, lambda v: 1 <= v <= MAX_PARTITIONS)),
                           ("members", array(MAX_MEMBERS, "MALFORMED", 4, MEMBER)))


def newest_first(items):                                # PAGE order; else client-close (§4.30)
    return all(a["post"] > b["post"] for a, b in zip(items, items[1:]))


# §4.2: type -> (name, S→C?, (decode, encode))
MESSAGES = {
    0x01: ("HELLO", False, HELLO),
    0x02: ("WELCOME", True, (dec_welcome, enc_welcome)),
    0x03: ("BYE", False, struct()),
    0x04: ("GOAWAY", True, struct(("reason", enum(GOAWAY_REASONS)),
                                  ("reconnect_after_ms", VARINT32))),
    0x05: ("ERROR", True, struct(REQ, ("code", checked(VARINT, lambda v: v <= 0xFFFF)),
                                 ("message", text(MAX_ERROR_TEXT, "MALFORMED")))),
    0x06: ("OK", True, struct(REQ)),
    0x07: ("REDIRECT", True, REDIRECT),
    0x10: ("HEARTBEAT", False, (dec_heartbeat, enc_heartbeat)),
    0x11: ("SET_STATUS", False, (dec_set_status, enc_set_status)),
    0x12: ("WATCH", False, USERS),
    0x13: ("UNWATCH", False, USERS),
    0x14: ("QUERY", False, USERS),
    0x15: ("PRESENCE", True, struct(REQ, ("entries", array(MAX_IDS, "LIMIT_EXCEEDED", 5, ENTRY)))),
    0x16: ("PRESENCE_PUSH", True, struct(("entries", array(MAX_IDS, "LIMIT_EXCEEDED", 5, ENTRY,
                                                           minimum=1)))),
    0x17: ("STATS", False, struct(REQ)),
    0x18: ("STATS_REPLY", True, struct(REQ, ("stats", struct(
        ("online_users", VARINT), ("sessions", VARINT), ("watches", VARINT),
        ("connections", VARINT))))),
    0x19: ("CLUSTER_MAP", False, struct(REQ)),
    0x1a: ("CLUSTER_MAP_REPLY", True, CLUSTER_MAP_REPLY),
    0x20: ("OPEN", False, struct(REQ, ("entries", array(MAX_BATCH, "LIMIT_EXCEEDED", 3, struct(
        ("user", VARINT), ("device", enum(DEVICES)), ("status", STATUS_SET)), minimum=1)))),
    0x21: ("OPENED", True, SESSIONS),
    0x22: ("CLOSE", False, SESSIONS),
    0x23: ("BATCH_HEARTBEAT", False, (decode_batch, encode_batch)),
    0x30: ("PUBLISH", False, struct(REQ, ("kind", U8),
                                    ("payload", blob(MAX_PAYLOAD, "PAYLOAD_TOO_LARGE")))),
    0x31: ("PUBLISHED", True, REQ_POST),
    0x32: ("DELETE", False, REQ_POST),
    0x33: ("GRAPH", False, struct(REQ, ("op", enum(GRAPH_OPS)), ("user", VARINT))),
    0x34: ("TIMELINE", False, (dec_timeline, enc_timeline)),
    0x35: ("PAGE", True, struct(REQ, ("items", checked(
        array(MAX_PAGE, "LIMIT_EXCEEDED", 11, ITEM), newest_first)))),
    0x36: ("LIVE", False, struct(REQ, ("on", enum([False, True])))),
    0x37: ("ITEM_PUSH", True, ITEM),
    0x38: ("DELETED_PUSH", True, struct(("post", U64))),
}
TYPE_BY_NAME = {name: code for code, (name, *_) in MESSAGES.items()}

# ----------------------------------------------------------------------------- framing (§4.1)

def read_frame_length(r, max_frame=MAX_FRAME):
    value = 0
    for i in range(3):
        if not r.left():
            fail("INCOMPLETE")                          # a stream would wait for more bytes
        b = r.u8()
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if i > 0 and b == 0:
                fail()                                  # non-minimal length
            break
    else:
        fail("FRAME_TOO_LARGE")                         # a 4th length byte would follow
    if value == 0:
        fail()
    if value > max_frame:
        fail("FRAME_TOO_LARGE")
    return value


def decode_frame(data):
    """One whole frame -> (message, canonical). Raises ProtocolError with the §9 code."""
    r = Reader(data)
    length = read_frame_length(r)
    if r.left() != length:
        fail("INCOMPLETE" if r.left() < length else "TRAILING_INPUT")
    frame_type = r.u8()
    if frame_type not in MESSAGES:
        raise ProtocolError("UNKNOWN_TYPE", frame_type)
    name, _, (decoder, _) = MESSAGES[frame_type]
    body = Reader(r.take(length - 1))
    try:
        fields = decoder(body)
        body.finish()
    except ProtocolError as e:
        e.frame_type = frame_type
        raise
    return {"type": name, **fields}, body.canonical


def encode_frame(m):
    frame_type = TYPE_BY_NAME[m["type"]]
    body = Writer()
    MESSAGES[frame_type][2][1](body, m)
    w = Writer()
    w.varint(1 + len(body.buf))
    w.u8(frame_type)
    w.raw(body.buf)
    return bytes(w.buf)


def closes_after(error):
    """Whether the connection closes: §9.1 for what a server answers; client-close (§4.4)
    for any error in an S→C type; an undefined type is skipped."""
    if error.frame_type in MESSAGES and MESSAGES[error.frame_type][1]:
        return True
    return CLOSES.get(error.code, True)


# ----------------------------------------------------------------------------- heartbeat state (§7)

def apply_heartbeat(state, interval, frame):
    m, _ = decode_frame(frame)
    if m["type"] != "HEARTBEAT":
        fail()
    dts = interval + m["jitter_ms"]
    if not 0 <= dts < MOD32:
        fail()
    return {"seq": (state["seq"] + m["dseq"]) % MOD32, "ts": (state["ts"] + dts) % MOD32,
            "status": m["status"] or state["status"]}


def encode_heartbeat(before, after, interval):
    changed = after["status"] != before["status"]
    return encode_frame({"type": "HEARTBEAT",
                         "jitter_ms": (after["ts"] - before["ts"]) % MOD32 - interval,
                         "dseq": (after["seq"] - before["seq"]) % MOD32,
                         "status": after["status"] if changed else None})


# ----------------------------------------------------------------------------- UDP (§8)

class ReplayWindow:                                     # §8.5
    def __init__(self):
        self.last, self.bitmap = 0, 0

    def expand(self, seq16):                            # §8.3
        expected, win, hwin = self.last + 1, 1 << 16, 1 << 15
        cand = (expected & ~(win - 1)) | seq16
        if cand + hwin <= expected and cand + win < MOD32:
            cand += win
        elif cand > expected + hwin and cand >= win:
            cand -= win
        if cand >= MOD32:
            fail("REPLAYED")
        return cand

    def check(self, s):
        if s == 0 or (s <= self.last and (self.last - s >= 32
                                          or self.bitmap & (1 << (self.last - s)))):
            fail("REPLAYED")

    def accept(self, s):
        if s > self.last:
            shift = s - self.last
            self.bitmap = 0 if shift >= 32 else (self.bitmap << shift) & 0xFFFFFFFF
            self.bitmap |= 1
            self.last = s
        else:
            self.bitmap |= 1 << (self.last - s)


def udp_tag(key, seq32, covered):                       # §8.4
    return hmac.new(key, seq32.to_bytes(4, "big") + covered, hashlib.sha256).digest()[:8]


def decode_datagram(data, key, window):
    """Applies the checks of §8.6 in order; returns {id, seq, body} or raises the drop reason."""
    if not MIN_DATAGRAM <= len(data) <= MAX_DATAGRAM:
        fail("BAD_LENGTH")
    if data[0] not in (0x01, 0x02):
        fail("UNKNOWN_TYPE")
    covered, tag = data[:-8], data[-8:]
    r = Reader(covered)
    r.u8()
    session = r.varint()
    seq16 = r.u16()
    if not r.left():
        fail()                                          # both types need a body
    # step 4 (known id) needs server state; the vector's id is taken as known
    seq = window.expand(seq16)
    if not hmac.compare_digest(udp_tag(key, seq, covered), tag):
        fail("BAD_TAG")
    window.check(seq)
    if data[0] == 0x01:
        status = r.u8()
        if status > 4:
            fail()
        body = {"heartbeat": STATUSES[status] if status else None}
    else:
        body = {"batch": decode_batch(r, limit_error="MALFORMED")}
    r.finish()
    window.accept(seq)
    return {"id": session, "seq": seq, "body": body}


def encode_datagram(d, key):
    w = Writer()
    is_heartbeat = "heartbeat" in d["body"]
    w.u8(0x01 if is_heartbeat else 0x02)
    w.varint(d["id"])
    w.u16(d["seq"] & 0xFFFF)
    if is_heartbeat:
        status = d["body"]["heartbeat"]
        w.u8(STATUSES.index(status) if status else 0)
    else:
        encode_batch(w, d["body"]["batch"])
    return bytes(w.buf) + udp_tag(key, d["seq"], bytes(w.buf))


# ----------------------------------------------------------------------------- vector checks

class Checker:
    def __init__(self):
        self.passed = self.failed = 0

    def expect(self, file, name, what, expected, actual):
        if canon(expected) == canon(actual):
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {file} {name}: {what}: expected {short(expected)}, got {short(actual)}")


def canon(value):
    return json.dumps(value, sort_keys=True)           # strict: true != 1, null != 0


def short(value, limit=300):
    text = canon(value)
    return text if len(text) <= limit else text[:limit] + "..."


def outcome(fn, *args, key="error"):
    """fn's result (bytes as hex), {key: code} on a protocol error, or the exception raised
    by malformed vector JSON, so that one bad vector is reported instead of stopping the run."""
    try:
        result = fn(*args)
        return result.hex() if isinstance(result, bytes) else result
    except ProtocolError as e:
        return {key: e.code}
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        return {"exception": repr(e)}


def check_valid_tcp(c, file, v):
    decoded = outcome(decode_frame, bytes.fromhex(v["hex"]))
    message, canonical = decoded if isinstance(decoded, tuple) else (decoded, True)
    c.expect(file, v["name"], "decode", v["message"], message)
    if canonical:                                       # decode-only forms are not re-encoded
        c.expect(file, v["name"], "encode", v["hex"], outcome(encode_frame, v["message"]))


def check_malformed(c, file, v):
    try:
        actual = decode_frame(bytes.fromhex(v["hex"]))[0]
    except ProtocolError as e:
        actual = {"error": e.code, "closes": closes_after(e)}
    c.expect(file, v["name"], "decode", {"error": v["error"], "closes": v["closes"]}, actual)


def check_heartbeat(c, file, v):
    data, interval, before = bytes.fromhex(v["hex"]), v["interval_ms"], v["before"]
    applied = outcome(apply_heartbeat, before, interval, data)
    if "error" in v:                                    # the frame decodes, applying it fails
        decoded = outcome(decode_frame, data)
        c.expect(file, v["name"], "decode", "HEARTBEAT",
                 decoded[0]["type"] if isinstance(decoded, tuple) else decoded)
        c.expect(file, v["name"], "apply", {"error": v["error"]}, applied)
        return
    c.expect(file, v["name"], "apply", v["after"], applied)
    c.expect(file, v["name"], "encode", v["hex"],
             outcome(encode_heartbeat, before, v["after"], interval))


def check_udp(c, file, v, key):
    window = ReplayWindow()
    for seq in v["accepted_before"]:
        window.accept(seq)
    actual = outcome(decode_datagram, bytes.fromhex(v["hex"]), key, window, key="drop")
    if "drop" in v:
        c.expect(file, v["name"], "drop", {"drop": v["drop"]}, actual)
        return
    c.expect(file, v["name"], "decode", v["datagram"], actual)
    c.expect(file, v["name"], "encode", v["hex"], outcome(encode_datagram, v["datagram"], key))


# ----------------------------------------------------------------------------- routing (§14.2)

def mix(x):                                             # SplitMix64's finalizer
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % MOD64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % MOD64
    return x ^ (x >> 31)


GOLDEN = 0x9E3779B97F4A7C15


def name_hash(name):                                    # FNV-1a 64 of the UTF-8 bytes
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) % MOD64
    return h


def partition_of(user, partitions):
    return mix(user ^ GOLDEN) % max(partitions, 1)


def weight(node_hash, partition):
    return mix(node_hash ^ mix((partition + GOLDEN) % MOD64))


def owner_of(members, user, partitions):                # highest weight, ties to the smaller name
    p = partition_of(user, partitions)
    best = None
    for name in members:
        key = (weight(name_hash(name), p), [-b for b in name.encode()] + [1])
        if best is None or key > best[0]:
            best = (key, name)
    return best[1] if best else None


def check_route(c, file, v):
    if "weight" in v:
        h = name_hash(v["node"])
        c.expect(file, v["name"], "name_hash", v["name_hash"], f"{h:016x}")
        c.expect(file, v["name"], "weight", v["weight"], f"{weight(h, v['partition']):016x}")
    elif "owner" in v:
        c.expect(file, v["name"], "owner", v["owner"], owner_of(v["members"], v["user"], v["partitions"]))
    else:
        c.expect(file, v["name"], "partition", v["partition"], partition_of(v["user"], v["partitions"]))


def main():
    c = Checker()
    for file, check in [("tcp.json", check_valid_tcp), ("batch.json", check_valid_tcp),
                        ("malformed.json", check_malformed), ("heartbeat.json", check_heartbeat),
                        ("route.json", check_route)]:
        for v in json.loads((VECTOR_DIR / file).read_text())["vectors"]:
            check(c, file, v)
    udp = json.loads((VECTOR_DIR / "udp.json").read_text())
    for v in udp["vectors"]:
        check_udp(c, "udp.json", v, bytes.fromhex(udp["key"]))
    print(f"check_vectors: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
