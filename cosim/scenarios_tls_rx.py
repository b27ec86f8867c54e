"""Backend-agnostic scenarios of inline TLS receive (same shape as :mod:`.scenarios_tls_tx`).

Each scenario is ``async def name(dev, wire, **params) -> dict`` on a
:class:`~tlsnic.driver.device.Device` not yet opened, driving the kTLS
receive driver (:mod:`tlsnic.driver.ktls_rx`). The peer is built here, apart
from the driver: its records are sealed with ``cryptography``'s AESGCM
(nonce and AAD from RFC 5288 / RFC 8446, written in this file), its frames
built by Scapy with real checksums.

Everything runs in lock step, so that any backend gives the same result: one
frame goes on the wire, the driver takes its completion and carries out what
it causes (RX_SET_STATIC, RX_RESYNC, RX_FREE on the TX queue, each waited
for), then the next frame. The observation holds per frame the raw RX
completion and a digest of the bytes the card put in the buffer; per flow
what the reader got (records with number, type, length, digest and how they
were finished; errors with their errno); the driver's and the card's
counters. Every delivered record is checked here against the plaintext the
peer sealed (a mismatch raises), and at the end every socket is closed and
no receive context may be left in driver or card.

The card a scenario needs: :data:`MULTI_PORT` (ports) and
:data:`RX_CONTEXTS` (receive contexts); every other one runs on a one-port
card with 256 receive contexts.
"""

import asyncio
import dataclasses
import errno
import hashlib
import random

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from tlsnic.abi import Counter
from tlsnic.driver.ktls_rx import KtlsRxDriver, KtlsRxSocket, RxError, RxRecord
from tlsnic.driver.tcp import TcpFlow

from .scenarios import run_scenario
from .scenarios_tls_tx import payload, session_keys

__all__ = ["SCENARIOS", "MULTI_PORT", "RX_CONTEXTS", "Peer", "run", "run_on_model"]

TLS_CT_ALERT, TLS_CT_HANDSHAKE, TLS_CT_APPDATA = 21, 22, 23
VERSIONS = ("1.2", "1.3")
CIPHERS = ("AES-128-GCM", "AES-256-GCM")
#: The issue's record sizes; 16384 is the largest a record holds.
SIZES = (0, 1, 15, 16, 17, 1447, 1448, 16384)


def digest(data):
    return hashlib.sha256(bytes(data)).hexdigest()[:16]


# --- the peer -------------------------------------------------------------------------

@dataclasses.dataclass
class SentRecord:
    number: int
    type: int
    plaintext: bytes
    start: int            # offset of its header in the peer's TLS stream
    length: int           # bytes on the wire
    valid: bool = True    # False: the scenario corrupted it on purpose


