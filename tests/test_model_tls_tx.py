"""Inline TLS transmit on the reference model, driven by the kTLS driver.

Oracle: the wire, reassembled per flow from Scapy's parse of every frame,
is decrypted here with ``cryptography``'s AESGCM (nonce and AAD built in this
file from RFC 5288 / RFC 8446, not from the model or the driver) and
compared with the plaintext written; every retransmitted byte must equal the
byte first sent; Scapy verifies the checksums. Tests named ``test_edgeN_*``
cover edge case N of the driver anchors. After every test (both modules) an
autouse fixture closes each socket the test made and checks that no context,
tag, descriptor reference or host buffer is left, in driver and card.
"""

import asyncio
import errno

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tlsnic.abi import (
    CAP_TLS_1_2, CAP_TLS_1_3, CAP_TLS_AES_128_GCM, CAP_TLS_AES_256_GCM, CAP_TLS_TX,
    Counter, TlsCipher, TlsProgressFlags, TlsProgressParams, TlsStaticParams, TlsVersion,
    TxOpcode, TxStatus, pack,
)
from tlsnic.cosim.model import ReferenceNic, verify_checksums
from tlsnic.cosim.model_tls_tx import TlsTxRecord
from tlsnic.driver.device import Device
from tlsnic.driver.ktls import KtlsDriver, KtlsError, KtlsSocket, MODE_IFNET, MODE_SW
from tlsnic.driver.tcp import TcpFlow

KEYS = {"AES-128-GCM": bytes(range(0x10, 0x20)), "AES-256-GCM": bytes(range(0x40, 0x60))}
IV12 = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")
SIZES = (0, 1, 15, 16, 17, 1447, 1448, 16384)
TLS_CT_ALERT, TLS_CT_HANDSHAKE, TLS_CT_APPDATA = 21, 22, 23


def run(coro):
    return asyncio.run(coro)


# --- no leaks, after every test -------------------------------------------------------

#: Harnesses opened by the running test (both test modules register theirs).
LIVE_HARNESSES = []


async def assert_no_leaks(h, sockets):
    """Close every socket of ``h`` the test opened; then nothing may be left.

    Driver: no tag in use (per port too), no descriptor holding a reference,
    no FREE pending. Card: no live context, and as many contexts freed as
    created. Host memory: back to the rings and RX buffers of ``open``.
    """
    for sock in sockets:
        if sock.ktls is h.ktls:
            await sock.close()
    ktls, nic = h.ktls, h.nic
    await ktls.flush()
    assert ktls.tags_in_use == 0 and sum(ktls.port_in_use.values()) == 0, "driver tags leaked"
    assert not ktls._posted and not ktls._to_free and not ktls._freeing
    assert nic.tls_tx.in_use == 0, "card contexts leaked"
    assert nic.counters[Counter.TX_TLS_CTX] == nic.counters[Counter.TX_TLS_CTX_FREED]
    assert len(nic.memory._regions) == h.baseline, "host buffers leaked"


@pytest.fixture(autouse=True)
def no_leaks_after_test(monkeypatch):
    """Every test ends with contexts and tags in use back to zero in driver and card.

    Every :class:`KtlsSocket` the test creates is recorded (also those made
    without a harness), so a test that forgets one cannot hide a leak.
    """
    sockets = []
    init = KtlsSocket.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        sockets.append(self)
    monkeypatch.setattr(KtlsSocket, "__init__", recording_init)
    LIVE_HARNESSES.clear()
    yield
    harnesses, LIVE_HARNESSES[:] = list(LIVE_HARNESSES), []
    for h in harnesses:
        run(assert_no_leaks(h, sockets))


# --- harness --------------------------------------------------------------------------

class Harness:
    """A TLS-enabled model, an opened device, the kTLS driver and one socket."""

    def __init__(self, version="1.2", cipher="AES-128-GCM", *, mss=1448, strategy="dump",
                 iss=1000, rec_seq=7, contexts=256, flow=None, hw_mtu=1500, ports=1,
                 rexmit_pct=2):
        self.nic = ReferenceNic(tls=True, tx_contexts=contexts, ports=ports)
        self.dev = Device(self.nic)
        self.version, self.cipher = version, cipher
        self.key = KEYS[cipher]
        self.iv = IV12[:4] if version == "1.2" else IV12
        self.iss, self.rec_seq, self.mss, self.strategy = iss, rec_seq, mss, strategy
        self.flow = flow or TcpFlow()
        self.hw_mtu = hw_mtu
        self.rexmit_pct = rexmit_pct
        self.plaintext = []
        self.wire = []

    async def open(self):
        await self.dev.open(tx_log=10, rx_log=2)
        self.ktls = KtlsDriver(self.dev, strategy=self.strategy, hw_mtu=self.hw_mtu, seed=5,
                               ifnet_max_rexmit_pct=self.rexmit_pct)
        self.baseline = len(self.nic.memory._regions)     # rings and RX buffers
        LIVE_HARNESSES.append(self)
        self.sock = await self.new_socket()
        return self

    async def new_socket(self, flow=None, mode=MODE_IFNET):
        sock = KtlsSocket(self.ktls, flow or self.flow, iss=self.iss, mss=self.mss)
        await sock.enable_tx(self.version, self.cipher, self.key, self.iv, self.rec_seq, mode)
        return sock

    def write(self, sizes, fill=0):
        for i, size in enumerate(sizes):
            data = bytes((fill + i * 7 + j) & 0xFF for j in range(size))
            self.sock.write(data, record_size=max(size, 1))
            self.plaintext.append(data)

    def frames(self):
        """Frames put on the wire since the last call (all of them: :attr:`wire`)."""
        out = list(self.nic.egress[0])
        self.nic.egress[0].clear()
        self.wire.extend(out)
        return out

    def counter(self, name):
        return self.nic.counters[Counter[name]]


