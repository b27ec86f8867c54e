"""The TLS receive engine of the reference model, frame by frame, without a driver.

These pin down the card side of the ABI's "TLS receive" rules (steering,
tracker states, decrypted spans, candidates, RX_RESYNC) against an oracle that
knows the stream: records sealed with ``cryptography``'s AESGCM, frames built
with Scapy. The driver's behaviour on top of it is tested elsewhere.
"""

import asyncio

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tlsnic.abi import (
    Counter, RxTlsStatus, TlsCipher, TlsRxResyncFlags, TlsRxResyncParams, TlsStaticParams,
    TlsVersion, TxDescriptor, TxOpcode, TxStatus, flow_hash, flow_key, pack, unpack,
)
from tlsnic.cosim.model import ReferenceNic, parse_headers
from tlsnic.cosim.model_tls_tx import tls_aad, tls_nonce

KEY = bytes(range(16))
IV = bytes(range(100, 112))
PEER, HOST = "10.0.0.2", "10.0.0.1"
SPORT, DPORT = 443, 40000
ISN = 0xFFFF_F000          # the stream wraps 2**32 early on


def seal(version, number, content, key=KEY, iv=IV, inner_type=23, padding=0):
    """One TLS 1.2/1.3 record as it travels (header, [nonce], ciphertext, tag)."""
    if version is TlsVersion.TLS_1_3:
        plaintext = content + bytes([inner_type]) + bytes(padding)
        length = len(plaintext) + 16
        header = bytes([23, 3, 3]) + length.to_bytes(2, "big")
        explicit = b""
    else:
        plaintext = content
        length = 8 + len(plaintext) + 16
        header = bytes([inner_type, 3, 3]) + length.to_bytes(2, "big")
        explicit = number.to_bytes(8, "big")
    sealed = AESGCM(key).encrypt(tls_nonce(version, iv, number, explicit), plaintext,
                                 tls_aad(version, number, header))
    return header + explicit + sealed


def frame(seq, payload, *, v6=False, sport=SPORT, dport=DPORT):
    l3 = IPv6(src="fd00::2", dst="fd00::1") if v6 else IP(src=PEER, dst=HOST)
    return bytes(Ether() / l3 / TCP(sport=sport, dport=dport, seq=seq & 0xFFFF_FFFF, flags="PA") / payload)


class Card:
    """The model's RX engine with a parameter buffer; one frame at a time."""

    def __init__(self, contexts=8, version=TlsVersion.TLS_1_3):
        self.nic = ReferenceNic(tls=True, rx_contexts=contexts)
        self.engine = self.nic.tls_rx
        self.version = version
        self.block = self.nic.memory.alloc(128)

    def control(self, opcode, tag, block=b""):
        async def run():
            await self.nic.memory.write(self.block, block.ljust(128, b"\0"))
            desc = unpack(TxDescriptor, pack(TxDescriptor, opcode=opcode, tag=tag,
                                             addr=self.block))
            return (await self.nic._transmit(desc))[0]
        return asyncio.run(run())

    def enable(self, tag=1, seq=ISN, number=0, sport=SPORT, v6=False, port=0):
        src = bytes(16) if v6 else bytes([10, 0, 0, 2])
        dst = bytes(16) if v6 else bytes([10, 0, 0, 1])
        if v6:
            src, dst = bytes.fromhex("fd00" + "00" * 13 + "02"), bytes.fromhex("fd00" + "00" * 13 + "01")
        block = pack(TlsStaticParams, cipher=TlsCipher.AES_128_GCM, version=self.version,
                     port=port, tcp_seq=seq & 0xFFFF_FFFF, record_number=number,
                     salt_iv=int.from_bytes(IV, "little"), key=int.from_bytes(KEY, "little"),
                     src_port=sport, dst_port=DPORT, ip_version=6 if v6 else 4,
                     src_addr=int.from_bytes(src, "little"), dst_addr=int.from_bytes(dst, "little"))
        return self.control(TxOpcode.RX_SET_STATIC, tag, block)

    def resync(self, seq, number=None, tag=1):
        flags = TlsRxResyncFlags.CONFIRM if number is not None else 0
        block = pack(TlsRxResyncParams, candidate_seq=seq & 0xFFFF_FFFF, flags=flags, record_number=number or 0)
        return self.control(TxOpcode.RX_RESYNC, tag, block)

    def receive(self, raw, checked=True, port=0):
        fields, out = self.engine.receive(port, raw, parse_headers(raw), checked)
        start = len(raw) - len(TCP(raw[14 + 20:]).payload) if raw[12:14] == b"\x08\x00" else None
        return fields, out[start:] if start is not None else out


def stream(version, sizes, number=0):
    """The records of ``sizes`` back to back, with each record's start offset."""
    data, starts = b"", []
    for i, size in enumerate(sizes):
        starts.append(len(data))
        data += seal(version, number + i, bytes((i + j) & 0xFF for j in range(size)))
    return data, starts


