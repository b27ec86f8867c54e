"""cosim/capture.py: link types, reassembly, pcapng keys, and clear errors on damaged files."""

import gzip
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether, Loopback
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, wrpcap

from tlsnic.cosim.capture import CaptureError, read_capture

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason="../shared/vectors absent")

#: A stream crossing the 32-bit sequence wrap, and the order its pieces are captured in:
#: (offset, length) of each copy. Lost-then-retransmitted, reordered, duplicated, overlapping.
STREAM = bytes((7 * i + i // 256) & 0xFF for i in range(3000))
ISN = 0xFFFF_FB00
COPIES = [(0, 500), (500, 500), (1500, 500), (1000, 500), (1000, 500), (2000, 300),
          (1900, 450), (2500, 500), (2200, 300)]


def _ip_packets(ip_version=4):
    """The client's SYN, its data segments as in COPIES, the server's SYN-ACK and ACKs."""
    if ip_version == 4:
        c2s, s2c = IP(src="192.0.2.1", dst="198.51.100.2"), IP(src="198.51.100.2", dst="192.0.2.1")
    else:
        c2s, s2c = IPv6(src="2001:db8::1", dst="2001:db8::2"), IPv6(src="2001:db8::2", dst="2001:db8::1")
    out = [c2s / TCP(sport=40000, dport=443, flags="S", seq=ISN),
           s2c / TCP(sport=443, dport=40000, flags="SA", seq=77, ack=ISN + 1)]
    for offset, length in COPIES:
        seq = (ISN + 1 + offset) & 0xFFFF_FFFF
        out.append(c2s / TCP(sport=40000, dport=443, flags="PA", seq=seq, ack=78)
                   / Raw(STREAM[offset:offset + length]))
        out.append(s2c / TCP(sport=443, dport=40000, flags="A", seq=78,
                             ack=(seq + length) & 0xFFFF_FFFF))
    return out


def _check_flow(capture, ip_version=4):
    (conn,) = capture.connections
    assert conn.syn_seen and conn.ip_version == ip_version
    assert conn.client.src[1] == 40000 and conn.server.src[1] == 443
    assert conn.client.stream == STREAM and conn.client.holes == [] and conn.client.conflicts == 0
    assert [s.kind for s in conn.client.data_segments] == [
        "new", "new", "gap", "late", "retransmit", "new", "partial", "gap", "partial"]
    assert conn.server.stream == b"" and len(conn.order) == 2 + 2 * len(COPIES)
    first = conn.client.data_segments[0]
    assert first.seq == (ISN + 1) & 0xFFFF_FFFF and first.packet == 3


LINK_LAYERS = {
    "ethernet": (1, lambda p: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p),
    "raw": (101, lambda p: p),
    "sll": (113, lambda p: CookedLinux(proto=0x0800 if IP in p else 0x86DD) / p),
    "sll2": (276, lambda p: CookedLinuxV2(proto=0x0800 if IP in p else 0x86DD) / p),
    "null": (0, lambda p: Loopback(type=2 if IP in p else 30) / p),
}


@pytest.mark.parametrize("link", sorted(LINK_LAYERS))
@pytest.mark.parametrize("ip_version", (4, 6))
def test_link_types_and_reassembly(tmp_path, link, ip_version):
    linktype, wrap = LINK_LAYERS[link]
    path = tmp_path / f"{link}.pcap"
    wrpcap(str(path), [wrap(p) for p in _ip_packets(ip_version)], linktype=linktype)
    _check_flow(read_capture(path), ip_version)


def test_openbsd_loop_and_gzip_pcapng(tmp_path):
    # LOOP: the family in network byte order (24 = AF_INET6 on OpenBSD).
    frames = [struct.pack(">I", 24) + bytes(p) for p in _ip_packets(6)]
    path = tmp_path / "loop.pcapng"
    with PcapNgWriter(str(path)) as writer:
        for frame in frames:
            writer.write(Raw(frame))
    # PcapNgWriter names the link type from the packet class: set LOOP by hand.
    data = bytearray(path.read_bytes())
    idb = data.index(struct.pack("<I", 1), 28)          # the IDB follows the 28-byte SHB
    data[idb + 8:idb + 10] = struct.pack("<H", 108)
    gz = tmp_path / "loop.pcapng.gz"
    gz.write_bytes(gzip.compress(bytes(data)))
    _check_flow(read_capture(gz), 6)


def _capture_file(tmp_path):
    path = tmp_path / "flow.pcap"
    wrpcap(str(path), [Ether() / p for p in _ip_packets()])
    return path


def test_truncated_pcap_names_packet_and_byte(tmp_path):
    path = _capture_file(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-10])
    with pytest.raises(CaptureError, match=r"cut\.pcap: packet 20 truncated at byte \d+"):
        read_capture(cut)
    cut.write_bytes(data[:30])
    with pytest.raises(CaptureError, match=r"truncated record header at byte 24 \(packet 1\)"):
        read_capture(cut)


def test_corrupt_files(tmp_path):
    path = _capture_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[24 + 8:24 + 12] = struct.pack("<I", 0x7FFF_FFFF)      # caplen of packet 1
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match=r"bad\.pcap: corrupt record header at byte 24 "
                                            r"\(packet 1\)"):
        read_capture(bad)
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"GET / HTTP/1.1\r\n")
    with pytest.raises(CaptureError, match="junk.pcap: not a pcap or pcapng file"):
        read_capture(junk)
    gz = tmp_path / "cut.pcap.gz"
    gz.write_bytes(gzip.compress(bytes(path.read_bytes()))[:-20])
    with pytest.raises(CaptureError, match=r"cut\.pcap\.gz: gzip stream is corrupt or truncated"):
        read_capture(gz)
    with pytest.raises(CaptureError, match="missing.pcap"):
        read_capture(tmp_path / "missing.pcap")