class Peer:
    """The sending side of one flow: TLS records sealed here, frames built with Scapy.

    ``flow`` is the connection as the receiving host sees it (as for the
    driver's sockets), so the peer's frames go from ``flow.dst_*`` to
    ``flow.src_*``. The stream is ``preface`` (plaintext bytes before kTLS,
    a stand-in for the handshake) followed by the records.
    """

    def __init__(self, flow, version, cipher, key, iv, *, irs, rec_seq=0, nonce_seed=0,
                 preface=b"", vlan=None):
        self.flow, self.version, self.cipher = flow, version, cipher
        self.key, self.iv = key, iv
        self.irs, self.vlan = irs, vlan
        self.next_number = rec_seq
        self.nonce = nonce_seed
        self.preface = bytes(preface)
        self.stream = bytearray(self.preface)
        self.records = []

    @property
    def aead(self):
        return (ChaCha20Poly1305 if self.cipher == "CHACHA20-POLY1305" else AESGCM)(self.key)

    @property
    def explicit_nonce_len(self):
        return 8 if self.version == "1.2" and self.cipher != "CHACHA20-POLY1305" else 0

    def _nonce(self, number, explicit):
        if explicit:
            return self.iv + explicit
        return bytes(a ^ b for a, b in zip(self.iv, number.to_bytes(12, "big")))

    def seal(self, plaintext, record_type=TLS_CT_APPDATA, padding=0, number=None):
        """Seal one record (RFC 5246/5288, RFC 8446 5.2) and return its wire bytes."""
        number = self.next_number if number is None else number
        plaintext = bytes(plaintext)
        explicit = b""
        if self.explicit_nonce_len:
            explicit = self.nonce.to_bytes(8, "big")
            self.nonce += 1
        if self.version == "1.3":
            inner = plaintext + bytes([record_type]) + bytes(padding)
            header = bytes([TLS_CT_APPDATA, 3, 3]) + (len(inner) + 16).to_bytes(2, "big")
            aad = header
        else:
            inner = plaintext
            length = len(explicit) + len(inner) + 16
            header = bytes([record_type, 3, 3]) + length.to_bytes(2, "big")
            aad = number.to_bytes(8, "big") + header[:3] + len(plaintext).to_bytes(2, "big")
        return header + explicit + self.aead.encrypt(self._nonce(number, explicit), inner, aad)

    def keystream(self, number, explicit, offset, length):
        """AES-GCM keystream of record ``number`` for ciphertext bytes [offset, offset + length)."""
        block = offset // 16
        counter = self._nonce(number, explicit) + (2 + block).to_bytes(4, "big")
        ks = Cipher(algorithms.AES(self.key), modes.CTR(counter)).encryptor().update(
            bytes(offset - 16 * block + length))
        return ks[offset - 16 * block:]

    def record(self, plaintext, record_type=TLS_CT_APPDATA, padding=0, wire=None, valid=True):
        """Append one record to the stream (``wire``: bytes to send instead, for bad input)."""
        sealed = self.seal(plaintext, record_type, padding)
        wire = sealed if wire is None else bytes(wire)
        self.records.append(SentRecord(self.next_number, record_type, bytes(plaintext),
                                       len(self.stream), len(wire), valid))
        self.next_number += 1
        self.stream += wire
        return self.records[-1]

    def write(self, sizes, fill=0, record_type=TLS_CT_APPDATA):
        for size in sizes:
            self.record(payload(size, fill + len(self.records)), record_type)

    def seq(self, offset):
        return (self.irs + offset) & 0xFFFF_FFFF

    def frame(self, offset, length, flags="PA", bad_csum=False, data=None):
        """The frame carrying stream bytes ``[offset, offset + length)`` (checksums right
        unless ``bad_csum``)."""
        f = self.flow
        data = bytes(self.stream[offset:offset + length]) if data is None else data
        l3 = (IP(src=f.dst_addr, dst=f.src_addr, ttl=64, flags="DF") if f.ip_version == 4
              else IPv6(src=f.dst_addr, dst=f.src_addr, hlim=64))
        eth = Ether(src=f.dst_mac, dst=f.src_mac)
        if self.vlan is not None:
            eth = eth / Dot1Q(vlan=self.vlan)
        tcp = TCP(sport=f.dst_port, dport=f.src_port, seq=self.seq(offset), ack=1, flags=flags,
                  window=65535, chksum=0x1234 if bad_csum else None)
        return bytes(eth / l3 / tcp / Raw(data)) if data else bytes(eth / l3 / tcp)

    def segments(self, start=0, end=None, mss=1448):
        """``(offset, length)`` of MSS-sized segments over ``[start, end)`` of the stream."""
        end = len(self.stream) if end is None else end
        return [(o, min(mss, end - o)) for o in range(start, end, mss)]


# --- the harness ------------------------------------------------------------------------