def plain(version, sizes, number=0):
    """What the card leaves in place of the stream when it decrypts everything."""
    out = b""
    for i, size in enumerate(sizes):
        record = seal(version, number + i, bytes((i + j) & 0xFF for j in range(size)))
        body = bytes((i + j) & 0xFF for j in range(size))
        if version is TlsVersion.TLS_1_3:
            out += record[:5] + body + b"\x17" + record[-16:]
        else:
            out += record[:13] + body + record[-16:]
    return out


def segments(data, mss):
    return [(i, data[i:i + mss]) for i in range(0, len(data), mss)]


@pytest.mark.parametrize("version", [TlsVersion.TLS_1_2, TlsVersion.TLS_1_3])
def test_in_order_stream_is_decrypted_in_place(version):
    card = Card(version=version)
    assert card.enable() is TxStatus.OK
    sizes = [0, 1, 1000, 3000, 16384, 17]
    data, _ = stream(version, sizes)
    expect = plain(version, sizes)
    got = b""
    for offset, chunk in segments(data, 1448):
        fields, payload = card.receive(frame((ISN + offset) & 0xFFFF_FFFF, chunk))
        assert fields["tls"] is RxTlsStatus.TRACKING and fields["tag"] == 1
        assert (fields["dec_start"], fields["dec_end"]) == (0, len(chunk))
        assert not fields["auth_fail"]
        got += payload
    assert got == expect
    assert card.nic.counters[Counter.RX_TLS_RECORDS] == len(sizes)
    assert card.nic.counters[Counter.RX_TLS_AUTH_FAIL] == 0


def test_frames_of_other_flows_and_bad_checksums_are_left_alone():
    card = Card()
    card.enable()
    data, _ = stream(TlsVersion.TLS_1_3, [100])
    fields, payload = card.receive(frame(ISN, data, sport=444))
    assert fields["tag"] == 0 and fields["tls"] is RxTlsStatus.NONE and payload == data
    fields, payload = card.receive(frame(ISN, data), checked=False)
    assert fields["tls"] is RxTlsStatus.NOT_CHECKED and payload == data
    fields, payload = card.receive(frame(ISN, data), port=0)
    assert fields["tls"] is RxTlsStatus.TRACKING and payload == plain(TlsVersion.TLS_1_3, [100])
    fields, _ = card.receive(frame(ISN, data))          # the same bytes again: old
    assert fields["tls"] is RxTlsStatus.OUT_OF_ORDER


def test_gap_inside_a_record_skips_only_that_record():
    version = TlsVersion.TLS_1_3
    card = Card(version=version)
    card.enable()
    sizes = [4000, 4000]
    data, starts = stream(version, sizes)
    segs = segments(data, 1000)
    del segs[1]                                         # bytes 1000..1999 of record 0
    out = {}
    for offset, chunk in segs:
        fields, payload = card.receive(frame(ISN + offset, chunk))
        assert fields["tls"] is RxTlsStatus.TRACKING
        out[offset] = (fields, payload)
    expect = plain(version, sizes)
    # Record 1 starts inside the segment at offset 4000: decrypted from there.
    fields, payload = out[4000]
    first = starts[1] - 4000
    assert (fields["dec_start"], fields["dec_end"]) == (first, 1000)
    assert payload[first:] == expect[starts[1]:5000]
    assert payload[:first] == data[4000:starts[1]]
    assert card.nic.counters[Counter.RX_TLS_RECORDS] == 1


def test_lost_header_search_candidate_confirm_resumes_at_the_next_record():
    version = TlsVersion.TLS_1_2
    card = Card(version=version)
    card.enable(number=7)
    sizes = [2000, 2000, 2000, 2000]
    data, starts = stream(version, sizes, number=7)
    segs = [s for s in segments(data, 700) if not s[0] <= starts[1] < s[0] + 700]
    states, candidates = [], []
    for offset, chunk in segs:
        fields, _ = card.receive(frame(ISN + offset, chunk))
        states.append(fields["tls"])
        if fields["resync"]:
            off = fields["resync_offset"] - ((fields["resync_offset"] & 0x8000) << 1)
            candidates.append(offset + off)
            if len(candidates) == 1:
                assert offset + off == starts[2]
                assert card.resync(ISN + starts[2], 9) is TxStatus.OK
    assert candidates == [starts[2]]
    assert RxTlsStatus.SEARCHING in states and states[-1] is RxTlsStatus.TRACKING
    # Record 0 lost its end, record 2 was walked undecrypted, record 3
    # decrypted and checked.
    assert card.nic.counters[Counter.RX_TLS_RECORDS] == 1
    assert card.nic.counters[Counter.RX_TLS_AUTH_FAIL] == 0
    assert card.nic.counters[Counter.RX_TLS_RESYNC_OK] == 1


