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
import types

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from tlsnic.abi import TlsVersion
from tlsnic.driver.ktls_rx import KtlsRxDriver, KtlsRxSocket, RxError, RxRecord
from tlsnic.driver.tcp import TcpFlow
from tlsnic.driver.tls_record import HEADER_LEN, TlsSessionParams

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
                "mode_at_end": sock.mode,
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


async def tls_rx_matrix(dev, wire, *, seed=1, sizes=SIZES):
    """TLS 1.2/1.3 x AES-128/256 over IPv4 and IPv6, each flow one record of
    every size at a random MSS (64..8948), from a random seq and record number."""
    rng = random.Random(seed)
    h = await _harness(dev, wire)
    mss_used = []
    for i, (version, cipher) in enumerate((v, c) for v in VERSIONS for c in CIPHERS):
        flow = _flow(i, ipv6=bool(i % 2))
        peer, _ = await h.flow(version=version, cipher=cipher, flow=flow, irs=rng.getrandbits(32),
                               rec_seq=rng.getrandbits(40))
        peer.write(sizes)
        mss_used.append(rng.randrange(64, 8949))
        await h.send_segments(peer, peer.segments(mss=mss_used[-1]))
    return await h.observe(mss=mss_used)


async def tls_rx_interleaved(dev, wire, *, flows=64, sizes=(1, 0, 300, 2000), mss=536,
                             lose_every=8):
    """``flows`` flows at once (TLS 1.2/1.3, AES-128/256, IPv4/IPv6, some with a
    VLAN tag), their segments interleaved on the wire; every ``lose_every``-th
    flow loses its third segment, retransmitted after all the others."""
    h = await _harness(dev, wire)
    peers = []
    for i in range(flows):
        peer, _ = await h.flow(version=VERSIONS[i % 2], cipher=CIPHERS[(i // 2) % 2],
                               flow=_flow(i, ipv6=bool((i // 4) % 2)),
                               irs=(0xFFFF_FE00 + 0x0101_0101 * i) & 0xFFFF_FFFF,
                               rec_seq=7 * i)
        peer.vlan = 100 + i if i % 3 == 0 else None
        peer.write(sizes)
        peers.append((peer, peer.segments(mss=mss)))
    late = []
    for r in range(max(len(segs) for _, segs in peers)):
        for i, (peer, segs) in enumerate(peers):
            if r < len(segs):
                if r == 2 and i % lose_every == 0:
                    late.append((peer, segs[r]))
                    continue
                await h.send_segments(peer, [segs[r]])
    for peer, seg in late:
        await h.send_segments(peer, [seg])
    return await h.observe()


def _flow(i, ipv6=False):
    if ipv6:
        return TcpFlow(src_addr="2001:db8::1", dst_addr=f"2001:db8:1::{i + 2:x}",
                       src_port=40000 + i, ip_version=6)
    return TcpFlow(src_addr="192.0.2.1", dst_addr=f"198.51.100.{i % 250 + 2}",
                   src_port=40000 + i)


def _late(segments, moves):
    """``segments`` with segment ``k`` sent ``d`` places later, for each ``k: d`` in ``moves``
    (``d`` None: never sent)."""
    order = list(range(len(segments)))
    for k, d in sorted(moves.items(), reverse=True):
        order.remove(k)
        if d is not None:
            order.insert(min(order.index(k - 1) + 1 + d if k else d, len(order)), k)
    return [segments[k] for k in order]


async def _lossy(dev, wire, *, version, cipher, sizes, mss, moves, irs=5000, extra=None,
                 **flow):
    """One flow of ``sizes`` records, its segments reordered by ``moves`` (see :func:`_late`)."""
    h = await _harness(dev, wire)
    peer, sock = await h.flow(version=version, cipher=cipher, irs=irs, **flow)
    peer.write(sizes)
    segments = peer.segments(mss=mss)
    await h.send_segments(peer, _late(segments, moves))
    return await h.observe(**(extra or {}))


# --- loss, reorder, duplicates (RX edge cases 14-16) ---------------------------------------

async def tls_rx_loss_no_header(dev, wire, *, version="1.2", cipher="AES-128-GCM", mss=1448,
                                sizes=(16384,) * 4, lost=3, delay=3):
    """Edge 14: a lost segment that held no header, retransmitted ``delay``
    segments later. The card keeps sync: only the record hit is finished in
    software (recrypt), the following ones are the card's."""
    return await _lossy(dev, wire, version=version, cipher=cipher, sizes=sizes, mss=mss,
                        moves={lost: delay})


async def tls_rx_loss_header(dev, wire, *, version="1.3", cipher="AES-256-GCM", mss=1448,
                             sizes=(16384,) * 5, lost=11, delay=3):
    """Edge 15: a lost segment that held a record header. The card searches,
    reports the next header, the driver confirms it once the retransmission
    lets its record layer get there, and the card decrypts again ("back in sync")."""
    return await _lossy(dev, wire, version=version, cipher=cipher, sizes=sizes, mss=mss,
                        moves={lost: delay})


async def tls_rx_reorder(dev, wire, *, version="1.2", cipher="AES-256-GCM", mss=536,
                         sizes=(3000, 100, 0, 5000, 700)):
    """Edge 16: segments swapped (one over a header, one inside a record), a
    segment arriving four places late: out-of-order bytes pass undecrypted and
    their records are recrypted or decrypted in software."""
    return await _lossy(dev, wire, version=version, cipher=cipher, sizes=sizes, mss=mss,
                        moves={2: 1, 6: 1, 9: 4})


async def tls_rx_duplicates(dev, wire, *, version="1.3", cipher="AES-128-GCM", mss=700,
                            sizes=(2000, 16, 3000)):
    """Edge 16: every segment sent twice, and a run of three sent again after
    the next: duplicates are OUT_OF_ORDER for the card and dropped by TCP;
    every record is the card's."""
    h = await _harness(dev, wire)
    peer, _ = await h.flow(version=version, cipher=cipher, irs=77)
    peer.write(sizes)
    segments = peer.segments(mss=mss)
    for i, seg in enumerate(segments):
        await h.send_segments(peer, [seg, seg])
        if i == 4:
            await h.send_segments(peer, segments[1:4])
    return await h.observe()


async def tls_rx_retransmit_resegmented(dev, wire, *, version="1.2", cipher="AES-128-GCM",
                                        sizes=(6000, 6000, 6000)):
    """Edge 16: two segments lost; the retransmission cuts the stream
    differently (overlapping what arrived and what is queued), first copy of
    each byte wins, and the records hit are recrypted where the card had
    decrypted part of them."""
    h = await _harness(dev, wire)
    peer, _ = await h.flow(version=version, cipher=cipher, irs=0x7FFF_FF00)
    peer.write(sizes)
    segments = peer.segments(mss=1000)
    lost = {4, 9}
    await h.send_segments(peer, [s for i, s in enumerate(segments) if i not in lost])
    await h.send_segments(peer, [(3500, 2000), (8800, 1500)])
    return await h.observe()


async def tls_rx_false_candidate(dev, wire, *, version="1.2", cipher="AES-256-GCM", mss=1448,
                                 sizes=(16384,) * 4, lost=11):
    """Edge 15: the segment with record 1's header is lost, and the payload
    right after it was made (by choosing its plaintext) to encrypt to bytes
    that look like a header. The card reports that false candidate; the
    driver rejects it once it knows record 1's length, the card searches on,
    and the real next header is confirmed."""
    h = await _harness(dev, wire)
    peer, _ = await h.flow(version=version, cipher=cipher, irs=3000)
    peer.write(sizes[:1])
    fake_at = (lost + 1) * mss          # stream offset of the first byte after the loss
    record_start = len(peer.stream)
    fake = bytes([23, 3, 3]) + (16000).to_bytes(2, "big")
    peer_plain = bytearray(payload(sizes[1], 1))
    at = fake_at - record_start - HEADER_LEN - peer.explicit_nonce_len
    explicit = peer.nonce.to_bytes(8, "big") if peer.explicit_nonce_len else b""
    ks = peer.keystream(peer.next_number, explicit, at, HEADER_LEN)
    peer_plain[at:at + HEADER_LEN] = bytes(a ^ b for a, b in zip(fake, ks))
    peer.record(peer_plain)
    peer.write(sizes[2:])
    assert bytes(peer.stream[fake_at:fake_at + HEADER_LEN]) == fake
    await h.send_segments(peer, _late(peer.segments(mss=mss), {lost: 1}))
    return await h.observe(fake_candidate=peer.seq(fake_at))


async def tls_rx_candidate_evicted(dev, wire, *, version="1.2", cipher="AES-128-GCM",
                                   mss=8948, tiny=900, lost=0):
    """Edge 15: after a loss, candidates the driver can only answer once its
    record layer has gone past them, by then evicted from the resync table
    (records of alternating lengths, hundreds per jumbo frame: every record
    a run of its own, 32 runs kept): rejected as older than the table. The
    card searches on until a run of equal records keeps a candidate in the
    table."""
    h = await _harness(dev, wire)
    peer, sock = await h.flow(version=version, cipher=cipher, irs=1)
    peer.write([4000] + [i % 2 for i in range(tiny)] + [4000] * 6)
    await h.send_segments(peer, _late(peer.segments(mss=mss), {lost: 1}))
    return await h.observe(table_evictions=sock.table.evictions)


async def tls_rx_seq_wrap(dev, wire, *, version="1.3", cipher="AES-128-GCM", mss=1448,
                          sizes=(9000,) * 6, lost=6):
    """Edge 18: a header lost just before the 32-bit seq wrap; the candidate
    and the resync table's records straddle the wrap; back in sync after it."""
    return await _lossy(dev, wire, version=version, cipher=cipher, sizes=sizes, mss=mss,
                        moves={lost: 2}, irs=(1 << 32) - 12_500)


# --- enable, ingress change (edges 17, 21) ------------------------------------------------

async def tls_rx_enable_mid_record(dev, wire, *, version="1.2", cipher="AES-256-GCM",
                                   preface=300, cut=2429, mss=1448, sizes=(2000, 5000, 100, 3000)):
    """Edge 17: ``preface`` bytes of plaintext (the handshake), then records;
    the stream up to ``cut`` arrives before kTLS is enabled (the reader reads
    only the handshake). The bytes already there are TLS from then on and
    decrypted in software; the card gets a context at the first header it has
    not seen (with ``cut`` inside a header, once that header is in)."""
    h = await _harness(dev, wire)
    peer, sock = await h.flow(version=version, cipher=cipher, irs=0xABCD, enable=False,
                              preface=bytes(range(256)) * (preface // 256) + bytes(preface % 256))
    peer.write(sizes)
    await h.send_segments(peer, peer.segments(0, cut, mss=mss))
    handshake = sock.read_plain(preface)
    assert handshake == peer.preface
    peer_, sock_, oracle = h.flows[0]
    oracle["mode"] = await sock.enable_rx(version, cipher, peer.key, peer.iv, 0)
    first_tag = sock.rx_tag.start if sock.rx_tag else None
    await h.send_segments(peer, peer.segments(cut, mss=mss))
    return await h.observe(tag_start=first_tag)


async def tls_rx_ingress_change(dev, wire, *, version="1.2", cipher="AES-128-GCM", mss=1448,
                                sizes=(3000,) * 8, move_at=7, occupied=False):
    """Edge 21: the flow's frames move from port 0 to port 1 mid record. The
    driver frees the receive tag and allocates one on port 1 at the next
    header; with ``occupied`` a context already steers the flow on port 1
    (RX_SET_STATIC answers STEER_EXISTS) and the connection goes on in
    software."""
    h = await _harness(dev, wire)
    peer, sock = await h.flow(version=version, cipher=cipher, irs=40)
    peer.write(sizes)
    blocker = None
    if occupied:
        blocker = await _occupy(h, sock, port=1)
    segments = peer.segments(mss=mss)
    await h.send_segments(peer, segments[:move_at], port=0)
    await h.send_segments(peer, segments[move_at:], port=1)
    if blocker is not None:
        await h.rx.free_rcv_tag(blocker)
    return await h.observe(tag_port=None if sock.rx_tag is None else sock.rx_tag.port)


async def _occupy(h, sock, port, params=None):
    """A receive context steering ``sock``'s flow on ``port`` that is not the
    socket's (a stale one, as far as the socket knows). It waits for a header
    half the sequence space away, so every frame is OUT_OF_ORDER for it and
    passes unchanged."""
    stand_in = types.SimpleNamespace(params=params or sock.params, flow=sock.flow,
                                     rx_port=port, tcp=sock.tcp)
    tag = await h.rx.alloc_rcv_tag(stand_in, (1 << 31) - (1 << 20), 0)
    del h.rx.by_tag[tag.tag]
    return tag


# --- TLS 1.3 inner types and padding --------------------------------------------------------

async def tls_rx_tls13_inner(dev, wire, *, cipher="AES-256-GCM", mss=1000):
    """TLS 1.3 records with zero padding after the inner type (none, one byte,
    4000 bytes, 16384 bytes after an empty content: the most RFC 8446 allows), and inner types
    handshake (a NewSessionTicket) and alert (close_notify), on the card's
    path, on the software path, and on the recrypt path (a record hit by a
    lost segment); a record of padding only has no type (EBADMSG)."""
    h = await _harness(dev, wire)
    ticket = bytes([4, 0, 0, 12]) + bytes(range(12))
    for mode, lose in (("ifnet", None), ("sw", None), ("ifnet", 2)):
        peer, _ = await h.flow(version="1.3", cipher=cipher, irs=100 * len(h.flows), mode=mode)
        peer.record(payload(500, 1))
        peer.record(payload(500, 2), padding=1)
        peer.record(payload(100, 3), padding=4000)
        peer.record(b"", padding=1 << 14)           # inner plaintext of 2**14 + 1 bytes
        peer.record(ticket, TLS_CT_HANDSHAKE, padding=7)
        inner = bytes(300)
        peer.record(b"", wire=_seal_inner(peer, inner), valid=False)
        peer.record(bytes([1, 0]), TLS_CT_ALERT)
        segments = peer.segments(mss=mss)
        await h.send_segments(peer, _late(segments, {lose: 2} if lose else {}))
    return await h.observe()


def _seal_inner(peer, inner):
    """A TLS 1.3 record whose inner plaintext is ``inner`` exactly (type and padding included)."""
    number = peer.next_number
    header = bytes([TLS_CT_APPDATA, 3, 3]) + (len(inner) + 16).to_bytes(2, "big")
    return header + peer.aead.encrypt(peer._nonce(number, b""), inner, header)


async def tls_rx_key_update(dev, wire, *, cipher="AES-128-GCM", mss=536):
    """Edge 19 on receive: a TLS 1.3 KeyUpdate from the peer. It is delivered
    (a handshake record), then the reader gets EKEYEXPIRED and nothing past it
    is decrypted (the records under the peer's next key could never be: kTLS
    keys are set once); the receive context is freed."""
    h = await _harness(dev, wire)
    peer, _ = await h.flow(version="1.3", cipher=cipher, irs=123)
    peer.write([1000, 200])
    peer.record(bytes([24, 0, 0, 1, 0]), TLS_CT_HANDSHAKE)      # update_not_requested
    peer.key = bytes(b ^ 0x5A for b in peer.key)               # the next traffic secret's key
    peer.write([700, 700])
    for record in peer.records[3:]:
        record.valid = False
    await h.send_segments(peer, peer.segments(mss=mss))
    return await h.observe()


# --- bad input ------------------------------------------------------------------------------

async def tls_rx_bad_records(dev, wire, *, cipher="AES-128-GCM", mss=600):
    """Records that fail authentication: a ciphertext byte, a tag byte, a TLS
    1.2 explicit nonce byte flipped, each on the card's path and in software.
    That record is dropped with EBADMSG, nothing of it delivered; the
    connection goes on and the next records arrive."""
    h = await _harness(dev, wire)
    for version in VERSIONS:
        for mode in ("ifnet", "sw"):
            peer, _ = await h.flow(version=version, cipher=cipher, irs=9000 * len(h.flows),
                                   mode=mode)
            peer.write([1000])
            hlen = 5 + peer.explicit_nonce_len
            flips = {"ciphertext": hlen + 500, "tag": hlen + 1000 + 3}
            if version == "1.2":
                flips["nonce"] = 5 + 2
            for where, at in flips.items():
                good = peer.seal(payload(1000, 9))
                bad = bytearray(good)
                bad[at + (1 if version == "1.3" and where == "tag" else 0)] ^= 0x40
                peer.record(payload(1000, 9), wire=bad, valid=False)
                peer.write([1000])
            await h.send_segments(peer, peer.segments(mss=mss))
    return await h.observe()


async def tls_rx_bad_headers(dev, wire, *, mss=536):
    """Headers ``ktls_decrypt`` refuses, each on its own flow after a good
    record: a length below header + nonce + tag (EMSGSIZE), a length above the
    maximum (EMSGSIZE), version 0x0301 (EINVAL), a TLS 1.3 outer type other
    than 23 (EINVAL). The record is counted corrupted and the connection
    dropped with that error; the card, for which the header is implausible,
    loses sync; nothing after it is delivered."""
    h = await _harness(dev, wire)
    cases = (("1.2", bytes([23, 3, 3, 0, 20]) + bytes(20)),
             ("1.3", bytes([23, 3, 3, 0, 16]) + bytes(16)),
             ("1.2", bytes([23, 3, 3]) + (16384 + 256 + 8 + 1).to_bytes(2, "big") + bytes(300)),
             ("1.3", bytes([23, 3, 3]) + (16384 + 256 + 1).to_bytes(2, "big") + bytes(300)),
             ("1.2", bytes([23, 3, 1, 0, 40]) + bytes(40)),
             ("1.3", bytes([22, 3, 3, 0, 40]) + bytes(40)))
    for version, bad in cases:
        peer, _ = await h.flow(version=version, cipher="AES-128-GCM", irs=1 << 20)
        peer.write([700])
        peer.record(b"", wire=bad, valid=False)
        peer.write([700])
        await h.send_segments(peer, peer.segments(mss=mss))
    return await h.observe()


async def tls_rx_fin_rst(dev, wire, *, version="1.2", cipher="AES-256-GCM", mss=536):
    """The end of the stream, four flows: a clean FIN; a FIN inside a record
    (EMSGSIZE: truncated); a record failing its tag then the peer's RST
    (EBADMSG for the record, then ECONNRESET: the record's own error is not
    lost under the reset); a RST with a record cut by a hole (EMSGSIZE,
    ECONNRESET). The reader always gets an answer; the tag is freed at the end."""
    h = await _harness(dev, wire)
    # Clean FIN after the last record.
    peer, _ = await h.flow(version=version, cipher=cipher, irs=10)
    peer.write([1000, 0, 1000])
    await h.send_segments(peer, peer.segments(mss=mss))
    await h.send(peer.frame(len(peer.stream), 0, flags="FA"))
    # FIN inside the last record.
    peer, _ = await h.flow(version=version, cipher=cipher, irs=20)
    peer.write([1000, 1000])
    peer.records[-1].valid = False
    cut = len(peer.stream) - 300
    await h.send_segments(peer, peer.segments(0, cut, mss=mss))
    await h.send(peer.frame(cut, 0, flags="FA"))
    # A bad tag, then RST.
    peer, _ = await h.flow(version=version, cipher=cipher, irs=30)
    peer.write([1000])
    bad = bytearray(peer.seal(payload(700, 5)))
    bad[-1] ^= 1
    peer.record(payload(700, 5), wire=bad, valid=False)
    await h.send_segments(peer, peer.segments(mss=mss))
    await h.send(peer.frame(len(peer.stream), 0, flags="R"))
    # RST with a hole in the last record.
    peer, _ = await h.flow(version=version, cipher=cipher, irs=40)
    peer.write([1000, 3000])
    peer.records[-1].valid = False
    segments = peer.segments(mss=mss)
    await h.send_segments(peer, segments[:3] + segments[4:])
    await h.send(peer.frame(segments[3][0], 0, flags="R"))
    return await h.observe()


async def tls_rx_bad_checksums(dev, wire, *, version="1.3", cipher="AES-128-GCM", mss=1000):
    """Frames with a bad TCP checksum, and one with a bad IPv4 header
    checksum: the card does not decrypt them and keeps its state
    (NOT_CHECKED), the stack drops them; the good retransmission that
    follows is decrypted, so every record is still the card's."""
    h = await _harness(dev, wire)
    peer, _ = await h.flow(version=version, cipher=cipher, irs=2000)
    peer.write([3000, 100, 3000])
    for i, (offset, length) in enumerate(peer.segments(mss=mss)):
        if i in (1, 4):
            await h.send(peer.frame(offset, length, bad_csum=True))
        if i == 2:
            frame = bytearray(peer.frame(offset, length))
            frame[14 + 10] ^= 0xFF          # IPv4 header checksum
            await h.send(bytes(frame))
        await h.send(peer.frame(offset, length))
    return await h.observe()


async def tls_rx_untouched(dev, wire):
    """Frames no receive context steers reach the host exactly as sent: a TCP
    flow with no socket, a socket that never enabled kTLS (its bytes read
    back plain), a TLS flow's 5-tuple with another destination port, UDP,
    ARP; and the TLS flow beside them is still decrypted."""
    h = await _harness(dev, wire)
    peer, _ = await h.flow(version="1.2", cipher="AES-128-GCM", irs=5)
    peer.write([2000, 2000])
    stranger = Peer(TcpFlow(src_port=555), "1.2", "AES-128-GCM", bytes(16), bytes(4), irs=9)
    stranger.write([1000])
    plain_peer = Peer(TcpFlow(src_port=556), "1.2", "AES-128-GCM", bytes(16), bytes(4), irs=9,
                      preface=b"GET / HTTP/1.1\r\n\r\n" * 50)
    plain_sock = KtlsRxSocket(h.rx, plain_peer.flow, irs=9)
    other_port = Peer(dataclasses.replace(peer.flow, src_port=peer.flow.src_port + 1000),
                      "1.2", "AES-128-GCM", peer.key, peer.iv, irs=5)
    other_port.stream = peer.stream
    segments = peer.segments(mss=700)
    for i, seg in enumerate(segments):
        await h.send_segments(peer, [seg])
        if i < len(stranger.segments(mss=700)):
            await h.untouched(stranger.frame(*stranger.segments(mss=700)[i]))
        await h.untouched(other_port.frame(*seg))
    await h.send_segments(plain_peer, plain_peer.segments(mss=400))
    plain = plain_sock.read_plain(len(plain_peer.preface))
    await h.untouched(bytes(Ether() / IP(src="198.51.100.9", dst="192.0.2.1")
                            / UDP(sport=53, dport=5353) / Raw(bytes(100))))
    await h.untouched(bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="192.0.2.1")))
    await plain_sock.close()
    return await h.observe(plain_ok=plain == plain_peer.preface)


# --- sessions ---------------------------------------------------------------------------------

async def tls_rx_sessions(dev, wire, *, mss=1448):
    """Session set-up: invalid parameters (EINVAL), a suite neither path
    receives (EPROTONOSUPPORT), a second enable (EALREADY); ChaCha20-Poly1305
    (TLS 1.2 and 1.3) received in software; more sessions than the card has
    receive contexts (the rest in software, ENOMEM), and a context reused
    after a close; a flow another context already steers (STEER_EXISTS:
    software, connection kept). Every flow's records arrive."""
    h = await _harness(dev, wire)
    refused = []
    probe = KtlsRxSocket(h.rx, TcpFlow(src_port=39999), irs=0)
    for args in (("1.1", "AES-128-GCM", bytes(16), bytes(4)),
                 ("1.0", "AES-128-GCM", bytes(16), bytes(4)),
                 (0x05, "AES-128-GCM", bytes(16), bytes(4)),
                 ("1.2", "AES-256-GCM", bytes(16), bytes(4)),
                 ("1.3", "AES-128-GCM", bytes(16), bytes(4)),
                 ("1.3", "AES-128-CBC-SHA256", bytes(16), bytes(16)),
                 ("1.2", "NULL", bytes(16), bytes(4)),
                 ("1.0", "AES-128-CBC-SHA1", bytes(16), bytes(16)),
                 ("1.2", "AES-256-CBC-SHA384", bytes(32), bytes(16))):
        try:
            await probe.enable_rx(*args)
            refused.append(None)
        except OSError as error:
            refused.append(errno.errorcode[error.errno])
    await probe.enable_rx("1.3", "AES-128-GCM", bytes(16), bytes(12))
    try:
        await probe.enable_rx("1.3", "AES-128-GCM", bytes(16), bytes(12))
    except OSError as error:
        refused.append(errno.errorcode[error.errno])
    await probe.close()
    for version in VERSIONS:
        await h.flow(version=version, cipher="CHACHA20-POLY1305", irs=77)
    for i in range(dev.caps.rx_contexts + 2):
        await h.flow(version=VERSIONS[i % 2], cipher=CIPHERS[i % 2], irs=1000 * i)
    await h.flows[2][1].close()                  # the first context comes back ...
    await h.flow(version="1.3", cipher="AES-256-GCM", irs=3)      # ... here
    # A flow another context steers already: that flow's RX_SET_STATIC fails.
    peer, sock = await h.flow(version="1.2", cipher="AES-128-GCM", irs=4, enable=False)
    for _, closing, _ in h.flows[3:5]:          # room for a stale rule and the flow
        await closing.close()
    blocker = await _occupy(h, sock, port=0, params=TlsSessionParams(
        TlsVersion.TLS_1_2, "AES-128-GCM", peer.key, peer.iv))
    h.flows[-1][2]["mode"] = await sock.enable_rx("1.2", "AES-128-GCM", peer.key, peer.iv)
    live = [peer for peer, sock, _ in h.flows if not sock.closed]
    for peer in live:
        peer.write([3000, 0, 50])
    for peer in live:
        await h.send_segments(peer, peer.segments(mss=mss))
    await h.rx.free_rcv_tag(blocker)
    return await h.observe(refused=refused)


SCENARIOS = {fn.__name__: fn for fn in (
    tls_rx_stream, tls_rx_matrix, tls_rx_interleaved,
    tls_rx_loss_no_header, tls_rx_loss_header, tls_rx_reorder, tls_rx_duplicates,
    tls_rx_retransmit_resegmented, tls_rx_false_candidate, tls_rx_candidate_evicted,
    tls_rx_seq_wrap, tls_rx_enable_mid_record, tls_rx_ingress_change,
    tls_rx_tls13_inner, tls_rx_key_update, tls_rx_bad_records, tls_rx_bad_headers, tls_rx_fin_rst,
    tls_rx_bad_checksums, tls_rx_untouched, tls_rx_sessions)}
#: Scenarios that need a card with more than one port, and how many.
MULTI_PORT = {"tls_rx_ingress_change": 2}
#: Scenarios that need a card with this many receive contexts (others: 256).
RX_CONTEXTS = {"tls_rx_sessions": 4}


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