def reassemble(frames, iss, flow=None):
    """The TCP byte stream from ``iss``; a byte sent twice must be the same byte."""
    stream = {}
    for frame in frames:
        packet = Ether(frame)
        assert TCP in packet
        ip_csum, l4_csum = verify_checksums(frame)
        assert l4_csum.name == "GOOD"
        seg = packet[TCP]
        if flow is not None:
            assert (seg.sport, seg.dport) == (flow.src_port, flow.dst_port)
        payload = bytes(seg.payload)
        if IP in packet:
            payload = payload[:packet[IP].len - packet[IP].ihl * 4 - seg.dataofs * 4]
        for i, byte in enumerate(payload):
            offset = (seg.seq + i - iss) & 0xFFFF_FFFF
            assert stream.setdefault(offset, byte) == byte, f"retransmitted byte {offset} differs"
    assert sorted(stream) == list(range(len(stream))), "hole in the stream"
    return bytes(stream[i] for i in range(len(stream)))


def oracle_decrypt(version, key, iv, first_seqno, stream):
    """Independent TLS 1.2 / 1.3 AES-GCM decryption of a stream of application data records."""
    records = oracle_records(version, key, iv, first_seqno, stream)
    assert all(record_type == TLS_CT_APPDATA for record_type, _ in records)
    return [plaintext for _, plaintext in records]


def oracle_records(version, key, iv, first_seqno, stream, aead=AESGCM):
    """Like :func:`oracle_decrypt`, keeping each record's content type: ``[(type, plaintext)]``.

    TLS 1.3 (RFC 8446 5.2): the header must say 0x17 / 0x0303 whatever the
    record is; the real type is the last non-zero byte of the inner
    plaintext; the nonce is the IV xor the record number. ChaCha20-Poly1305
    in TLS 1.2 (RFC 7905) has no explicit nonce: IV xor record number too.
    """
    out, pos, seqno = [], 0, first_seqno
    while pos < len(stream):
        header = stream[pos:pos + 5]
        assert header[1:3] == b"\x03\x03"
        length = int.from_bytes(header[3:5], "big")
        body = stream[pos + 5:pos + 5 + length]
        assert len(body) == length
        xor_nonce = bytes(a ^ b for a, b in zip(iv, seqno.to_bytes(12, "big")))
        if version == "1.2":
            nonce, sealed = (iv + body[:8], body[8:]) if aead is AESGCM else (xor_nonce, body)
            aad = seqno.to_bytes(8, "big") + header[:3] + (len(sealed) - 16).to_bytes(2, "big")
            out.append((header[0], aead(key).decrypt(nonce, sealed, aad)))
        else:
            assert header[0] == 23, "TLS 1.3 outer type must be application_data"
            inner = aead(key).decrypt(xor_nonce, body, header).rstrip(b"\0")
            out.append((inner[-1], inner[:-1]))
        pos += 5 + length
        seqno += 1
    return out


def check_wire(h, frames):
    stream = reassemble(frames, h.iss, h.flow)
    assert oracle_decrypt(h.version, h.key, h.iv, h.rec_seq, stream) == h.plaintext
    return stream


# --- the plain path -----------------------------------------------------------------

@pytest.mark.parametrize("mss", (536, 1448, 8948))
@pytest.mark.parametrize("cipher", ("AES-128-GCM", "AES-256-GCM"))
@pytest.mark.parametrize("version", ("1.2", "1.3"))
def test_edge5_record_sizes_and_segments_across_records(version, cipher, mss):
    async def body():
        h = await Harness(version, cipher, mss=mss).open()
        h.write(SIZES + SIZES[::-1])
        await h.sock.output()
        frames = h.frames()
        check_wire(h, frames)
        records = 2 * len(SIZES)
        assert h.counter("TX_TLS_RECORDS") == records
        assert h.counter("TX_TLS_ENCRYPTED_PACKETS") == len(frames)
        assert h.counter("TX_TLS_OOO") == 0 and h.counter("TX_TLS_DUMP_BYTES") == 0
        # The tag log holds each computed tag (read back as the driver does).
        tag = h.sock.session.snd_tag
        last = h.rec_seq + records - 1
        assert await h.ktls.read_tag_log(tag, last) is not None
        await h.sock.close()
        assert h.nic.tls_tx.in_use == 0
    run(body())


@pytest.mark.parametrize("version", ("1.2", "1.3"))
def test_edge5_headers_nonces_tags_split(version):
    """MSS 7: every header, nonce and tag is cut across segments."""
    async def body():
        h = await Harness(version, mss=7).open()
        h.write((0, 1, 30, 2))
        await h.sock.output()
        check_wire(h, h.frames())
    run(body())


def test_seq_wraps_and_ipv6():
    async def body():
        flow = TcpFlow(src_addr="2001:db8::1", dst_addr="2001:db8:1::2", ip_version=6)
        h = await Harness("1.3", "AES-256-GCM", iss=0xFFFF_F000, flow=flow).open()
        h.write((3000, 2500))
        await h.sock.output()
        frames = h.frames()
        assert IPv6 in Ether(frames[0])
        check_wire(h, frames)
    run(body())


