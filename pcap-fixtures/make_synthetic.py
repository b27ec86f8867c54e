#!/usr/bin/env python3
"""Deterministic TLS flows built with Scapy, impaired on purpose, with their expected outcome.

Each fixture is one TLS connection (TLS 1.2 or 1.3, AES-128-GCM or
AES-256-GCM) whose handshake has the shape a real one has (ClientHello,
ServerHello, ChangeCipherSpec and an encrypted Finished in TLS 1.2; the
encrypted handshake flight under handshake keys in TLS 1.3), followed by
application records sealed with ``cryptography``'s AES-GCM under keys made
from a seeded random master secret / traffic secrets written to an NSS key
log. The server's records come in every size that matters: a 16 KB one
spanning many segments, empty and 1-byte ones, runs of small ones sharing
a segment, a NewSessionTicket (TLS 1.3), and close_notify.

The segments then go through a seeded impairment plan, as seen from a
capture point near the receiver: a lost segment shows up only as its
retransmission later; a segment retransmitted spuriously shows up twice; a
retransmission may be cut at other boundaries than the original (it
overlaps two segments); adjacent segments swap; some are duplicated.

Writes ``NAME.pcap`` (or ``.pcapng`` with the key log in a Decryption
Secrets Block), ``NAME.keys`` and ``NAME.expected.json`` (the replay report
this flow must give, from what this script knows: records, plaintext
SHA-256, byte-exact TX, no mismatch) for every fixture in :data:`FIXTURES`.
The same seed gives the same bytes.

Usage: ``.venv/bin/python pcap-fixtures/make_synthetic.py [--out DIR]``
"""

import argparse
import hashlib
import json
import random
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.tls.extensions import (TLS_Ext_ExtendedMasterSecret, TLS_Ext_SupportedVersion_CH,
                                         TLS_Ext_SupportedVersion_SH)
from scapy.layers.tls.handshake import TLSClientHello, TLSServerHello
from scapy.packet import Raw
from scapy.utils import wrpcap

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tlsnic.cosim.tls_keys import TrafficKeys, prf, suite  # noqa: E402

ALERT, HANDSHAKE, APPLICATION_DATA, CHANGE_CIPHER_SPEC = 21, 22, 23, 20

#: name -> how it is built. ``impair``: the share of the server's segments
#: lost, retransmitted spuriously, retransmitted resegmented, swapped with
#: the next one, duplicated (each at least one segment).
FIXTURES = {
    "synth-tls12-aes128": dict(version="1.2", suite=0xC02F, mss=1000, seed=12128, ipv6=False,
                               iss=(0x1000_0000, 0x2000_0000), ems=True,
                               impair=(0.06, 0.04, 0.04, 0.05, 0.03)),
    "synth-tls12-aes256": dict(version="1.2", suite=0xC030, mss=536, seed=12256, ipv6=True,
                               iss=(0xFFFF_E000, 0xFFFF_F000), ems=False,
                               impair=(0.05, 0.03, 0.05, 0.05, 0.03)),
    "synth-tls13-aes128": dict(version="1.3", suite=0x1301, mss=1448, seed=13132, ipv6=False,
                               iss=(0x0123_4567, 0xFFFF_FF00), ems=False,
                               impair=(0.08, 0.04, 0.04, 0.06, 0.04)),
    "synth-tls13-aes256": dict(version="1.3", suite=0x1302, mss=700, seed=13261, ipv6=False,
                               iss=(77, 0x8000_0000), ems=False, pcapng=True,
                               impair=(0.05, 0.05, 0.05, 0.05, 0.05)),
    # TLS 1.3 padding and a KeyUpdate: kTLS never pads and cannot rekey, so the
    # TX replay stops at the padded record and the reader gets the records up
    # to the KeyUpdate, then EKEYEXPIRED.
    "synth-tls13-keyupdate": dict(version="1.3", suite=0x1301, mss=1200, seed=13900, ipv6=False,
                                  iss=(4000, 9000), ems=False, impair=None, keyupdate=True),
}
#: The server's records of the KeyUpdate fixture: (inner type, size, padding); "update"
#: is the KeyUpdate, after which the records are under the next traffic secret.
KEYUPDATE_PLAN = ((APPLICATION_DATA, 100, 0), (APPLICATION_DATA, 50, 30),
                  (APPLICATION_DATA, 2000, 0), "update", (APPLICATION_DATA, 300, 0))