def test_false_candidate_is_rejected_and_a_stale_answer_changes_nothing():
    version = TlsVersion.TLS_1_3
    card = Card(version=version)
    card.enable()
    fake = bytes([23, 3, 3, 1, 144])                    # its chain runs past the frame
    data, starts = stream(version, [3000, 3000])
    # A segment carrying a fake header where the search will look first.
    assert card.receive(frame(ISN + 5000, fake + bytes(300)))[0]["resync"]
    assert card.engine.contexts[0].state is RxTlsStatus.PENDING
    assert card.resync(ISN + 5000) is TxStatus.OK                  # reject
    assert card.engine.contexts[0].state is RxTlsStatus.SEARCHING
    assert card.resync(ISN + 5000, 3) is TxStatus.RESYNC_STALE
    assert card.nic.counters[Counter.RX_TLS_RESYNC_FAIL] == 2


def test_header_straddling_frames_is_found_with_a_negative_offset():
    version = TlsVersion.TLS_1_3
    card = Card(version=version)
    card.enable(seq=ISN - 100000)                   # the first frame comes after a gap
    card.receive(frame(ISN, bytes(98) + bytes([23, 3])))
    fields, _ = card.receive(frame(ISN + 100, bytes([3, 0, 40]) + bytes(50)))
    assert fields["tls"] is RxTlsStatus.SEARCHING and fields["resync"]
    assert fields["resync_offset"] == 0x10000 - 2


def test_tag_failure_is_reported_and_sync_kept():
    version = TlsVersion.TLS_1_3
    card = Card(version=version)
    card.enable()
    data, starts = stream(version, [500, 500])
    bad = bytearray(data)
    bad[starts[1] - 1] ^= 1                                        # record 0's tag
    fields, _ = card.receive(frame(ISN, bytes(bad)))
    assert fields["auth_fail"] and fields["tls"] is RxTlsStatus.TRACKING
    assert card.nic.counters[Counter.RX_TLS_AUTH_FAIL] == 1
    assert card.nic.counters[Counter.RX_TLS_RECORDS] == 2


def test_implausible_header_while_tracking_ends_the_span():
    version = TlsVersion.TLS_1_3
    card = Card(version=version)
    card.enable()
    data, starts = stream(version, [300])
    fields, _ = card.receive(frame(ISN, data + bytes([23, 3, 1, 0, 40]) + bytes(60)))
    assert (fields["dec_start"], fields["dec_end"]) == (0, len(data))
    assert card.engine.contexts[0].state is RxTlsStatus.SEARCHING


def test_enable_in_the_middle_of_a_record():
    version = TlsVersion.TLS_1_3
    card = Card(version=version)
    data, starts = stream(version, [3000, 3000], number=4)
    card.enable(seq=ISN + starts[1], number=5)
    fields, payload = card.receive(frame(ISN + 2000, data[2000:4000]))
    first = starts[1] - 2000
    assert (fields["dec_start"], fields["dec_end"]) == (first, 2000)
    assert payload[:first] == data[2000:starts[1]]


def test_steering_two_choices_exists_and_full():
    card = Card(contexts=4)        # 2 buckets of 4 ways: at most 8 flows, 4 contexts
    assert card.enable(tag=1) is TxStatus.OK
    assert card.enable(tag=2) is TxStatus.STEER_EXISTS
    assert card.enable(tag=1, sport=1) is TxStatus.BAD_TAG
    for tag, sport in zip((2, 3, 4), (1, 2, 3)):
        assert card.enable(tag=tag, sport=sport) is TxStatus.OK
    assert card.engine.steering.in_use == 4
    assert card.control(TxOpcode.RX_FREE, 3) is TxStatus.OK
    assert card.engine.steering.in_use == 3
    assert bytes(card.engine.contexts[2].key) == bytes(32)
    assert card.control(TxOpcode.RX_FREE, 3) is TxStatus.BAD_TAG


def test_steering_full_bucket_is_refused():
    card = Card(contexts=16)       # 8 buckets
    # Flows whose both choices are bucket 0.
    colliding = []
    for sport in range(1, 60000):
        h = flow_hash(flow_key(0, 4, bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]), sport, DPORT))
        if h % 8 == 0 and (h >> 16) % 8 == 0:
            colliding.append(sport)
        if len(colliding) == 5:
            break
    for tag, sport in enumerate(colliding[:4], start=1):
        assert card.enable(tag=tag, sport=sport) is TxStatus.OK
    assert card.enable(tag=5, sport=colliding[4]) is TxStatus.STEER_FULL
    assert not card.engine.contexts[4].in_use


def test_ipv6_flow_is_steered():
    card = Card()
    assert card.enable(v6=True) is TxStatus.OK
    data, _ = stream(TlsVersion.TLS_1_3, [64])
    raw = frame(ISN, data, v6=True)
    fields, _ = card.engine.receive(0, raw, parse_headers(raw), True)
    assert fields["tag"] == 1 and fields["tls"] is RxTlsStatus.TRACKING