def test_caps_default_off_and_tls_on():
    async def body():
        plain = Device(ReferenceNic())
        await plain.open(tx_log=2, rx_log=2)
        assert plain.caps.tls == 0 and plain.caps.tx_contexts == 0
        tls = Device(ReferenceNic(tls=True, tx_contexts=17))
        await tls.open(tx_log=2, rx_log=2)
        assert tls.caps.tls == (CAP_TLS_AES_128_GCM | CAP_TLS_AES_256_GCM | CAP_TLS_1_2
                                | CAP_TLS_1_3 | CAP_TLS_TX)
        assert tls.caps.tx_contexts == 17
        # Without TLS the control opcodes stay unknown.
        await plain.post_tx_raw(opcode=TxOpcode.FREE, tag=1)
        assert (await plain.flush_tx())[0].status is TxStatus.BAD_OPCODE
    run(body())


# --- retransmits ------------------------------------------------------------------------

async def _sent_then_rexmit(strategy, version, sizes, rexmit, mss=536):
    """Send ``sizes`` records, then retransmit ``rexmit(h) -> (seq, length)``."""
    h = await Harness(version, mss=mss, strategy=strategy).open()
    h.write(sizes)
    await h.sock.output()
    first = h.frames()
    seq, length = rexmit(h)
    dump_before = h.counter("TX_TLS_DUMP_BYTES")
    await h.sock.retransmit(seq, length)
    again = h.frames()
    assert again, "nothing retransmitted"
    check_wire(h, first + again)
    return h, h.counter("TX_TLS_DUMP_BYTES") - dump_before


STRATS = ("dump", "seek")


@pytest.mark.parametrize("version", ("1.2", "1.3"))
@pytest.mark.parametrize("strategy", STRATS)
def test_edge1_retransmit_mid_record(strategy, version):
    async def body():
        h, dumped = await _sent_then_rexmit(
            strategy, version, (4000, 100), lambda h: (h.iss + 536 * 3, 536))
        if strategy == "dump":
            assert dumped == 536 * 3 == h.ktls.stats["redma_bytes"]   # exactly [record start, seq)
            assert h.ktls.stats["dump_descriptors"] == 2               # 1608 bytes in hw_mtu chunks
        else:
            assert dumped == 0 and h.ktls.stats["resync_seek"] == 1
        assert h.counter("TX_TLS_OOO") == 0
    run(body())