#: Plaintext sizes of the server's application_data records, then close_notify.
SERVER_SIZES = (16384, 0, 1, 200, 5000, 40, 40, 40, 40, 3000, 2, 1500)
CLIENT_SIZES = (300, 0, 77)


def _record(content_type, body):
    return bytes([content_type, 3, 3]) + len(body).to_bytes(2, "big") + body


class _Sealer:
    """One direction's record protection (RFC 5288 / RFC 8446 5.2), counting records."""

    def __init__(self, keys, rng, number=0):
        self.keys, self.number = keys, number
        self.nonce_counter = rng.getrandbits(64)       # TLS 1.2 explicit nonces: a counter

    def seal(self, inner_type, plaintext, padding=0):
        k = self.keys
        if k.version == "1.3":
            inner = plaintext + bytes([inner_type]) + bytes(padding)
            header = bytes([APPLICATION_DATA, 3, 3]) + (len(inner) + 16).to_bytes(2, "big")
            nonce = bytes(a ^ b for a, b in zip(k.iv, self.number.to_bytes(12, "big")))
            body = AESGCM(k.key).encrypt(nonce, inner, header)
        else:
            explicit = self.nonce_counter.to_bytes(8, "big")
            self.nonce_counter = (self.nonce_counter + 1) % 2**64
            header = bytes([inner_type, 3, 3]) + (8 + len(plaintext) + 16).to_bytes(2, "big")
            aad = self.number.to_bytes(8, "big") + header[:3] + len(plaintext).to_bytes(2, "big")
            body = explicit + AESGCM(k.key).encrypt(k.iv + explicit, plaintext, aad)
        self.number += 1
        return header + body