def test_truncated_pcapng_block(tmp_path):
    path = tmp_path / "flow.pcapng"
    with PcapNgWriter(str(path)) as writer:
        for p in _ip_packets():
            writer.write(Ether() / p)
    data = path.read_bytes()
    (tmp_path / "cut.pcapng").write_bytes(data[:-7])
    with pytest.raises(CaptureError, match=r"cut\.pcapng: truncated block at byte \d+ "
                                            r"\(after packet 19\)"):
        read_capture(tmp_path / "cut.pcapng")
    bad = bytearray(data)
    bad[-4:] = b"\0\0\0\0"                                   # trailing length copy
    (tmp_path / "bad.pcapng").write_bytes(bytes(bad))
    with pytest.raises(CaptureError, match="at the start, 0 at the end"):
        read_capture(tmp_path / "bad.pcapng")


def test_snapped_payload_is_kept_short(tmp_path):
    snaplen = 14 + 20 + 20 + 100
    path = tmp_path / "snap.pcap"
    # Written by hand: Scapy's writers keep whole frames whatever the snaplen.
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)
    for packet in _ip_packets():
        frame = bytes(Ether() / packet)
        kept = frame[:snaplen]
        data += struct.pack("<IIII", 0, 0, len(kept), len(frame)) + kept
    path.write_bytes(data)
    (conn,) = read_capture(path).connections
    segs = conn.client.data_segments
    assert all(s.snapped and len(s.payload) == 100 for s in segs)
    assert conn.client.holes and conn.client.stream[:100] == STREAM[:100]


@needs_vectors
def test_pcapng_decryption_secrets_block():
    capture = read_capture(VECTORS / "wireshark/captures/tls12-dsb.pcapng")
    assert len(capture.connections) == 2 and capture.packets == 17
    text = "".join(capture.keylogs)
    for name in ("tls12-dsb-1.keys", "tls12-dsb-2.keys"):
        line = (VECTORS / "wireshark/keys" / name).read_text().split()
        assert line[1] in text and line[2] in text


@needs_vectors
@pytest.mark.parametrize("name, link, ip_version", [
    ("illustrated-tls13/capture.pcap", "null", 4),
    ("hotplace/tls13/tls13_TLS_AES_128_GCM_SHA256.pcapng", "null", 6),
    ("wireshark/captures/dhe1.pcapng.gz", "ethernet", 4),
    ("wireshark/captures/tls12-dsb.pcapng", "raw", 4),
])
def test_vectors_read(name, link, ip_version):
    capture = read_capture(VECTORS / name)
    assert capture.connections and not capture.skipped
    for conn in capture.connections:
        assert conn.ip_version == ip_version
        assert conn.client.stream[:1] == b"\x16" and conn.client.holes == []


@needs_vectors
def test_retransmission_with_more_data_at_same_seq():
    # A 1-byte segment, then the whole record from the same sequence number.
    (conn,) = read_capture(VECTORS / "wireshark/captures/retrans-tls.pcap").connections
    segs = conn.client.data_segments
    assert [len(s.payload) for s in segs] == [1, 21] and [s.kind for s in segs] == ["new", "partial"]
    assert segs[0].seq == segs[1].seq and len(conn.client.stream) == 21
