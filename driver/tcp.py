"""A small TCP sender and receiver: the parts of TCP the kTLS paths sit under.

:class:`TcpReceiver` is the receive side (``tcp_reass`` and the socket
buffer): it puts segments back in order and keeps, per byte, whether the
card decrypted it, for the kTLS receive path (:mod:`.ktls_rx`).
:func:`parse_segment` finds the TCP segment in a received frame.

:class:`TcpSender` keeps ``snd_una`` / ``snd_nxt`` / ``snd_max`` (mod 2**32), a send buffer
of framed records (the seq -> record map, held until ACKed, like Linux's
record list and FreeBSD's socket buffer of ``M_EXTPG`` mbufs), cuts it into
MSS-sized segments that never mix records of different sessions (FreeBSD
``tcp_m_copym`` with ``hw_tls``), and builds the frames with Scapy, as a
kernel would, leaving the checksums to the card. Retransmission happens when
the caller asks for it (there are no timers here).
"""

import dataclasses
import ipaddress

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

__all__ = ["SEQ_MASK", "seq_add", "seq_sub", "seq_lt", "seq_leq", "TcpFlow", "TcpSegment",
           "TcpSender", "TcpReceiver", "RX_DECRYPTED", "RX_AUTH_FAIL", "ParsedSegment",
           "parse_segment"]

SEQ_MASK = 0xFFFF_FFFF


def seq_add(seq, n):
    return (seq + n) & SEQ_MASK


def seq_sub(a, b):
    """``a - b`` as a signed distance (RFC 1982 serial arithmetic)."""
    d = (a - b) & SEQ_MASK
    return d - (1 << 32) if d & (1 << 31) else d


def seq_lt(a, b):
    return seq_sub(a, b) < 0


def seq_leq(a, b):
    return seq_sub(a, b) <= 0


@dataclasses.dataclass(frozen=True)
class TcpFlow:
    """One connection as the host sees it (``inp`` addresses and ports)."""
    src_addr: str = "192.0.2.1"
    dst_addr: str = "198.51.100.2"
    src_port: int = 49152
    dst_port: int = 443
    ip_version: int = 4
    src_mac: str = "02:00:00:00:00:01"
    dst_mac: str = "02:00:00:00:00:02"


@dataclasses.dataclass(frozen=True)
class TcpSegment:
    """One segment to send: ``[seq, seq + len(payload))`` and where it comes from."""
    seq: int
    payload: bytes
    session: object          # the session of every record in it (None: plain data)
    is_rxt: bool


@dataclasses.dataclass
class _BufferEntry:
    seq: int
    record: object           # TlsRecord, or None for plain bytes
    data: bytes              # what TCP sends: framed (ifnet) or sealed (sw) bytes
    ready: bool = True       # False: M_NOTREADY, still in the software crypto queue

    @property
    def end(self):
        return seq_add(self.seq, len(self.data))


