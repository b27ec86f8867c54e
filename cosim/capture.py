"""Reading packet captures: TCP connections, both directions reassembled, and the keys inside.

What :mod:`.replay` needs from a capture file, and nothing TLS-specific:

* pcap and pcapng, plain or gzip-compressed, decoded by Scapy; link types
  Ethernet, raw IP (``LINKTYPE_RAW``/``IPV4``/``IPV6``), Linux cooked (SLL,
  SLL2) and BSD loopback (``NULL``, ``LOOP``);
* the TLS key logs of pcapng Decryption Secrets Blocks (Scapy reads them
  only into its own TLS layer's global state, so the block is read here);
* per TCP connection (IPv4 or IPv6), the segments of each direction in
  capture order, each with its sequence number and what it was relative to
  what came before (new data, retransmission, out of order), and each
  direction's byte stream reassembled from them (first copy wins, holes
  where the capture lost data).

A corrupt or truncated file raises :class:`CaptureError` naming the file, the
byte offset and the packet number. The file's framing (pcap record headers,
pcapng block lengths) is walked here before Scapy decodes it, because Scapy
stops quietly at a damaged record and would hand back a shorter capture.
"""

import dataclasses
import gzip
import io
import ipaddress
import logging
import struct
import zlib
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether
from scapy.packet import Raw
from scapy.utils import RawPcapReader

__all__ = ["CaptureError", "Capture", "Connection", "Direction", "Segment", "read_capture",
           "LINKTYPES"]

#: Link types this reader decodes (``LINKTYPE_*`` numbers of the pcap spec).
LINKTYPES = {
    0: "BSD loopback (NULL)", 1: "Ethernet", 12: "raw IP", 14: "raw IP", 101: "raw IP",
    108: "OpenBSD loopback (LOOP)", 113: "Linux cooked (SLL)", 228: "raw IPv4", 229: "raw IPv6",
    276: "Linux cooked v2 (SLL2)",
}
_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",      # microseconds
                b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}      # nanoseconds
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_DSB = 0x0000000A
_DSB_TLS_KEYLOG = 0x544C534B          # "TLSK"
_PCAPNG_PACKET_BLOCKS = (2, 3, 6)     # obsolete packet, simple packet, enhanced packet
_SEQ_MASK = 0xFFFF_FFFF
_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10


class CaptureError(ValueError):
    """A capture that cannot be read as a whole: says which file and where."""


def _seq_diff(a, b):
    """``a - b`` in 32-bit serial arithmetic, as a signed distance."""
    d = (a - b) & _SEQ_MASK
    return d - (1 << 32) if d & (1 << 31) else d


@dataclasses.dataclass
class Segment:
    """One TCP segment of one direction, as captured.

    Attributes
    ----------
    packet : int
        Packet number in the file (1 = the first packet, as Wireshark counts).
    time : float
        Capture timestamp in seconds.
    seq : int
        TCP sequence number of the first payload byte.
    ack : int or None
        Acknowledgment number (None without the ACK flag).
    flags : int
        TCP flag bits (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
    payload : bytes
        The TCP payload as captured (shorter than sent if the snapshot
        length cut it: see ``snapped``).
    ip : bytes
        The IP packet (header, TCP header, payload) without link-layer
        header or padding: what the receive replay puts on its wire.
    offset : int
        Stream offset of ``seq`` (0 = the first data byte of the direction).
    kind : str
        ``"new"`` (continues the furthest byte seen so far), ``"gap"`` (starts
        past it: what lies between comes later, or never), ``"late"`` (fills
        a hole left earlier: reordered, or the retransmission of a segment
        the capture did not see), ``"retransmit"`` (every byte seen before),
        ``"partial"`` (some seen before), ``"stale"`` (before the stream's
        first byte) or ``"control"`` (no payload).
    snapped : bool
        The capture's snapshot length cut the payload.
    """
    packet: int
    time: float
    seq: int
    ack: int
    flags: int
    payload: bytes
    ip: bytes
    offset: int = 0
    kind: str = "control"
    snapped: bool = False

    @property
    def end(self):
        """Stream offset just past the payload."""
        return self.offset + len(self.payload)


