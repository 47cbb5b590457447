#!/usr/bin/env python3
"""Writes starting inputs for the server_session target into the directory
given (default fuzz/corpus/server_session): valid request sequences the
fuzzer then mutates. Input format: one mode byte (odd: logged in as the
fuzz account, device id 0x11 * 16), then frames separated by SEP."""
import hashlib
import os
import sys

SEP = b"\xff\x00SOTTO\x00\xff"
DEVICE = b"\x11" * 16
GROUP = b"G" * 16
TOKEN = b"T" * 32
TOKEN2 = b"U" * 32


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, value):
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def msg(*fields):
    return b"".join(field(n, v) for n, v in fields)


def frame(request_id, body_field, body):
    return msg((1, request_id), (body_field, body))


def h(token):
    return hashlib.sha256(token).digest()


create = frame(1, 7, msg((1, b"a" * 16), (2, GROUP), (3, 0), (5, b"commit"), (10, h(TOKEN))))
send = frame(2, 6, msg((1, b"b" * 16), (2, GROUP), (3, DEVICE), (4, b"hello"), (5, TOKEN)))
commit1 = frame(3, 7, msg((1, b"c" * 16), (2, GROUP), (3, 1), (4, DEVICE), (5, b"commit1"),
                          (6, b"w" * 16), (7, DEVICE), (8, b"welcome"), (9, TOKEN), (10, h(TOKEN2))))
sync = frame(4, 9, b"")
ack = frame(0, 8, msg((1, 1), (1, 2), (1, 3)))
upload = frame(5, 4, msg((1, b"kp1"), (1, b"kp2"), (2, b"last")))
claim = frame(6, 5, msg((1, "fuzzer")))
claim_one = frame(7, 5, msg((1, "fuzzer"), (2, DEVICE)))
head = frame(8, 10, b"")
account_log = frame(9, 11, msg((1, "fuzzer")))
consistency = frame(10, 12, msg((1, 1), (2, 2)))
entries = frame(11, 13, msg((1, 0), (2, 10)))
open_link = frame(12, 16, msg((1, b"L" * 16)))
join_link = frame(13, 17, msg((1, b"L" * 16), (2, b"sealed")))
complete_link = frame(14, 18, msg((1, b"L" * 16), (2, b"bundle")))

SEEDS = {
    "logged-in-group": b"\x01" + SEP.join([create, send, commit1, sync, ack]),
    "logged-in-keys": b"\x01" + SEP.join([upload, claim, claim_one, upload, claim]),
    "anonymous-log": b"\x00" + SEP.join([head, account_log, consistency, entries]),
    "anonymous-send": b"\x00" + SEP.join([create, send, commit1]),
    "anonymous-claim": b"\x00" + SEP.join([claim, claim_one]),
    "link": b"\x00" + SEP.join([open_link, join_link, complete_link]),
    "logged-in-link": b"\x01" + SEP.join([open_link, complete_link]),
}

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "corpus", "server_session")
os.makedirs(out, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(out, "seed-" + name), "wb") as f:
        f.write(data)
print(f"wrote {len(SEEDS)} seeds to {out}")