class TcpSender:
    """The send side of one connection.

    Parameters
    ----------
    flow : TcpFlow
    iss : int
        Initial send sequence number: the first data byte is at ``iss``.
    mss : int
        Maximum segment size (payload bytes per segment).
    rcv_nxt : int
        Acknowledgment number the frames carry.

    Attributes
    ----------
    t_sndbytes, t_snd_rxt_bytes : int
        Bytes sent for the first time / retransmitted (FreeBSD ``tcpcb``).
    """

    def __init__(self, flow, iss=0, mss=1448, rcv_nxt=1):
        self.flow = flow
        self.mss = mss
        self.rcv_nxt = rcv_nxt
        self.snd_una = self.snd_nxt = self.snd_max = iss & SEQ_MASK
        self.write_seq = iss & SEQ_MASK
        self.entries = []           # _BufferEntry, in sequence order, unacked
        self._hint = 0              # tls_get_record's retransmit hint: an index into entries
        self.t_sndbytes = 0
        self.t_snd_rxt_bytes = 0
        self.ip_id = 1
        #: Congestion window in bytes; None = unlimited (the tests drive loss
        #: by hand). ``tcp_output`` sets it to one MSS on ENOBUFS.
        self.snd_cwnd = None
        self.fin_sent = False

    # --- the send buffer -----------------------------------------------------------

    def append(self, data, record=None, ready=True):
        """Queue bytes (a record's framed or sealed bytes) at ``write_seq``.

        ``ready=False`` appends them M_NOTREADY (FreeBSD ``sbappend`` of
        records still queued for software encryption): nothing from that
        entry on is sent until :meth:`mark_ready`.
        """
        if self.fin_sent:
            raise ValueError("append after FIN")
        entry = _BufferEntry(self.write_seq, record, bytes(data), ready)
        self.entries.append(entry)
        self.write_seq = entry.end
        return entry

    def get_record(self, seq):
        """``(record start seq, record)`` of the buffer entry holding ``seq`` (``tls_get_record``).

        Starts from the hint of the previous lookup, since retransmits walk
        forward through the same records.
        """
        if not self.entries:
            raise KeyError(f"seq {seq:#x}: nothing unacked")
        order = list(range(self._hint, len(self.entries))) + list(range(self._hint))
        for i in order:
            entry = self.entries[i]
            if 0 <= seq_sub(seq, entry.seq) < len(entry.data):
                self._hint = i
                return entry.seq, entry.record
        raise KeyError(f"seq {seq:#x} is not in the send buffer")

    def entry_at(self, seq):
        self.get_record(seq)
        return self.entries[self._hint]

    def bytes_at(self, seq, length):
        """``length`` bytes of the send buffer from ``seq`` (they may span entries)."""
        out = bytearray()
        while length > 0:
            entry = self.entry_at(seq)
            start = seq_sub(seq, entry.seq)
            chunk = entry.data[start:start + length]
            out += chunk
            length -= len(chunk)
            seq = seq_add(seq, len(chunk))
        return bytes(out)

    def mark_ready(self, entry, data):
        """``sbready``: the entry's bytes (now sealed) may be sent."""
        assert len(data) == len(entry.data), "sealing keeps the record length"
        entry.data = bytes(data)
        entry.ready = True

    def ack(self, seq):
        """Cumulative ACK up to ``seq``: entries wholly below it are released.

        Returns the released entries (their records' session references are
        dropped by the caller: FreeBSD ``sbdrop`` frees the ``M_EXTPG`` mbufs).
        In slow start the window grows by the bytes acked.
        """
        released = []
        if seq_lt(self.snd_una, seq) and seq_leq(seq, self.snd_max):
            if self.snd_cwnd is not None:
                self.snd_cwnd += seq_sub(seq, self.snd_una)
            self.snd_una = seq
            if seq_lt(self.snd_nxt, seq):
                self.snd_nxt = seq
        while self.entries and seq_leq(self.entries[0].end, self.snd_una):
            released.append(self.entries.pop(0))
        self._hint = 0
        return released

    # --- segmentation --------------------------------------------------------------

    def _session_of(self, entry):
        return entry.record.session if entry.record is not None else None

    def segments(self, seq, end, is_rxt):
        """Cut ``[seq, end)`` into segments of at most MSS bytes that do not mix sessions."""
        out = []
        while seq_lt(seq, end):
            entry = self.entry_at(seq)
            session = self._session_of(entry)
            limit = min(self.mss, seq_sub(end, seq))
            taken, cursor = 0, seq
            while taken < limit:
                entry = self.entry_at(cursor)
                if self._session_of(entry) is not session:
                    break
                n = min(limit - taken, seq_sub(entry.end, cursor))
                taken += n
                cursor = seq_add(cursor, n)
            out.append(TcpSegment(seq, self.bytes_at(seq, taken), session, is_rxt))
            seq = cursor
        return out

    def send_limit(self):
        """Where ``tcp_output`` must stop: the first M_NOTREADY byte, then the window."""
        end = self.write_seq
        for entry in self.entries:
            if not entry.ready:
                end = entry.seq
                break
        if self.snd_cwnd is not None:
            cap = seq_add(self.snd_una, self.snd_cwnd)
            if seq_lt(cap, end):
                end = cap
        return end

    def new_segments(self):
        """``tcp_output``: ``[snd_nxt, send_limit)``, advancing snd_nxt/snd_max.

        After a timeout moved ``snd_nxt`` back, the part below ``snd_max``
        goes out as retransmits (``is_rxt``: ``snd_nxt != snd_max``).
        """
        end = self.send_limit()
        segs = []
        if seq_lt(self.snd_nxt, self.snd_max) and seq_lt(self.snd_nxt, end):
            mid = self.snd_max if seq_lt(self.snd_max, end) else end
            for seg in self.segments(self.snd_nxt, mid, is_rxt=True):
                self._account(seg)
                segs.append(seg)
        if seq_lt(self.snd_nxt, end):
            for seg in self.segments(self.snd_nxt, end, is_rxt=False):
                self._account(seg)
                segs.append(seg)
        return segs

    def rollback(self, segs):
        """``tcp_output``'s error path: ``segs`` did not leave (``snd_nxt -= len``).

        Their bytes are taken out of the send accounting, so nothing counts
        as sent that was not; new data also takes ``snd_max`` back.
        """
        if not segs:
            return
        for seg in segs:
            if seg.is_rxt:
                self.t_snd_rxt_bytes -= len(seg.payload)
            else:
                self.t_sndbytes -= len(seg.payload)
        self.snd_nxt = segs[0].seq
        new = [seg for seg in segs if not seg.is_rxt]
        if new:
            self.snd_max = new[0].seq

    def timeout(self):
        """``tcp_timer_rexmt``: go back to ``snd_una`` with a window of one MSS."""
        self.snd_nxt = self.snd_una
        self.snd_cwnd = self.mss

    def rexmit_segments(self, seq=None, length=None):
        """Segments retransmitting ``[seq, seq + length)`` (default: one MSS from snd_una).

        Like a timeout or fast retransmit, ``snd_nxt`` goes back to ``seq``
        and forward again as the segments are sent.
        """
        seq = self.snd_una if seq is None else seq & SEQ_MASK
        length = self.mss if length is None else length
        length = max(0, min(length, seq_sub(self.snd_max, seq)))   # nothing past snd_max
        self.snd_nxt = seq
        segs = self.segments(seq, seq_add(seq, length), is_rxt=True)
        for seg in segs:
            self._account(seg)
        return segs

    def _account(self, seg):
        end = seq_add(seg.seq, len(seg.payload))
        if seg.is_rxt:
            self.t_snd_rxt_bytes += len(seg.payload)
        else:
            self.t_sndbytes += len(seg.payload)
        self.snd_nxt = end
        if seq_lt(self.snd_max, end):
            self.snd_max = end

    def fin_segment(self):
        """The FIN's seq, once every byte was sent (FIN takes one seq after ``write_seq``)."""
        self.fin_sent = True
        end = seq_add(self.write_seq, 1)
        if seq_lt(self.snd_max, end):
            self.snd_max = end
        self.snd_nxt = end
        return self.write_seq

    # --- frames --------------------------------------------------------------------

    def build_frame(self, seq, payload=b"", flags="PA"):
        """The Ethernet frame of one segment; checksums are left to the card (zero)."""
        f = self.flow
        if f.ip_version == 4:
            l3 = IP(src=f.src_addr, dst=f.dst_addr, id=self.ip_id, ttl=64, flags="DF", chksum=0)
        else:
            l3 = IPv6(src=f.src_addr, dst=f.dst_addr, hlim=64)
        self.ip_id = (self.ip_id + 1) & 0xFFFF
        tcp = TCP(sport=f.src_port, dport=f.dst_port, seq=seq & SEQ_MASK, ack=self.rcv_nxt,
                  flags=flags if payload or "F" in flags else "A", window=65535, chksum=0)
        packet = Ether(src=f.src_mac, dst=f.dst_mac) / l3 / tcp
        if payload:
            packet = packet / Raw(bytes(payload))
        return bytes(packet)