def _payload(size, fill):
    return bytes((fill + 7 * i + i // 251) & 0xFF for i in range(size))


class _Handshake:
    """What the keys are made of, and the key log lines that give them."""

    def __init__(self, spec, rng):
        self.spec = spec
        self.suite = suite(spec["suite"])
        self.client_random = rng.randbytes(32)
        self.server_random = rng.randbytes(32)
        tls13 = spec["version"] == "1.3"
        ext_ch = [TLS_Ext_SupportedVersion_CH(versions=[0x0304, 0x0303])] if tls13 else []
        ext_sh = [TLS_Ext_SupportedVersion_SH(version=0x0304)] if tls13 else []
        if spec["ems"]:
            ext_ch.append(TLS_Ext_ExtendedMasterSecret())
            ext_sh.append(TLS_Ext_ExtendedMasterSecret())
        self.client_hello = bytes(TLSClientHello(
            gmt_unix_time=int.from_bytes(self.client_random[:4], "big"),
            random_bytes=self.client_random[4:], ciphers=[spec["suite"], 0x1303, 0xC02B],
            ext=ext_ch))
        self.server_hello = bytes(TLSServerHello(
            version=0x0303, gmt_unix_time=int.from_bytes(self.server_random[:4], "big"),
            random_bytes=self.server_random[4:], cipher=spec["suite"], ext=ext_sh))
        cr = self.client_random.hex()
        if tls13:
            secrets = {label: rng.randbytes(48 if self.suite.hash == "SHA384" else 32)
                       for label in ("CLIENT_HANDSHAKE_TRAFFIC_SECRET",
                                     "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                                     "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0")}
            self.keylog = "".join(f"{label} {cr} {s.hex()}\n" for label, s in secrets.items())
            self.handshake_keys = {
                "client": TrafficKeys.tls13(secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"], self.suite),
                "server": TrafficKeys.tls13(secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"], self.suite)}
            self.app_keys = {
                "client": TrafficKeys.tls13(secrets["CLIENT_TRAFFIC_SECRET_0"], self.suite),
                "server": TrafficKeys.tls13(secrets["SERVER_TRAFFIC_SECRET_0"], self.suite)}
        else:
            master = rng.randbytes(48)
            self.keylog = f"CLIENT_RANDOM {cr} {master.hex()}\n"
            s = self.suite
            block = prf(master, b"key expansion", self.server_random + self.client_random,
                        2 * (s.key_len + 4), s.hash)
            self.app_keys = {
                "client": TrafficKeys("1.2", s.aead, block[:s.key_len],
                                      block[2 * s.key_len:2 * s.key_len + 4]),
                "server": TrafficKeys("1.2", s.aead, block[s.key_len:2 * s.key_len],
                                      block[2 * s.key_len + 4:])}


def _streams(hs, rng):
    """Each side's flights: ``[(side, bytes), ...]`` in the order they are sent, and
    per side the list of (inner type, plaintext) of its application records."""
    tls13 = hs.spec["version"] == "1.3"
    client = _Sealer(hs.app_keys["client"], rng, 0 if tls13 else 1)
    server = _Sealer(hs.app_keys["server"], rng, 0 if tls13 else 1)
    plain = {"client": [], "server": []}

    def app(side, sealer, inner_type, data, padding=0):
        plain[side].append((inner_type, data, sealer.keys.generation))
        return sealer.seal(inner_type, data, padding)

    flights = [("client", _record(HANDSHAKE, hs.client_hello))]
    if tls13:
        hs_server = _Sealer(hs.handshake_keys["server"], rng)
        hs_client = _Sealer(hs.handshake_keys["client"], rng)
        # EncryptedExtensions (empty) and Finished: the shape a dissector such as
        # tshark follows to know where the application keys take over.
        verify_len = 48 if hs.suite.hash == "SHA384" else 32
        finished = b"\x14\x00\x00" + bytes([verify_len])
        flights.append(("server", _record(HANDSHAKE, hs.server_hello)
                        + _record(CHANGE_CIPHER_SPEC, b"\x01")
                        + hs_server.seal(HANDSHAKE, b"\x08\x00\x00\x02\x00\x00" + finished
                                         + rng.randbytes(verify_len))))
        flights.append(("client", _record(CHANGE_CIPHER_SPEC, b"\x01")
                        + hs_client.seal(HANDSHAKE, finished + rng.randbytes(verify_len))))
        ticket = b"\x04\x00\x00\x40" + rng.randbytes(64)          # NewSessionTicket
        server_first = app("server", server, HANDSHAKE, ticket)
    else:
        finished = _Sealer(hs.app_keys["client"], rng, 0)
        finished.nonce_counter = (client.nonce_counter - 1) % 2**64
        flights.append(("server", _record(HANDSHAKE, hs.server_hello)
                        + _record(HANDSHAKE, b"\x0e\x00\x00\x00")))              # ServerHelloDone
        flights.append(("client", _record(HANDSHAKE, b"\x10\x00\x00\x21\x20" + rng.randbytes(32))
                        + _record(CHANGE_CIPHER_SPEC, b"\x01")
                        + finished.seal(HANDSHAKE, b"\x14\x00\x00\x0c" + rng.randbytes(12))))
        sfin = _Sealer(hs.app_keys["server"], rng, 0)
        server.nonce_counter = sfin.nonce_counter + 1
        flights.append(("server", _record(CHANGE_CIPHER_SPEC, b"\x01")
                        + sfin.seal(HANDSHAKE, b"\x14\x00\x00\x0c" + rng.randbytes(12))))
        server_first = b""
    request = b"".join(app("client", client, APPLICATION_DATA, _payload(n, 3 * i))
                       for i, n in enumerate(CLIENT_SIZES))
    flights.append(("client", request))
    if hs.spec.get("keyupdate"):
        response = server_first
        for i, step in enumerate(KEYUPDATE_PLAN):
            if step == "update":
                response += app("server", server, HANDSHAKE, b"\x18\x00\x00\x01\x00")
                server.keys, server.number = server.keys.next_generation(), 0
                continue
            inner_type, size, padding = step
            response += app("server", server, inner_type, _payload(size, i), padding)
    else:
        response = server_first + b"".join(app("server", server, APPLICATION_DATA,
                                               _payload(n, i))
                                           for i, n in enumerate(SERVER_SIZES))
    response += app("server", server, ALERT, b"\x01\x00")
    flights.append(("server", response))
    flights.append(("client", app("client", client, ALERT, b"\x01\x00")))
    return flights, plain


def _impair(segments, shares, rng):
    """The capture order of ``segments`` (``(offset, bytes)``) after the impairment plan.

    ``shares`` gives, per kind, the share of segments it hits (at least one
    each); the segments are drawn without overlap. Returns the capture order
    and how many segments each kind hit.
    """
    kinds = ("lost", "spurious_retransmits", "resegmented", "swapped", "duplicated")
    wanted = [max(1, round(share * len(segments))) for share in shares]
    # Roles on distinct segments; a swapped segment's successor keeps no role of
    # its own, and the last segment none at all (a swap or a resegmented copy
    # needs a successor).
    candidates = rng.sample(range(len(segments) - 1), len(segments) - 1)
    role, taken = {}, set()
    for kind, n in zip(kinds, wanted):
        for i in candidates:
            if n == 0:
                break
            pair = {i, i + 1} if kind == "swapped" else {i}
            if pair & taken or (kind == "swapped" and i + 1 >= len(segments) - 1):
                continue
            role[i] = kind
            taken |= pair
            n -= 1
    out, pending, i = [], [], 0
    counts = dict.fromkeys(kinds, 0)
    while i < len(segments):
        seg, kind = segments[i], role.get(i)
        if kind == "swapped":
            out += [segments[i + 1], seg]
            i += 1
        elif kind == "lost":
            pending.append((i + rng.randint(2, 5), seg))   # only its retransmission is seen
        else:
            out.append(seg)
            if kind == "duplicated":
                out.append(seg)
            elif kind == "spurious_retransmits":
                pending.append((i + rng.randint(1, 4), seg))
            elif kind == "resegmented":
                # Retransmitted later as one segment from the middle of this one
                # to the middle of the next: it overlaps both.
                nxt = segments[i + 1]
                cut = len(seg[1]) // 2
                pending.append((i + 3, (seg[0] + cut, seg[1][cut:] + nxt[1][:len(nxt[1]) // 2])))
        if kind:
            counts[kind] += 1
        i += 1
        for due in sorted(p for p in pending if p[0] <= i):
            pending.remove(due)
            out.append(due[1])
    out += [seg for _, seg in sorted(pending)]
    return out, counts


def _packets(name, spec, flights, rng):
    """The capture: SYN handshake, each flight cut into MSS segments, impaired, ACKs, FINs."""
    if spec["ipv6"]:
        ip = {"client": IPv6(src="2001:db8::c", dst="2001:db8::5"),
              "server": IPv6(src="2001:db8::5", dst="2001:db8::c")}
    else:
        ip = {"client": IP(src="192.0.2.12", dst="198.51.100.5"),
              "server": IP(src="198.51.100.5", dst="192.0.2.12")}
    ports = {"client": (50000 + spec["seed"] % 1000, 443), "server": (443, 50000 + spec["seed"] % 1000)}
    isn = dict(zip(("client", "server"), spec["iss"]))
    sent = {"client": 0, "server": 0}
    mac = {"client": ("02:00:00:00:00:0c", "02:00:00:00:00:05"),
           "server": ("02:00:00:00:00:05", "02:00:00:00:00:0c")}
    out = []

    def packet(side, offset, payload=b"", flags="PA", seq=None):
        other = "server" if side == "client" else "client"
        sport, dport = ports[side]
        tcp = TCP(sport=sport, dport=dport, flags=flags,
                  seq=(isn[side] + 1 + offset) % 2**32 if seq is None else seq,
                  ack=(isn[other] + 1 + sent[other]) % 2**32 if "A" in flags else 0, window=65535)
        frame = Ether(src=mac[side][0], dst=mac[side][1]) / ip[side] / tcp
        frame = frame / Raw(payload) if payload else frame
        frame.time = 1_700_000_000 + len(out) * 0.0001
        out.append(frame)

    packet("client", 0, flags="S", seq=isn["client"])
    packet("server", 0, flags="SA", seq=isn["server"])
    packet("client", 0, flags="A")
    counts = {}
    for side, data in flights:
        mss = spec["mss"]
        segments = [(sent[side] + i, data[i:i + mss]) for i in range(0, len(data), mss)]
        if side == "server" and len(segments) > 4 and spec["impair"]:
            order, counts = _impair(segments, spec["impair"], rng)
        else:
            order = segments
        sent[side] += len(data)
        other = "server" if side == "client" else "client"
        for n, (offset, payload) in enumerate(order, 1):
            packet(side, offset, payload)
            if n % 3 == 0:
                packet(other, sent[other], flags="A")     # an ACK now and then
        packet(other, sent[other], flags="A")
    packet("client", sent["client"], flags="FA")
    packet("server", sent["server"], flags="FA")
    sent["client"] += 1
    sent["server"] += 1
    packet("client", sent["client"], flags="A")
    return out, counts


def _write_pcapng_with_keys(path, frames, keylog):
    """pcapng: SHB, IDB (Ethernet), a Decryption Secrets Block with the key log, EPBs.

    Scapy writes pcapng but no Decryption Secrets Block, so the blocks are
    laid out here (pcapng spec: each block type, length, body, length).
    """
    def block(block_type, body):
        body += bytes(-len(body) % 4)
        return struct.pack("<II", block_type, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    secrets = keylog.encode()
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 0))
    out += block(10, struct.pack("<II", 0x544C534B, len(secrets)) + secrets)
    for frame in frames:
        data = bytes(frame)
        usec = int(round(float(frame.time) * 1e6))
        out += block(6, struct.pack("<IIIII", 0, usec >> 32, usec & 0xFFFFFFFF, len(data),
                                    len(data)) + data)
    path.write_bytes(out)


def make(name, spec, out):
    rng = random.Random(spec["seed"])
    hs = _Handshake(spec, rng)
    flights, plain = _streams(hs, rng)
    frames, impairments = _packets(name, spec, flights, rng)
    capture = out / f"{name}.{'pcapng' if spec.get('pcapng') else 'pcap'}"
    keys = None
    if spec.get("pcapng"):
        _write_pcapng_with_keys(capture, frames, hs.keylog)
    else:
        wrpcap(str(capture), frames)
        keys = out / f"{name}.keys"
        keys.write_text(hs.keylog)
    client = ("[2001:db8::c]" if spec["ipv6"] else "192.0.2.12") + f":{50000 + spec['seed'] % 1000}"
    server = ("[2001:db8::5]" if spec["ipv6"] else "198.51.100.5") + ":443"

    def direction(side):
        # What kTLS delivers: the application data under the first traffic secret.
        digest = hashlib.sha256(b"".join(p for t, p, generation in plain[side]
                                         if t == APPLICATION_DATA and generation == 0))
        padded = any(step != "update" and step[2] for step in KEYUPDATE_PLAN)
        exact = None if spec.get("keyupdate") and side == "server" and padded else True
        return {"from": side, "records": len(plain[side]), "mismatches": 0, "tx_exact": exact,
                "plaintext_sha256": digest.hexdigest()}

    expected = {
        "capture": capture.name, "keylog": keys.name if keys else None, "psk": None,
        **({"impairments": impairments} if impairments else {}),
        "report": {"connections": [{
            "client": client, "server": server, "version": spec["version"],
            "suite": hs.suite.name, "offloaded": True, "reason": None,
            "directions": [direction("client"), direction("server")]}], "mismatches": 0},
    }
    (out / f"{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"{capture.name}: {len(frames)} packets, {impairments}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    for name, spec in FIXTURES.items():
        make(name, spec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