@dataclasses.dataclass
class Direction:
    """One direction of a connection: its segments and its reassembled byte stream.

    Attributes
    ----------
    src, dst : tuple[str, int]
        ``(address, port)`` of the sender and the receiver.
    segments : list[Segment]
        Every segment the sender sent, in capture order.
    isn : int or None
        The SYN's sequence number (None: no SYN captured).
    base_seq : int
        Sequence number of stream offset 0 (``isn + 1``, or without a SYN the
        lowest data sequence number seen).
    stream : bytes
        The payload bytes in sequence order; bytes inside ``holes`` are zero.
    holes : list[tuple[int, int]]
        ``[start, end)`` stream offsets no captured segment carried.
    conflicts : int
        Bytes a later copy carried differently from the first copy (kept).
    fin_offset : int or None
        Stream offset of the FIN, if one was captured.
    """
    src: tuple
    dst: tuple
    segments: list = dataclasses.field(default_factory=list)
    isn: int = None
    base_seq: int = 0
    stream: bytes = b""
    holes: list = dataclasses.field(default_factory=list)
    conflicts: int = 0
    fin_offset: int = None

    @property
    def data_segments(self):
        """Segments carrying payload, in capture order."""
        return [s for s in self.segments if s.payload]

    def seq_of(self, offset):
        """Sequence number of stream offset ``offset``."""
        return (self.base_seq + offset) & _SEQ_MASK

    def complete(self, start, end):
        """Whether ``[start, end)`` of the stream was captured (no hole in it)."""
        return end <= len(self.stream) and not any(a < end and start < b for a, b in self.holes)

    def counts(self):
        """How many data segments of each ``kind``."""
        out = {}
        for seg in self.data_segments:
            out[seg.kind] = out.get(seg.kind, 0) + 1
        return out

    def _reassemble(self):
        """Place every data segment on the stream: offsets, kinds, holes, conflicts."""
        data = [s for s in self.segments if s.payload]
        if self.isn is not None:
            self.base_seq = (self.isn + 1) & _SEQ_MASK
        elif data:
            first = data[0].seq
            self.base_seq = min((s.seq for s in data), key=lambda q: _seq_diff(q, first))
        # Unwrap each seq next to the previous segment's offset, so a stream
        # may cross the 32-bit wrap any number of times.
        last = 0
        for seg in self.segments:
            seg.offset = last + _seq_diff(seg.seq, self.seq_of(last))
            if seg.payload:
                last = seg.offset
            if seg.flags & _FIN and self.fin_offset is None:
                self.fin_offset = seg.offset + len(seg.payload)
        if not data:
            return
        size = max(max(s.end for s in data), 0)
        stream, have = bytearray(size), bytearray(size)
        highest = 0         # furthest byte seen
        for seg in data:
            if seg.offset < 0:
                # Before the SYN's sequence number: a segment of an earlier
                # connection on the same ports, or a bogus one. Not stream data.
                seg.kind = "stale"
                continue
            seen = sum(have[seg.offset:seg.end])
            if seen == len(seg.payload):
                seg.kind = "retransmit"
            elif seen:
                seg.kind = "partial"
            else:
                seg.kind = ("new" if seg.offset == highest else
                            "gap" if seg.offset > highest else "late")
            for i, byte in enumerate(seg.payload, seg.offset):
                if have[i]:
                    self.conflicts += stream[i] != byte
                else:
                    stream[i], have[i] = byte, 1
            highest = max(highest, seg.end)
        self.stream = bytes(stream)
        start = None
        for i, flag in enumerate(have):
            if not flag and start is None:
                start = i
            elif flag and start is not None:
                self.holes.append((start, i))
                start = None
        if start is not None:
            self.holes.append((start, size))


@dataclasses.dataclass
class Connection:
    """One TCP connection: its two directions and its packets in capture order.

    Attributes
    ----------
    index : int
        Order of the connection's first packet in the capture (0, 1, ...).
    client, server : Direction
        ``client`` sent the SYN; without one captured, the first packet's
        sender until :meth:`swap` says otherwise (the TLS layer knows better:
        whoever sent the ClientHello).
    ip_version : int
    order : list[tuple[str, Segment]]
        Every segment of both directions in capture order, with ``"client"``
        or ``"server"``.
    syn_seen : bool
    """
    index: int
    client: Direction
    server: Direction
    ip_version: int
    order: list = dataclasses.field(default_factory=list)
    syn_seen: bool = False

    @staticmethod
    def endpoint(addr_port):
        """``IP:port``, IPv6 as ``[addr]:port``."""
        addr, port = addr_port
        return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

    @property
    def name(self):
        return f"{self.endpoint(self.client.src)} -> {self.endpoint(self.server.src)}"

    def direction(self, side):
        """The :class:`Direction` sent by ``side`` (``"client"`` or ``"server"``)."""
        return {"client": self.client, "server": self.server}[side]

    def swap(self):
        """Exchange client and server (no SYN captured, and the guess was wrong)."""
        self.client, self.server = self.server, self.client
        self.order = [("server" if side == "client" else "client", seg)
                      for side, seg in self.order]