# --- receive -------------------------------------------------------------------

#: Per-byte flags a :class:`TcpReceiver` keeps with the data (FreeBSD keeps
#: them per mbuf: ``M_DECRYPTED``, and ``sbcompress_ktls_rx`` never merges
#: mbufs whose flag differs, so the TLS layer can tell byte by byte).
RX_DECRYPTED = 0x01
#: The byte came in a frame whose completion said ``auth_fail``: a record
#: whose tag ends in such a frame failed the card's tag check.
RX_AUTH_FAIL = 0x02


@dataclasses.dataclass
class _OooSegment:
    start: int               # absolute stream offset (0 = the first byte after irs)
    data: bytearray
    flags: bytearray

    @property
    def end(self):
        return self.start + len(self.data)


class TcpReceiver:
    """The receive side of one direction of a TCP connection (``tcp_reass`` + ``sbappend``).

    Segments come in any order, duplicated or overlapping; bytes are handed
    on once, in order, each with its flags from the copy that arrived first.
    First copy wins, as in FreeBSD's ``tcp_reass`` (a later overlapping
    segment is trimmed to what is missing) and Linux's out-of-order queue:
    a retransmission can never replace bytes already queued, so the
    decrypted/encrypted state of a byte is the state of the bytes kept.

    Internally positions are absolute stream offsets from ``irs`` (Python
    ints never wrap); sequence numbers are mapped onto them relative to
    ``rcv_nxt``, so a stream may cross the 32-bit wrap any number of times.

    Parameters
    ----------
    irs : int
        Sequence number of the first data byte expected (``rcv_nxt`` at start).
    window : int
        Segments more than this far past ``rcv_nxt`` are dropped (out of window).

    Attributes
    ----------
    delivered : int
        Absolute offset of ``rcv_nxt``: bytes handed on so far.
    fin_at : int or None
        Absolute offset of the peer's FIN, once seen.
    reset : bool
        The peer sent an acceptable RST.
    stats : dict[str, int]
        ``segments``, ``duplicate_bytes`` (already delivered or queued),
        ``ooo_segments`` (queued out of order), ``out_of_window``.
    """

    def __init__(self, irs, window=1 << 30):
        self.irs = irs & SEQ_MASK
        self.window = window
        self.delivered = 0
        self.fin_at = None
        self.reset = False
        self._queue = []              # _OooSegment, sorted, non-overlapping, all > delivered
        self.stats = dict.fromkeys(("segments", "duplicate_bytes", "ooo_segments",
                                    "out_of_window"), 0)

    @property
    def rcv_nxt(self):
        return seq_add(self.irs, self.delivered)

    def offset_of(self, seq):
        """Absolute stream offset of sequence number ``seq`` (nearest to ``rcv_nxt``)."""
        return self.delivered + seq_sub(seq, self.rcv_nxt)

    def seq_of(self, offset):
        """Sequence number of absolute stream offset ``offset``."""
        return seq_add(self.irs, offset)

    @property
    def eof(self):
        """Every byte up to the peer's FIN has been handed on."""
        return self.fin_at is not None and self.delivered >= self.fin_at

    @property
    def queued(self):
        """Bytes held out of order, waiting for a hole before them to fill."""
        return sum(len(s.data) for s in self._queue)

    def segment(self, seq, payload, flags=None, fin=False, rst=False):
        """Take one segment; return the bytes now in order as ``(offset, data, flags)`` chunks.

        ``flags`` holds one :data:`RX_DECRYPTED` / :data:`RX_AUTH_FAIL` byte
        per payload byte (default all 0). A RST in the window
        (``[rcv_nxt, rcv_nxt + window)``) marks the connection reset; any
        data or FIN after that is ignored.
        """
        if self.reset:
            return []
        self.stats["segments"] += 1
        start = self.offset_of(seq)
        if rst:
            if 0 <= start - self.delivered < self.window:
                self.reset = True
            return []
        payload = bytes(payload)
        flags = bytearray(len(payload)) if flags is None else bytearray(flags)
        end = start + len(payload)
        if start - self.delivered >= self.window:
            self.stats["out_of_window"] += 1
            return []
        if fin and self.fin_at is None:
            self.fin_at = end
        if start < self.delivered:          # the part already handed on is a duplicate
            cut = min(self.delivered - start, len(payload))
            self.stats["duplicate_bytes"] += cut
            payload, flags, start = payload[cut:], flags[cut:], start + cut
        if payload:
            self._insert(start, payload, flags)
        return self._pull()

    def _insert(self, start, payload, flags):
        """Queue the parts of ``[start, start + len)`` no queued segment holds yet."""
        end = start + len(payload)
        pieces, cursor = [], start
        for held in self._queue:
            if held.end <= cursor:
                continue
            if held.start >= end:
                break
            if held.start > cursor:
                pieces.append((cursor, held.start))
            self.stats["duplicate_bytes"] += min(end, held.end) - max(cursor, held.start)
            cursor = max(cursor, held.end)
        if cursor < end:
            pieces.append((cursor, end))
        for a, b in pieces:
            self._queue.append(_OooSegment(a, bytearray(payload[a - start:b - start]),
                                           bytearray(flags[a - start:b - start])))
        if pieces and pieces[0][0] != self.delivered:
            self.stats["ooo_segments"] += 1
        self._queue.sort(key=lambda s: s.start)

    def _pull(self):
        out = []
        while self._queue and self._queue[0].start == self.delivered:
            held = self._queue.pop(0)
            out.append((held.start, bytes(held.data), bytes(held.flags)))
            self.delivered = held.end
        return out