class Harness:
    """The driver, the peers, the lock-step wire and the observation."""

    def __init__(self, dev, wire):
        self.dev, self.wire = dev, wire
        self.flows = []         # (peer, socket, oracle dict)
        self.frames = []
        self.sent_untouched = []

    async def open(self, *, rx_log=6, **driver):
        await self.dev.open(tx_log=6, rx_log=rx_log)
        self.rx = KtlsRxDriver(self.dev, **driver)
        return self

    async def flow(self, *, version="1.2", cipher="AES-128-GCM", index=None, irs=1000,
                   rec_seq=0, flow=None, port=0, enable=True, mode="ifnet", preface=b"",
                   vlan=None, key=None, iv=None):
        """A peer and the receiving socket of one flow (kTLS enabled unless told not to)."""
        index = len(self.flows) if index is None else index
        flow = flow or TcpFlow(src_port=40000 + index)
        if key is None:
            key, iv = session_keys(cipher, version, index) if cipher in CIPHERS else (
                bytes((7 * index + i) & 0xFF for i in range(32)), bytes(range(12)))
        peer = Peer(flow, version, cipher, key, iv, irs=irs, rec_seq=rec_seq,
                    nonce_seed=0x0100_0000_0000_0000 * (index % 255 + 1) + 17, preface=preface,
                    vlan=vlan)
        sock = KtlsRxSocket(self.rx, flow, irs=irs, port=port)
        oracle = {"index": index, "version": version, "cipher": cipher, "irs": irs,
                  "rec_seq": rec_seq, "ip_version": flow.ip_version, "mode": None}
        self.flows.append((peer, sock, oracle))
        if enable:
            oracle["mode"] = await sock.enable_rx(version, cipher, key, iv, rec_seq, mode=mode)
        return peer, sock

    async def send(self, frame, port=0):
        """One frame in, its completion processed, everything it caused completed."""
        await self.wire.send(frame, port)
        for f in await self.rx.receive(1):
            self.frames.append({"raw": f.raw.hex(), "data": digest(f.data)})
        return self.frames[-1]

    async def send_segments(self, peer, segments, port=0, **kwargs):
        for offset, length in segments:
            await self.send(peer.frame(offset, length, **kwargs), port)

    async def untouched(self, frame, port=0):
        """A frame no context steers: it must reach the host exactly as sent."""
        self.sent_untouched.append(bytes(frame))
        await self.send(frame, port)

    def check(self, peer, sock):
        """Every delivered record equals the peer's record of that number."""
        sent = {r.number: r for r in peer.records}
        for record in sock.records:
            original = sent[record.number]
            assert original.valid, f"record {record.number} was corrupted yet delivered"
            assert (record.type, record.data) == (original.type, original.plaintext), \
                f"flow {sock.flow.src_port}: record {record.number} differs from what was sent"

    async def observe(self, **extra):
        """Close every socket, check the oracle and the leaks, return the observation."""
        flows = []
        for peer, sock, oracle in self.flows:
            self.check(peer, sock)
            flows.append({
                **oracle,
                "sent": len(peer.records),
                "records": [[r.number, r.type, len(r.data), digest(r.data), r.path]
                            for r in sock.events if isinstance(r, RxRecord)],
                "errors": [[errno.errorcode[e.errno], e.number] for e in sock.events
                           if isinstance(e, RxError)],
                "paths": [entry[3] for entry in sock.record_log],
                "so_error": errno.errorcode.get(sock.error, 0),
            })
        for _, sock, _ in self.flows:
            await sock.close()
        unclaimed = [f.data for f in self.rx.unclaimed]
        assert unclaimed == self.sent_untouched, "frames of flows with no context changed"
        counters = await self.dev.update_stats()
        assert self.rx.tags_in_use == 0 and not self.rx.by_tag, "driver receive tags leaked"
        assert counters["rx_tls_ctx"] == counters["rx_tls_ctx_freed"], "card contexts leaked"
        return {"frames": self.frames, "flows": flows,
                "driver": {k: v for k, v in self.rx.stats.items() if v},
                "counters": {k: v for k, v in counters.items() if v and k.startswith("rx")},
                "unclaimed": len(unclaimed), **extra}


async def _harness(dev, wire, **driver):
    return await Harness(dev, wire).open(**driver)


# --- in order ----------------------------------------------------------------------------

async def tls_rx_stream(dev, wire, *, version="1.2", cipher="AES-128-GCM", mss=1448,
                        sizes=SIZES, irs=0xFFFF_F000, rec_seq=3):
    """Records of every size (one of 16 KB) in order, across a seq wrap: all by the card."""
    h = await _harness(dev, wire)
    peer, sock = await h.flow(version=version, cipher=cipher, irs=irs, rec_seq=rec_seq)
    peer.write(sizes)
    await h.send_segments(peer, peer.segments(mss=mss))
    return await h.observe()


SCENARIOS = {fn.__name__: fn for fn in (tls_rx_stream,)}
#: Scenarios that need a card with more than one port, and how many.
MULTI_PORT = {}
#: Scenarios that need a card with this many receive contexts (others: 256).
RX_CONTEXTS = {}


async def run(name, bus, wire, **params):
    """Run scenario ``name`` on a backend; return its observation (device closed after)."""
    return await run_scenario(SCENARIOS[name], bus, wire, **params)


def run_on_model(name, **params):
    """Run scenario ``name`` on a fresh reference model with TLS receive and the
    ports and receive contexts the scenario needs."""
    from .model import ReferenceNic
    nic = ReferenceNic(tls=True, ports=MULTI_PORT.get(name, 1),
                       rx_contexts=RX_CONTEXTS.get(name, 256))
    return asyncio.run(run(name, nic, nic.wire, **params))