@pytest.mark.parametrize("strategy", STRATS)
def test_edge2_retransmit_last_segment_of_16k_record(strategy):
    async def body():
        def last(h):
            end = 5 + 8 + 16384 + 16
            return h.iss + end - 700, 700
        h, dumped = await _sent_then_rexmit(strategy, "1.2", (16384, 10), last, mss=1448)
        if strategy == "dump":
            assert dumped == 5 + 8 + 16384 + 16 - 700
            assert h.ktls.stats["dump_descriptors"] == -(-dumped // 1500)
        else:
            # The segment carries the tag: it comes from the tag log.
            assert dumped == 0 and h.ktls.stats["resync_seek_tag"] == 1
        # The share: 1000*700 // (10*(700 + 16452)) = 4 > 2, so this one
        # retransmit moves the socket to software, once.
        assert h.sock.tcp.t_snd_rxt_bytes == 700 and h.sock.tcp.t_sndbytes == 16452
        assert h.sock.t_nic_ktls_xmit_dis and h.sock.session.mode == MODE_SW
        assert h.ktls.stats["ifnet_disable_ok"] == 1 == h.ktls.stats["switch_to_sw"]
        await h.sock.retransmit(h.iss + 5 + 8 + 16384 + 16 - 700, 700)   # old tag again
        h.write((100,), fill=3)                                       # a software record
        await h.sock.output()
        h.frames()
        assert h.ktls.stats["ifnet_disable_ok"] == 1 == h.ktls.stats["switch_to_sw"]
        assert h.ktls.completions[-1].tag == 0
        check_wire(h, h.wire)
    run(body())


@pytest.mark.parametrize("strategy", STRATS)
def test_edge3_retransmit_on_record_boundary(strategy):
    async def body():
        h, dumped = await _sent_then_rexmit(
            strategy, "1.3", (500, 700, 900), lambda h: (h.iss + 5 + 500 + 17, 300))
        assert dumped == 0 and h.ktls.stats["resync_params"] == 1
        assert h.counter("TX_TLS_RESYNC") == 1
    run(body())


@pytest.mark.parametrize("strategy", STRATS)
def test_retransmit_first_segment_of_record(strategy):
    async def body():
        h, dumped = await _sent_then_rexmit(strategy, "1.2", (3000,), lambda h: (h.iss, 536))
        assert dumped == 0
    run(body())


@pytest.mark.parametrize("version", ("1.2", "1.3"))
@pytest.mark.parametrize("strategy", STRATS)
def test_edge4_forward_gap(strategy, version):
    """A segment lost locally: the next one finds the card behind it in the same record."""
    async def body():
        h = await Harness(version, mss=536, strategy=strategy).open()
        h.write((3000,))
        segs = h.sock.tcp.new_segments()
        await h.sock.send_segments([segs[0]])
        await h.sock.send_segments(segs[2:])              # segs[1] "dropped" before the card
        # Only the missing bytes, no parameter rewrite; seek too, since the
        # record was never sent whole (its tag will be computed from the
        # bytes: a SEEK would lose the prefix's GHASH).
        assert h.ktls.stats["redma_bytes"] == 536
        assert h.counter("TX_TLS_RESYNC") == 0
        if strategy == "seek":
            assert h.ktls.stats["seek_fallback_dump"] == 1 and h.ktls.stats["resync_seek"] == 0
        await h.sock.send_segments([segs[1]])             # the real retransmit
        check_wire(h, h.frames())
        assert h.counter("TX_TLS_OOO") == 0
    run(body())


@pytest.mark.parametrize("strategy", STRATS)
def test_edge6_segment_starting_inside_trailer(strategy):
    async def body():
        def in_tag(h):
            return h.iss + 5 + 8 + 1000 + 16 - 5, 5 + 40
        h, _ = await _sent_then_rexmit(strategy, "1.2", (1000, 200), in_tag)
        # Two back-to-back retransmits split inside the trailer.
        tag_start = h.iss + 5 + 8 + 1000
        await h.sock.retransmit(tag_start + 3, 6)
        await h.sock.retransmit(tag_start + 9, 7)
        assert len(h.frames()) == 2
        check_wire(h, h.wire)
    run(body())


@pytest.mark.parametrize("strategy", STRATS)
def test_rexmit_many_segments_identical(strategy):
    async def body():
        h = await Harness("1.3", "AES-256-GCM", mss=536, strategy=strategy).open()
        h.write((5000, 0, 1, 4000))
        await h.sock.output()
        first = h.frames()
        await h.sock.retransmit(h.iss + 1000, 6000)
        again = h.frames()
        check_wire(h, first + again)
        stream = reassemble(first, h.iss)
        for frame in again:
            seg = Ether(frame)[TCP]
            start = (seg.seq - h.iss) & 0xFFFF_FFFF
            assert bytes(seg.payload) == stream[start:start + len(bytes(seg.payload))]
    run(body())


# --- drops --------------------------------------------------------------------------------

def test_out_of_sequence_dropped_no_resync():
    async def body():
        h = await Harness("1.2").open()
        h.write((2000,))
        tag = h.sock.session.snd_tag.tag
        bad = h.sock.tcp.build_frame(h.iss + 100, b"x" * 50)
        await h.dev.send(bad, tag=tag)
        (c,) = await h.dev.flush_tx()
        assert c.status is TxStatus.OUT_OF_SEQUENCE and c.length == 0
        assert h.frames() == [] and h.counter("TX_TLS_OOO") == 1
        await h.sock.output()                # the context was not moved: in order still works
        check_wire(h, h.frames())
        assert h.counter("TX_TLS_RESYNC") == 0
    run(body())


def test_bad_flow_and_bad_tag():
    async def body():
        h = await Harness("1.2").open()
        h.write((100,))
        tag = h.sock.session.snd_tag.tag
        other = KtlsSocket(h.ktls, TcpFlow(src_port=40000), iss=h.iss)
        await h.dev.send(other.tcp.build_frame(h.iss, b"y" * 30), tag=tag)
        await h.dev.send(h.sock.tcp.build_frame(h.iss, b"y" * 30), tag=200)     # free context
        await h.dev.send(h.sock.tcp.build_frame(h.iss, b"y" * 30), tag=300)     # out of range
        statuses = [c.status for c in await h.dev.flush_tx()]
        assert statuses == [TxStatus.BAD_FLOW, TxStatus.BAD_TAG, TxStatus.BAD_TAG]
        assert h.frames() == [] and h.counter("TX_TLS_DROP_BAD_FLOW") == 3
    run(body())


def test_wrong_port_dropped_and_static_port_checked():
    """A context belongs to one port (FreeBSD ``tag->ifp``): a frame for the
    same flow sent out of another port is dropped, never sent with a key that
    belongs elsewhere; SET_STATIC naming a port the card lacks is refused."""
    async def body():
        h = await Harness("1.3", ports=2).open()
        tag = h.sock.session.snd_tag.tag
        h.write((100,))
        frame = h.sock.tcp.build_frame(h.iss, h.sock.tcp.bytes_at(h.iss, 60))
        await h.dev.send(frame, tag=tag, port=1)
        statuses = [c.status for c in await h.dev.flush_tx()]
        assert statuses == [TxStatus.WRONG_PORT]
        assert h.nic.wire.pending(1) == 0 and h.counter("TX_TLS_DROP_BAD_FLOW") == 1
        static = pack(TlsStaticParams, cipher=TlsCipher.AES_128_GCM, version=TlsVersion.TLS_1_3,
                      port=5, ip_version=4)
        await h.dev.send_ctrl(TxOpcode.SET_STATIC, 200, static)
        assert (await h.dev.flush_tx())[0].status is TxStatus.BAD_PARAMS
    run(body())


def test_bogus_header_context_failed_until_set_progress():
    async def body():
        h = await Harness("1.2").open()
        tcp = h.sock.tcp
        tag = h.sock.session.snd_tag.tag
        tcp.append(bytes([23, 3, 1, 0, 40]) + bytes(40))          # version 0x0301
        await h.dev.send(tcp.build_frame(h.iss, tcp.bytes_at(h.iss, 20)), tag=tag)
        await h.dev.send(tcp.build_frame(h.iss + 20, tcp.bytes_at(h.iss + 20, 25)), tag=tag)
        statuses = [c.status for c in await h.dev.flush_tx()]
        assert statuses == [TxStatus.CONTEXT_FAILED] * 2
        assert h.frames() == [] and h.counter("TX_TLS_DROP_NO_SYNC_DATA") == 2
        # Too long a record fails as well.
        block = pack(TlsProgressParams, next_seq=h.iss, record_seq=h.iss, record_number=0)
        await h.dev.send_ctrl(TxOpcode.SET_PROGRESS, tag, block)
        await h.dev.send(tcp.build_frame(h.iss, bytes([23, 3, 3, 0x41, 0x09])), tag=tag)
        statuses = [c.status for c in await h.dev.flush_tx()]
        assert statuses == [TxStatus.OK, TxStatus.CONTEXT_FAILED]
        await h.dev.send_ctrl(TxOpcode.SET_PROGRESS, tag, block)
        assert (await h.dev.flush_tx())[0].status is TxStatus.OK
        assert not h.nic.tls_tx.context(tag).failed
    run(body())


def test_no_tag_drop_after_untagged_seek():
    async def body():
        h = await Harness("1.3").open()
        h.write((100,))
        tcp, tag = h.sock.tcp, h.sock.session.snd_tag.tag
        record = tcp.entries[0].record
        block = pack(TlsProgressParams, next_seq=h.iss + 50, record_seq=h.iss,
                     record_number=h.rec_seq, flags=TlsProgressFlags.SEEK,
                     content_type=23, record_length=record.length_field)
        await h.dev.send_ctrl(TxOpcode.SET_PROGRESS, tag, block)
        await h.dev.send(tcp.build_frame(h.iss + 50, tcp.bytes_at(h.iss + 50, 72)), tag=tag)
        statuses = [c.status for c in await h.dev.flush_tx()]
        assert statuses == [TxStatus.OK, TxStatus.NO_TAG]
        assert h.frames() == [] and h.counter("TX_TLS_DROP_NO_SYNC_DATA") == 1
        # Without the tag bytes the same seek works, and the payload is right.
        await h.dev.send(tcp.build_frame(h.iss + 50, tcp.bytes_at(h.iss + 50, 20)), tag=tag)
        assert (await h.dev.flush_tx())[0].status is TxStatus.OK
    run(body())


def test_set_progress_bad_params():
    async def body():
        h = await Harness("1.2").open()
        tag = h.sock.session.snd_tag.tag
        bad = [
            dict(next_seq=10, record_seq=0),                                      # no SEEK, mid record
            dict(next_seq=0, record_seq=0, flags=TlsProgressFlags.TAG_VALID),      # tag without SEEK
            dict(next_seq=10, record_seq=0, flags=TlsProgressFlags.SEEK, record_length=5),
            dict(next_seq=100, record_seq=0, flags=TlsProgressFlags.SEEK, record_length=90),
        ]
        for fields in bad:
            await h.dev.send_ctrl(TxOpcode.SET_PROGRESS, tag, pack(TlsProgressParams, **fields))
        statuses = [c.status for c in await h.dev.flush_tx()]
        assert statuses == [TxStatus.BAD_PARAMS] * len(bad)
        assert h.counter("TX_TLS_RESYNC") == 0
    run(body())


def test_edge13_pure_ack_with_tag_unchanged():
    async def body():
        h = await Harness("1.2").open()
        h.write((300,))
        await h.sock.output()
        h.frames()
        await h.sock.send_ack()
        (frame,) = h.frames()
        assert len(bytes(Ether(frame)[TCP].payload)) == 0
        assert h.counter("TX_TLS_ENCRYPTED_PACKETS") == 1
    run(body())


# --- contexts -------------------------------------------------------------------------------

def test_free_zeroes_key_and_no_leaks():
    async def body():
        h = await Harness("1.3", "AES-256-GCM").open()
        socks = [h.sock] + [await h.new_socket(TcpFlow(src_port=50000 + i)) for i in range(3)]
        assert h.nic.tls_tx.in_use == 4 == h.ktls.tags_in_use
        ctx = h.nic.tls_tx.context(h.sock.session.snd_tag.tag)
        assert bytes(ctx.key) == KEYS["AES-256-GCM"]
        for sock in socks:
            await sock.close()
        assert bytes(ctx.key) == bytes(32) and bytes(ctx.salt_iv) == bytes(12)
        assert h.nic.tls_tx.in_use == 0 == h.ktls.tags_in_use
        assert h.counter("TX_TLS_CTX") - h.counter("TX_TLS_CTX_FREED") == 0
        await h.dev.send_ctrl(TxOpcode.FREE, 1)
        assert (await h.dev.flush_tx())[0].status is TxStatus.BAD_TAG
    run(body())


def test_edge12_tag_exhaustion_falls_back_to_software():
    async def body():
        h = await Harness("1.2", contexts=1).open()
        sw = await h.new_socket(TcpFlow(src_port=50001))
        assert h.sock.session.mode == MODE_IFNET and sw.session.mode == MODE_SW
        assert h.ktls.stats["enomem"] == 1
        data = bytes(range(200)) * 10
        sw.write(data, record_size=700)
        await sw.output()
        frames = h.frames()
        assert all(c.tag == 0 for c in h.ktls.completions[-len(frames):])
        stream = reassemble(frames, h.iss)
        assert b"".join(oracle_decrypt("1.2", h.key, h.iv, h.rec_seq, stream)) == data
    run(body())


def test_enable_tx_validation():
    async def body():
        h = await Harness("1.2").open()
        sock = KtlsSocket(h.ktls, TcpFlow(src_port=1))
        cases = [("1.0", "AES-128-GCM", 16, 4), ("1.1", "AES-256-GCM", 32, 4),
                 (9, "AES-128-GCM", 16, 12), ("1.2", "AES-128-GCM", 32, 4),
                 ("1.3", "AES-256-GCM", 16, 12), ("1.2", "AES-128-GCM", 16, 12),
                 ("1.2", "RC4", 16, 4)]
        for version, cipher, klen, ivlen in cases:
            with pytest.raises(KtlsError) as info:
                await sock.enable_tx(version, cipher, bytes(klen), bytes(ivlen))
            assert info.value.errno == errno.EINVAL
        chacha = await sock.enable_tx("1.3", "CHACHA20-POLY1305", bytes(32), bytes(12))
        assert chacha.mode == MODE_SW                     # valid, not offloadable
        with pytest.raises(KtlsError) as info:
            await sock.enable_tx("1.3", "AES-128-GCM", bytes(16), bytes(12))
        assert info.value.errno == errno.EALREADY       # no rekey
    run(body())


def test_direct_model_context_record_state():
    """The model's tracker after SET_STATIC: the first record at tcp_seq."""
    async def body():
        h = await Harness("1.2", iss=5).open()
        ctx = h.nic.tls_tx.context(h.sock.session.snd_tag.tag)
        assert ctx.version is TlsVersion.TLS_1_2 and ctx.next_seq == 5
        assert ctx.record == TlsTxRecord(seq=5, number=h.rec_seq)
    run(body())


# --- FreeBSD behaviours -----------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATS)
def test_edge22_first_retransmit_switches_to_software_once(strategy):
    async def body():
        h = await Harness("1.2", mss=536, strategy=strategy).open()
        h.write((3000,))
        await h.sock.output()
        await h.sock.retransmit(h.iss + 536, 536)     # pct = 1000*536 // (10*(536+3029)) = 15 > 2
        assert h.sock.t_nic_ktls_xmit_dis and h.sock.session.mode == MODE_SW
        assert h.ktls.stats["ifnet_disable_ok"] == 1 == h.ktls.stats["switch_to_sw"]
        h.write((2000, 1))                            # future records: software
        await h.sock.output()
        await h.sock.retransmit(h.iss + 1000, 4000)   # old records keep the old tag (edge 10)
        assert h.ktls.stats["ifnet_disable_ok"] == 1  # never again
        assert h.sock.t_nic_ktls_xmit                 # until the old session is freed
        h.frames()
        check_wire(h, h.wire)
        tagged = {c.tag for c in h.ktls.completions if c.opcode is TxOpcode.PACKET}
        assert tagged == {0, h.sock.sessions[0].snd_tag.tag}
        await h.sock.close()
        assert h.nic.tls_tx.in_use == 0
    run(body())


def test_edge2_rexmit_pct_formula_below_threshold():
    async def body():
        h = await Harness("1.3", mss=1448).open()
        h.write((16384,) * 4)
        await h.sock.output()
        await h.sock.retransmit(h.iss + 60000, 1000)   # 1000*1000 // (10*(1000+65604)) = 1
        assert not h.sock.t_nic_ktls_xmit_dis and h.sock.session.mode == MODE_IFNET
        h.frames()
        check_wire(h, h.wire)
    run(body())


# --- edge case 7: zero-length records ---------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATS)
@pytest.mark.parametrize("version", ("1.2", "1.3"))
def test_edge7_zero_length_aead_records(version, strategy):
    """Empty-plaintext records: alone, several in one segment, cut across
    segments, between data records, and retransmitted from inside their tag.
    Each decrypts to nothing under its own tag and record number."""
    async def body():
        h = await Harness(version, mss=64, strategy=strategy, rexmit_pct=100).open()
        h.write((0, 0, 0, 50, 0, 1, 0))
        await h.sock.output()
        first = h.frames()
        stream = check_wire(h, first)
        empty_body = 8 + 16 if version == "1.2" else 1 + 16
        starts = record_starts(stream)
        lengths = [int.from_bytes(stream[p + 3:p + 5], "big") for p in starts]
        assert [n == empty_body for n in lengths] == [True, True, True, False, True, False, True]
        assert h.counter("TX_TLS_RECORDS") == 7
        # Retransmit from the 4th byte of the tag of the fifth (empty) record.
        hlen = 5 + (8 if version == "1.2" else 0)
        seq = h.iss + starts[4] + 5 + empty_body - 16 + 3
        await h.sock.retransmit(seq, 40)
        again = h.frames()
        assert again and all(c.status is TxStatus.OK for c in h.ktls.completions)
        if strategy == "dump":
            assert h.counter("TX_TLS_DUMP_BYTES") == seq - h.iss - starts[4] >= hlen
        else:
            assert h.ktls.stats["resync_seek_tag"] == 1 and h.counter("TX_TLS_DUMP_BYTES") == 0
        check_wire(h, first + again)
    run(body())


def test_edge7_tls10_cbc_empty_fragment_not_supported():
    """TLS 1.0 CBC (and its empty-fragment records) is not a suite here: a clear
    EINVAL, and nothing of a session is left behind."""
    async def body():
        h = await Harness("1.2").open()
        sock = KtlsSocket(h.ktls, TcpFlow(src_port=2), iss=h.iss)
        with pytest.raises(KtlsError) as info:
            await sock.enable_tx("1.0", "AES-128-CBC-SHA1", bytes(16), bytes(16))
        assert info.value.errno == errno.EINVAL and "CBC" in str(info.value)
        with pytest.raises(KtlsError) as info:
            await sock.enable_tx("1.0", "AES-128-GCM", bytes(16), bytes(4))
        assert info.value.errno == errno.EINVAL and "TLS 1.0" in str(info.value)
        assert sock.session is None and h.ktls.tags_in_use == 1     # h.sock's only
        assert (await sock.enable_tx("1.2", "AES-128-GCM", bytes(16), bytes(4))).mode == MODE_IFNET
    run(body())


# --- edge case 8: TLS 1.3 header, inner types, nonces ------------------------------------------

@pytest.mark.parametrize("strategy", STRATS)
@pytest.mark.parametrize("version", ("1.3", "1.2"))
def test_edge8_record_types_outer_header_and_nonce(version, strategy):
    """TLS 1.3: every header on the wire says 0x17 / 0x0303, the real type
    (handshake, alert, data, set per record like TLS_SET_RECORD_TYPE) is the
    inner type byte, and the nonce is the IV xor the record number (numbers
    crossing a 16-bit carry, above 2**40). TLS 1.2 shows the type in the
    header. Retransmits inside a handshake record and of the alert's tag."""
    async def body():
        rec_seq = (1 << 40) + 0xFFFE
        h = await Harness(version, "AES-256-GCM", mss=536, strategy=strategy, rec_seq=rec_seq,
                          rexmit_pct=100).open()
        ticket = bytes([4, 0, 1, 0x2C]) + bytes(range(256)) + bytes(44)   # NewSessionTicket
        records = [(TLS_CT_APPDATA, bytes(range(200)) * 3), (TLS_CT_HANDSHAKE, ticket),
                   (TLS_CT_ALERT, b"\x01\x00"), (TLS_CT_APPDATA, b""),
                   (TLS_CT_HANDSHAKE, bytes([8, 0, 0, 2, 0, 0])), (TLS_CT_APPDATA, b"z" * 900)]
        for record_type, data in records:
            h.sock.write(data, record_type=record_type)
        await h.sock.output()
        stream = reassemble(h.frames(), h.iss, h.flow)
        starts = record_starts(stream)
        await h.sock.retransmit(h.iss + starts[1] + 100, 150)        # inside the ticket
        alert_tag = h.iss + starts[3] - 16
        await h.sock.retransmit(alert_tag - 2, 10)                   # alert's tag
        stream = reassemble(h.wire + h.frames(), h.iss, h.flow)
        key, iv = KEYS["AES-256-GCM"], h.iv
        assert oracle_records(version, key, iv, rec_seq, stream) == records
        headers = [stream[p:p + 3] for p in starts]
        if version == "1.3":
            assert headers == [b"\x17\x03\x03"] * len(records)
        else:
            assert headers == [bytes([t, 3, 3]) for t, _ in records]
        # Each record opens only under its own record number: the nonce moves.
        p = starts[2]
        header, body_ = stream[p:p + 5], stream[p + 5:starts[3]]
        nonce = bytes(a ^ b for a, b in zip(iv, (rec_seq + 2).to_bytes(12, "big")))
        wrong = bytes(a ^ b for a, b in zip(iv, (rec_seq + 3).to_bytes(12, "big")))
        if version == "1.3":
            assert AESGCM(key).decrypt(nonce, body_, header) == b"\x01\x00\x15"
            with pytest.raises(InvalidTag):
                AESGCM(key).decrypt(wrong, body_, header)
        assert h.counter("TX_TLS_OOO") == 0
    run(body())


# --- many flows -----------------------------------------------------------------------------

def _many_flow(i):
    """Parameters of flow ``i`` of :func:`test_64_interleaved_flows`: all different."""
    version = ("1.2", "1.3")[i % 2]
    cipher = ("AES-128-GCM", "AES-256-GCM")[(i // 2) % 2]
    key = bytes((i * 29 + j) & 0xFF for j in range(16 if cipher == "AES-128-GCM" else 32))
    iv = bytes((i * 3 + 0x80 + j) & 0xFF for j in range(4 if version == "1.2" else 12))
    if (i // 4) % 2:
        flow = TcpFlow(src_addr=f"2001:db8::{i + 1:x}", dst_addr="2001:db8:1::2",
                       src_port=20000 + i, ip_version=6)
    else:
        flow = TcpFlow(src_addr=f"192.0.2.{i + 1}", src_port=20000 + i)
    return dict(version=version, cipher=cipher, key=key, iv=iv, flow=flow,
                iss=(0xFFFF_F800 + i * 0x0101_0101) & 0xFFFF_FFFF,
                rec_seq=(1 << 48) + i if i % 8 < 2 else i * 1000,
                mss=(536, 1448)[(i // 8) % 2],
                sizes=(i * 37 % 900 + 1, 0, 300 + i * 11))


@pytest.mark.parametrize("strategy", STRATS)
def test_64_interleaved_flows(strategy):
    """64 sessions on one card (TLS 1.2/1.3, AES-128/256, IPv4/IPv6, MSS 536
    and 1448, seq wraps, record numbers above 2**48), their segments
    interleaved in one TX ring, every third flow retransmitting mid record
    while the others' segments are queued; each flow's wire stream is
    reassembled and decrypted on its own."""
    async def body():
        h = await Harness(rexmit_pct=100, strategy=strategy).open()
        flows = []
        for i in range(64):
            f = _many_flow(i)
            sock = KtlsSocket(h.ktls, f["flow"], iss=f["iss"], mss=f["mss"])
            session = await sock.enable_tx(f["version"], f["cipher"], f["key"], f["iv"],
                                           f["rec_seq"])
            assert session.mode == MODE_IFNET
            f["plain"] = [bytes((i + 5 * j + k) & 0xFF for k in range(n))
                          for j, n in enumerate(f["sizes"])]
            for data in f["plain"]:
                sock.write(data, record_size=max(len(data), 1))
            f["sock"], f["segs"] = sock, sock.tcp.new_segments()
            flows.append(f)
        assert h.nic.tls_tx.in_use == 65 == h.ktls.tags_in_use
        rounds = max(len(f["segs"]) for f in flows)
        for r in range(rounds):
            for i, f in enumerate(flows):
                if r < len(f["segs"]):
                    await f["sock"].send_segments([f["segs"][r]], flush=False)
                if r == 2 and i % 3 == 0:
                    tcp = f["sock"].tcp
                    await f["sock"].send_segments(tcp.rexmit_segments(f["iss"] + 40, 300),
                                                  flush=False)
        await h.ktls.flush()
        packets = [c for c in h.ktls.completions if c.opcode is TxOpcode.PACKET]
        assert all(c.status is TxStatus.OK for c in packets)
        switches = sum(a.tag != b.tag for a, b in zip(packets, packets[1:]))
        assert switches >= len(packets) // 2            # really interleaved in the ring
        by_port = {}
        for frame in h.frames():
            by_port.setdefault(Ether(frame)[TCP].sport, []).append(frame)
        for f in flows:
            stream = reassemble(by_port.pop(f["flow"].src_port), f["iss"], f["flow"])
            assert oracle_decrypt(f["version"], f["key"], f["iv"], f["rec_seq"], stream) \
                == f["plain"]
        assert h.counter("TX_TLS_OOO") == 0
        # Every record's tag at least once (dump recomputes some on the way).
        assert h.counter("TX_TLS_RECORDS") >= 64 * 3
        if strategy == "dump":
            assert h.counter("TX_TLS_DUMP_BYTES") == h.ktls.stats["redma_bytes"] > 0
        else:
            assert h.ktls.stats["resync_seek"] > 0
        for f in flows:
            await f["sock"].close()
        assert h.nic.tls_tx.in_use == 1
    run(body())


# --- bad input: freed tags, fallback by cipher ------------------------------------------------

def test_freed_tag_rejected_nothing_sent():
    """A tag whose context was FREEd is BAD_TAG for every opcode; its flow's
    bytes never leave, and the freed context holds no key."""
    async def body():
        h = await Harness("1.3").open()
        sock = await h.new_socket(TcpFlow(src_port=40001))
        tag = sock.session.snd_tag.tag
        sock.write(b"secret" * 50)
        await sock.output()
        h.frames()
        tcp = sock.tcp
        await sock.close()
        assert not h.nic.tls_tx.context(tag).in_use
        assert bytes(h.nic.tls_tx.context(tag).key) == bytes(32)
        drops = h.counter("TX_TLS_DROP_BAD_FLOW")
        tcp.append(bytes([23, 3, 3, 0, 40]) + b"secret" * 6 + bytes(5))
        seq = tcp.write_seq - 45
        await h.dev.send(tcp.build_frame(seq, tcp.bytes_at(seq, 45)), tag=tag)
        block = pack(TlsProgressParams, next_seq=seq, record_seq=seq, record_number=0)
        await h.dev.send_ctrl(TxOpcode.SET_PROGRESS, tag, block)
        await h.dev.send_ctrl(TxOpcode.DUMP, tag, b"x" * 10)
        await h.dev.send_ctrl(TxOpcode.FREE, tag)
        statuses = [c.status for c in await h.dev.flush_tx()]
        assert statuses == [TxStatus.BAD_TAG] * 4
        assert h.frames() == [] and h.counter("TX_TLS_DROP_BAD_FLOW") == drops + 4
    run(body())


@pytest.mark.parametrize("version", ("1.2", "1.3"))
def test_fallback_by_cipher_chacha_decrypts(version):
    """A valid suite the card lacks (ChaCha20-Poly1305) runs in software: plain
    frames (tag 0), no context, and the stream decrypts end to end."""
    async def body():
        h = await Harness(version, mss=536).open()
        key, iv = bytes(range(100, 132)), bytes(range(12))
        sock = KtlsSocket(h.ktls, TcpFlow(src_port=40002), iss=h.iss, mss=536)
        session = await sock.enable_tx(version, "CHACHA20-POLY1305", key, iv, 9)
        assert session.mode == MODE_SW and h.ktls.tags_in_use == 1
        plain = [bytes((3 * i + j) & 0xFF for j in range(n)) for i, n in enumerate((1000, 0, 2000))]
        for data in plain:
            sock.write(data, record_size=max(len(data), 1))
        await sock.output()
        await sock.retransmit(h.iss + 700, 600)
        frames = h.frames()
        assert {c.tag for c in h.ktls.completions if c.opcode is TxOpcode.PACKET} == {0}
        stream = reassemble(frames, h.iss, sock.tcp.flow)
        records = oracle_records(version, key, iv, 9, stream, aead=ChaCha20Poly1305)
        assert records == [(TLS_CT_APPDATA, data) for data in plain]
    run(body())


@pytest.mark.parametrize("strategy", STRATS)
def test_repeated_retransmits_of_the_same_segments(strategy):
    """The same mid-record segment and the record's tag segment, retransmitted
    three times each, alternately: every copy is the original bytes; dump
    re-reads the prefix each time (a backward jump) and only the gap going
    forward; seek never dumps (the tag is logged)."""
    async def body():
        h = await Harness("1.2", mss=536, strategy=strategy, rexmit_pct=100).open()
        h.write((5000, 800))
        await h.sock.output()
        mid, tag_seg = h.iss + 1000, h.iss + 5 + 8 + 5000 + 16 - 200
        for _ in range(3):
            await h.sock.retransmit(mid, 536)
            await h.sock.retransmit(tag_seg, 536)
        h.frames()
        check_wire(h, h.wire)
        assert all(c.status is TxStatus.OK for c in h.ktls.completions)
        if strategy == "dump":
            expected = 3 * (mid - h.iss) + 3 * (tag_seg - mid - 536)
            assert h.ktls.stats["redma_bytes"] == expected == h.counter("TX_TLS_DUMP_BYTES")
        else:
            assert h.counter("TX_TLS_DUMP_BYTES") == 0
            assert h.ktls.stats["resync_seek"] == 6 == h.ktls.stats["resync_seek_tag"]
    run(body())


def record_starts(stream):
    """Offsets of the record headers in a TLS byte stream."""
    pos, out = 0, []
    while pos < len(stream):
        out.append(pos)
        pos += 5 + int.from_bytes(stream[pos + 3:pos + 5], "big")
    return out