@dataclasses.dataclass(frozen=True)
class ParsedSegment:
    """The TCP segment of a received frame (see :func:`parse_segment`)."""
    ip_version: int
    src_addr: str
    dst_addr: str
    src_port: int
    dst_port: int
    seq: int
    flags: int               # the TCP flag bits (FIN 0x01, SYN 0x02, RST 0x04, ...)
    payload_offset: int      # where the payload starts in the frame
    payload_length: int

    @property
    def fin(self):
        return bool(self.flags & 0x01)

    @property
    def rst(self):
        return bool(self.flags & 0x04)


def parse_segment(frame):
    """The :class:`ParsedSegment` of an Ethernet frame, or None if it is no whole TCP segment.

    What a driver's receive path looks at (one 802.1Q tag skipped; IPv4
    unfragmented, IPv6 without extension headers, as the card parses).
    Checksums are the card's business: the completion says whether they held.
    """
    frame = bytes(frame)
    l3 = 14
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x8100:
        ethertype, l3 = int.from_bytes(frame[16:18], "big"), 18
    if ethertype == 0x0800 and len(frame) >= l3 + 20 and frame[l3] >> 4 == 4:
        ihl = (frame[l3] & 0xF) * 4
        total = int.from_bytes(frame[l3 + 2:l3 + 4], "big")
        if frame[l3 + 9] != 6 or int.from_bytes(frame[l3 + 6:l3 + 8], "big") & 0x3FFF:
            return None
        version, src, dst, l4, l4_end = 4, frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20], \
            l3 + ihl, l3 + total
    elif ethertype == 0x86DD and len(frame) >= l3 + 40 and frame[l3] >> 4 == 6:
        if frame[l3 + 6] != 6:
            return None
        version, src, dst, l4 = 6, frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40], l3 + 40
        l4_end = l4 + int.from_bytes(frame[l3 + 4:l3 + 6], "big")
    else:
        return None
    if l4_end > len(frame) or l4_end - l4 < 20:
        return None
    data_offset = (frame[l4 + 12] >> 4) * 4
    if not 20 <= data_offset <= l4_end - l4:
        return None
    return ParsedSegment(
        version, str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)),
        int.from_bytes(frame[l4:l4 + 2], "big"), int.from_bytes(frame[l4 + 2:l4 + 4], "big"),
        int.from_bytes(frame[l4 + 4:l4 + 8], "big"), frame[l4 + 13],
        l4 + data_offset, l4_end - l4 - data_offset)