@dataclasses.dataclass
class Capture:
    """A capture file read: its connections, its keys, and what was left out.

    Attributes
    ----------
    path : str
    packets : int
        Packets in the file.
    connections : list[Connection]
    keylogs : list[str]
        TLS key logs (NSS format text) from pcapng Decryption Secrets Blocks.
    skipped : dict[str, int]
        Packets not used, by reason (not TCP, IP fragment, unknown link type).
    """
    path: str
    packets: int = 0
    connections: list = dataclasses.field(default_factory=list)
    keylogs: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)


# --- the file's framing ---------------------------------------------------------------------

def _load(path):
    """The file's bytes, gunzipped when gzip-compressed."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise CaptureError(f"{path}: gzip stream is corrupt or truncated: {error}") from None
    return raw


def _walk_pcap(path, data):
    """Check every record header of a pcap file; return the packet count."""
    endian = _PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        raise CaptureError(f"{path}: truncated pcap file header ({len(data)} of 24 bytes)")
    snaplen = struct.unpack(endian + "I", data[16:20])[0]
    pos, count = 24, 0
    while pos < len(data):
        if pos + 16 > len(data):
            raise CaptureError(f"{path}: truncated record header at byte {pos} "
                               f"(packet {count + 1})")
        caplen, wirelen = struct.unpack(endian + "II", data[pos + 8:pos + 16])
        if caplen > max(snaplen, 262144) or caplen > wirelen and wirelen:
            raise CaptureError(f"{path}: corrupt record header at byte {pos} (packet {count + 1}):"
                               f" captured length {caplen}, on the wire {wirelen}")
        if pos + 16 + caplen > len(data):
            raise CaptureError(f"{path}: packet {count + 1} truncated at byte {len(data)}: "
                               f"record at byte {pos} needs {16 + caplen} bytes, "
                               f"{len(data) - pos} left")
        pos += 16 + caplen
        count += 1
    return count


def _walk_pcapng(path, data):
    """Check every block of a pcapng file; return ``(packet count, [keylog text])``."""
    pos, count, keylogs, endian = 0, 0, [], "<"
    while pos < len(data):
        where = f"block at byte {pos} (after packet {count})"
        if pos + 12 > len(data):
            raise CaptureError(f"{path}: truncated {where}: {len(data) - pos} bytes left")
        if data[pos:pos + 4] == _PCAPNG_SHB:
            bom = data[pos + 8:pos + 12]
            endian = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(bom)
            if endian is None:
                raise CaptureError(f"{path}: section header {where} has a bad byte-order magic")
        btype, length = struct.unpack(endian + "II", data[pos:pos + 8])
        if length < 12 or length % 4:
            raise CaptureError(f"{path}: corrupt {where}: block length {length}")
        if pos + length > len(data):
            raise CaptureError(f"{path}: truncated {where}: block of {length} bytes, "
                               f"{len(data) - pos} left")
        (trailer,) = struct.unpack(endian + "I", data[pos + length - 4:pos + length])
        if trailer != length:
            raise CaptureError(f"{path}: corrupt {where}: block length {length} at the start, "
                               f"{trailer} at the end")
        body = data[pos + 8:pos + length - 4]
        if btype == _PCAPNG_DSB:
            # Decryption Secrets Block: type, length, then the secrets.
            stype, slen = struct.unpack(endian + "II", body[:8])
            if 8 + slen > len(body):
                raise CaptureError(f"{path}: corrupt decryption secrets {where}: "
                                   f"{slen} bytes of secrets in a {len(body)}-byte body")
            if stype == _DSB_TLS_KEYLOG:
                keylogs.append(body[8:8 + slen].decode("ascii", "replace"))
        elif btype in _PCAPNG_PACKET_BLOCKS:
            count += 1
        pos += length
    return count, keylogs


# --- packets ----------------------------------------------------------------------------------

def _ip_from_raw(data):
    """Scapy's IPv4 or IPv6 packet from bytes that start with the IP header."""
    version = data[0] >> 4 if data else 0
    return IP(data) if version == 4 else IPv6(data) if version == 6 else None


def _network_layer(linktype, data):
    """The IP layer of one captured frame, or None."""
    if linktype == 1:
        packet = Ether(data)
    elif linktype in (113, 276):
        packet = (CookedLinux if linktype == 113 else CookedLinuxV2)(data)
    elif linktype in (12, 14, 101, 228, 229):
        return _ip_from_raw(data)
    elif linktype in (0, 108):
        # A 4-byte address family (host order for NULL, network order for
        # LOOP) whose value for IPv6 differs between BSDs (24, 28, 30): the
        # IP version nibble says the same thing without the table.
        return _ip_from_raw(data[4:])
    else:
        return None
    return packet.getlayer(IP) or packet.getlayer(IPv6)


