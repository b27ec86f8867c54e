"""The TCP receive side under the kTLS receive path: ``TcpReceiver`` and ``parse_segment``.

Oracle for reassembly: a byte array filled in arrival order, where a byte
keeps the value and the flags of the first segment that carried it (first
copy wins), and the in-order prefix of filled bytes is what must have been
handed on after each segment. Oracle for parsing: Scapy builds the frames.
"""

import random

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from tlsnic.driver.tcp import (RX_AUTH_FAIL, RX_DECRYPTED, SEQ_MASK, TcpReceiver, parse_segment,
                               seq_add)


def collect(chunks, out, flags):
    for offset, data, fl in chunks:
        assert offset == len(out), "chunks are handed on in order, without holes"
        out += data
        flags += fl


def test_in_order_segments_are_handed_on_at_once():
    rx = TcpReceiver(1000)
    out, flags = bytearray(), bytearray()
    collect(rx.segment(1000, b"abc", [RX_DECRYPTED] * 3), out, flags)
    collect(rx.segment(1003, b"defg"), out, flags)
    assert bytes(out) == b"abcdefg" and bytes(flags) == bytes([1, 1, 1, 0, 0, 0, 0])
    assert rx.rcv_nxt == 1007 and rx.delivered == 7 and rx.queued == 0


def test_a_hole_holds_later_bytes_until_it_fills():
    rx = TcpReceiver(0)
    assert rx.segment(5, b"fghij") == []
    assert rx.queued == 5 and rx.stats["ooo_segments"] == 1
    chunks = rx.segment(0, b"abcde")
    assert [(o, d) for o, d, _ in chunks] == [(0, b"abcde"), (5, b"fghij")]


def test_first_copy_wins_over_a_retransmission():
    rx = TcpReceiver(0)
    rx.segment(4, b"EFGH", [RX_DECRYPTED] * 4)
    out, flags = bytearray(), bytearray()
    # A retransmission covering the queued bytes with other contents and flags.
    collect(rx.segment(0, b"abcdefghij", [0] * 10), out, flags)
    assert bytes(out) == b"abcdEFGHij"
    assert bytes(flags) == bytes([0] * 4 + [RX_DECRYPTED] * 4 + [0, 0])
    assert rx.stats["duplicate_bytes"] == 4


def test_duplicates_of_delivered_bytes_are_dropped():
    rx = TcpReceiver(0)
    rx.segment(0, b"abcd")
    assert rx.segment(0, b"abcd") == [] and rx.segment(2, b"cd") == []
    chunks = rx.segment(2, b"cdef")
    assert [(o, d) for o, d, _ in chunks] == [(4, b"ef")]
    assert rx.stats["duplicate_bytes"] == 8


@pytest.mark.parametrize("irs", [0, 0xFFFF_FF00, SEQ_MASK])
def test_random_overlap_reorder_duplicates_against_first_arrival(irs):
    rng = random.Random(irs)
    for _ in range(30):
        stream = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 2000)))
        segments = []
        for ident in range(rng.randrange(1, 40)):
            a = rng.randrange(len(stream))
            b = rng.randrange(a, min(len(stream), a + 300)) + 1
            segments.append((a, b, ident))
        # Cover everything once at least, then shuffle the lot.
        segments += [(a, min(a + 100, len(stream)), 100 + a)
                     for a in range(0, len(stream), 100)]
        rng.shuffle(segments)
        rx = TcpReceiver(irs)
        first = [None] * len(stream)
        out, flags = bytearray(), bytearray()
        for a, b, ident in segments:
            seg_flags = [ident & (RX_DECRYPTED | RX_AUTH_FAIL)] * (b - a)
            collect(rx.segment(seq_add(irs, a), stream[a:b], seg_flags), out, flags)
            for i in range(a, b):
                if first[i] is None:
                    first[i] = ident & 3
            ready = next((i for i, f in enumerate(first) if f is None), len(stream))
            assert len(out) == ready
        assert bytes(out) == stream
        assert list(flags) == first
        assert rx.rcv_nxt == seq_add(irs, len(stream))


def test_fin_after_a_hole_is_reached_only_once_the_hole_fills():
    rx = TcpReceiver(100)
    rx.segment(105, b"world", fin=True)
    assert rx.fin_at == 10 and not rx.eof
    rx.segment(100, b"hello")
    assert rx.eof


def test_rst_in_window_resets_and_stops_everything():
    rx = TcpReceiver(100)
    rx.segment(100, b"ab")
    rx.segment(5000 + (1 << 31), b"", rst=True)      # far outside the window: ignored
    assert not rx.reset
    rx.segment(102, b"", rst=True)
    assert rx.reset and rx.segment(102, b"cd") == []


def test_segments_out_of_window_are_dropped():
    rx = TcpReceiver(0, window=1000)
    assert rx.segment(1000, b"x") == [] and rx.queued == 0
    assert rx.stats["out_of_window"] == 1


# --- parse_segment ----------------------------------------------------------------------

@pytest.mark.parametrize("vlan", [None, 7])
@pytest.mark.parametrize("l3", ["ipv4", "ipv6"])
def test_parse_segment_matches_scapy(l3, vlan):
    eth = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    ip = (IP(src="198.51.100.2", dst="192.0.2.1") if l3 == "ipv4"
          else IPv6(src="2001:db8:1::2", dst="2001:db8::1"))
    tcp = TCP(sport=443, dport=49152, seq=0xFFFF_FFF0, flags="FPA",
              options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    frame = bytes(eth / ip / tcp / Raw(b"payload!")) + b"\0" * 6     # Ethernet padding
    seg = parse_segment(frame)
    assert (seg.src_addr, seg.dst_addr) == (ip.src, ip.dst)
    assert (seg.src_port, seg.dst_port, seg.seq) == (443, 49152, 0xFFFF_FFF0)
    assert seg.fin and not seg.rst and seg.ip_version == (4 if l3 == "ipv4" else 6)
    assert frame[seg.payload_offset:seg.payload_offset + seg.payload_length] == b"payload!"


def test_parse_segment_ignores_what_is_not_a_whole_tcp_segment():
    eth = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    udp = bytes(eth / IP(src="198.51.100.2", dst="192.0.2.1", proto=17) / Raw(b"x" * 20))
    fragment = bytes(eth / IP(src="198.51.100.2", dst="192.0.2.1", flags="MF") / TCP())
    cut = bytes(eth / IP(src="198.51.100.2", dst="192.0.2.1") / TCP() / Raw(b"abc"))[:-2]
    assert parse_segment(udp) is None
    assert parse_segment(fragment) is None
    assert parse_segment(cut) is None
    assert parse_segment(bytes(eth) + b"\x08\x06" + bytes(28)) is None
