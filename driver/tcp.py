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