def _tcp_segment(number, linktype, data, time, skipped):
    """``(ip_version, src, dst, Segment)`` of one frame, or None (with the reason counted)."""
    def skip(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    if linktype not in LINKTYPES:
        return skip(f"link type {linktype}")
    ip = _network_layer(linktype, data)
    if ip is None:
        return skip("not IP")
    if isinstance(ip, IP) and (ip.flags.MF or ip.frag):
        return skip("IP fragment")
    tcp = ip.getlayer(TCP)
    if tcp is None:
        return skip("not TCP")
    payload = tcp[Raw].load if tcp.haslayer(Raw) else b""
    # The IP length says how much the sender put in; the capture may hold less.
    if isinstance(ip, IP):
        # A zero total length: a TSO super-frame captured before segmentation.
        total = ip.len or len(bytes(ip))
        sent = total - ip.ihl * 4 - tcp.dataofs * 4
        ip_bytes = bytes(ip)[:total]
    else:
        sent = ip.plen - (len(bytes(ip.payload)) - len(bytes(tcp))) - tcp.dataofs * 4
        ip_bytes = bytes(ip)[:40 + ip.plen]
    payload = payload[:max(sent, 0)]
    segment = Segment(number, time, tcp.seq, tcp.ack if tcp.flags & _ACK else None,
                      int(tcp.flags), payload, ip_bytes, snapped=len(payload) < sent)
    src = (str(ipaddress.ip_address(ip.src)), tcp.sport)
    dst = (str(ipaddress.ip_address(ip.dst)), tcp.dport)
    return (4 if isinstance(ip, IP) else 6), src, dst, segment


def _frames(path, data):
    """``(packet number, link type, frame bytes, time)`` for every packet, via Scapy."""
    with RawPcapReader(io.BytesIO(data)) as reader:
        pcap_linktype = getattr(reader, "linktype", None)
        for number, (frame, meta) in enumerate(reader, 1):
            linktype = getattr(meta, "linktype", pcap_linktype)
            if hasattr(meta, "sec"):
                time = meta.sec + meta.usec / 1e6
            else:
                time = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
            yield number, linktype, frame, time


def read_capture(path, progress=None):
    """Read a capture file: connections with reassembled directions, and DSB key logs.

    Parameters
    ----------
    path : str or Path
    progress : callable, optional
        Called as ``progress(done, total)`` while packets are decoded.

    Returns
    -------
    Capture

    Raises
    ------
    CaptureError
        The file is not a pcap/pcapng capture, or is corrupt or truncated
        (the message names the file, the byte offset and the packet).
    """
    path = str(path)
    try:
        data = _load(path)
    except OSError as error:
        raise CaptureError(f"{path}: {error.strerror or error}") from None
    capture = Capture(path)
    if data[:4] in _PCAP_MAGICS:
        capture.packets = _walk_pcap(path, data)
    elif data[:4] == _PCAPNG_SHB:
        capture.packets, capture.keylogs = _walk_pcapng(path, data)
    else:
        raise CaptureError(f"{path}: not a pcap or pcapng file (first bytes {data[:4].hex()})")

    by_tuple = {}           # (src, dst) -> (Connection, side)
    scapy_log = logging.getLogger("scapy.runtime")
    level, scapy_log.level = scapy_log.level, logging.ERROR   # DSB warnings: handled here
    try:
        for number, linktype, frame, time in _frames(path, data):
            if progress is not None:
                progress(number, capture.packets)
            parsed = _tcp_segment(number, linktype, frame, time, capture.skipped)
            if parsed is None:
                continue
            ip_version, src, dst, seg = parsed
            known = by_tuple.get((src, dst))
            opens = seg.flags & _SYN and not seg.flags & _ACK
            if known is not None and opens and known[0].syn_seen and known[1] == "client" \
                    and known[0].client.isn not in (None, seg.seq):
                known = None            # a new connection reusing the ports
            if known is None:
                conn = Connection(len(capture.connections), Direction(src, dst), Direction(dst, src),
                                  ip_version)
                # The first packet's sender is the client unless it is a SYN-ACK.
                if seg.flags & _SYN and seg.flags & _ACK:
                    conn.swap()
                capture.connections.append(conn)
                side = "client" if conn.client.src == src else "server"
                by_tuple[(src, dst)] = (conn, side)
                by_tuple[(dst, src)] = (conn, "server" if side == "client" else "client")
                known = (conn, side)
            conn, side = known
            direction = conn.direction(side)
            if seg.flags & _SYN:
                conn.syn_seen = True
                direction.isn = seg.seq if direction.isn is None else direction.isn
            direction.segments.append(seg)
            conn.order.append((side, seg))
    finally:
        scapy_log.level = level
    for conn in capture.connections:
        conn.client._reassemble()
        conn.server._reassemble()
    return capture
