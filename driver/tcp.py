"""A small TCP sender: the part of ``tcp_output`` the kTLS transmit path sits under.

It keeps ``snd_una`` / ``snd_nxt`` / ``snd_max`` (mod 2**32), a send buffer
of framed records (the seq -> record map, held until ACKed, like Linux's
record list and FreeBSD's socket buffer of ``M_EXTPG`` mbufs), cuts it into
MSS-sized segments that never mix records of different sessions (FreeBSD
``tcp_m_copym`` with ``hw_tls``), and builds the frames with Scapy, as a
kernel would, leaving the checksums to the card. Retransmission happens when
the caller asks for it (there are no timers here).
"""

import dataclasses

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

__all__ = ["SEQ_MASK", "seq_add", "seq_sub", "seq_lt", "seq_leq", "TcpFlow", "TcpSegment",
           "TcpSender"]

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

    # --- the send buffer -----------------------------------------------------------

    def append(self, data, record=None):
        """Queue bytes (a record's framed or sealed bytes) at ``write_seq``."""
        entry = _BufferEntry(self.write_seq, record, bytes(data))
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

    def ack(self, seq):
        """Cumulative ACK up to ``seq``: entries wholly below it are released."""
        if seq_lt(self.snd_una, seq) and seq_leq(seq, self.snd_max):
            self.snd_una = seq
            if seq_lt(self.snd_nxt, seq):
                self.snd_nxt = seq
        while self.entries and seq_leq(self.entries[0].end, self.snd_una):
            self.entries.pop(0)
        self._hint = 0

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

    def new_segments(self):
        """``tcp_output`` for new data: ``[snd_nxt, write_seq)``, advancing snd_nxt/snd_max."""
        segs = self.segments(self.snd_nxt, self.write_seq, is_rxt=False)
        for seg in segs:
            self._account(seg)
        return segs

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
                  flags=flags if payload else "A", window=65535, chksum=0)
        packet = Ether(src=f.src_mac, dst=f.dst_mac) / l3 / tcp
        if payload:
            packet = packet / Raw(bytes(payload))
        return bytes(packet)
