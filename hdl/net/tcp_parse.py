"""TCP segment parsing for the TLS engines: flow, sequence number, payload span.

The TLS engines need more of a frame than the checksum rules do: the 4-tuple
(to check a segment belongs to its context's flow), the sequence number, and
where the TCP payload starts and ends. All of it lies in the first 96 bytes
(Ethernet + one VLAN tag: 18, IPv4 with options: 60, TCP up to the data
offset byte: 13 -> 91), so the parser captures a 96-byte window (twelve
datapath words, bytes past the frame end read as zero, as in
:mod:`.parse`) and decodes it once, when the window is full or the frame ends.

Only the TCP fields sit at a variable offset (after IPv4 options); the rest
has two candidate positions (with and without the VLAN tag). The offsets use
the same rules as :mod:`.parse` (``tlsnic.abi``, "Header parsing"), so a frame
the checksum engine calls TCP is a frame this parser calls TCP.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .frame import FrameWord, header_window

__all__ = ["TCP_WINDOW_WORDS", "TcpInfo", "TcpParser"]

TCP_WINDOW_WORDS = 12
ETH_IPV4, ETH_IPV6, ETH_VLAN = 0x0800, 0x86DD, 0x8100
PROTO_TCP = 6


class TcpInfo(data.Struct):
    """One TCP segment's facts (``is_tcp`` = 0: not a TCP segment the engines can use)."""
    is_tcp:        1
    ipv6:          1
    src_addr:      128      #: address bytes in wire order; IPv4 in bytes 0..3
    dst_addr:      128
    src_port:      16
    dst_port:      16
    seq:           32
    payload_start: 8        #: byte offset of the first TCP payload byte (<= 138)
    payload_end:   17       #: one past the last, per the IP length field


def _be(window, offset, nbytes):
    """Big-endian field of ``nbytes`` at byte ``offset`` (constant or variable)."""
    return Cat(*[window.word_select(offset + (nbytes - 1 - i), 8) for i in range(nbytes)])


def _bytes(window, offset, nbytes):
    """``nbytes`` bytes at ``offset`` in wire order (byte 0 in the low bits)."""
    return Cat(*[window.word_select(offset + i, 8) for i in range(nbytes)])


class TcpParser(wiring.Component):
    """Frames pass through unchanged; each frame's :class:`TcpInfo` comes out
    beside them.

    Members
    -------
    i : In(stream.Signature(FrameWord))
    o : Out(stream.Signature(FrameWord))
        The same frames. The word that completes a frame's window (its twelfth,
        or its last if shorter) waits while the previous frame's ``info`` has
        not been taken, so no ``info`` is ever overwritten.
    info : Out(stream.Signature(TcpInfo))
        One beat per frame, from the cycle after the window is complete.
    """
    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(FrameWord)),
            "o": Out(stream.Signature(FrameWord)),
            "info": Out(stream.Signature(TcpInfo)),
        })

    def elaborate(self, platform):
        m = Module()
        word = self.i.payload
        beat = self.i.valid & self.i.ready
        index = Signal(range(TCP_WINDOW_WORDS + 1))
        window = Signal(TCP_WINDOW_WORDS * 64, reset_less=True)
        decoded = Signal()

        window_now = header_window(m, word, index, window)
        with m.If(beat):
            m.d.sync += window.eq(window_now)
            with m.If(word.last):
                m.d.sync += [index.eq(0), decoded.eq(0)]
            with m.Elif(index != TCP_WINDOW_WORDS):
                m.d.sync += index.eq(index + 1)

        w = window_now
        ethertype = _be(w, 12, 2)
        vlan = ethertype == ETH_VLAN
        l3 = Mux(vlan, 18, 14)
        l3_type = Mux(vlan, _be(w, 16, 2), ethertype)

        def at(offset, nbytes, reader=_be):
            return Mux(vlan, reader(w, 18 + offset, nbytes), reader(w, 14 + offset, nbytes))

        version = at(0, 1)[4:8]
        ihl_bytes = Cat(C(0, 2), at(0, 1)[0:4])
        frag = at(6, 2)
        is_v4 = (l3_type == ETH_IPV4) & (version == 4) & (ihl_bytes >= 20)
        is_v6 = (l3_type == ETH_IPV6) & (version == 6)
        v4_tcp = is_v4 & (at(9, 1) == PROTO_TCP) & ~frag[13] & (frag[0:13] == 0)
        v6_tcp = is_v6 & (at(6, 1) == PROTO_TCP)

        l4 = Signal(7)              # <= 18 + 60
        m.d.comb += l4.eq(Mux(is_v6, l3 + 40, l3 + ihl_bytes))
        data_offset = Cat(C(0, 2), _be(w, l4 + 12, 1)[4:8])
        payload_end = Mux(is_v6, l3 + 40 + at(4, 2), l3 + at(2, 2))

        info = Signal(TcpInfo)
        m.d.comb += [
            info.ipv6.eq(is_v6),
            info.src_addr.eq(Mux(is_v6, at(8, 16, _bytes), at(12, 4, _bytes))),
            info.dst_addr.eq(Mux(is_v6, at(24, 16, _bytes), at(16, 4, _bytes))),
            info.src_port.eq(_be(w, l4, 2)),
            info.dst_port.eq(_be(w, l4 + 2, 2)),
            info.seq.eq(_be(w, l4 + 4, 4)),
            info.payload_start.eq(l4 + data_offset),
            info.payload_end.eq(payload_end),
            info.is_tcp.eq((v4_tcp | v6_tcp) & (data_offset >= 20)
                           & (l4 + data_offset <= payload_end)),
        ]

        completes = ~decoded & ((index == TCP_WINDOW_WORDS - 1) | word.last)
        can_pass = ~completes | ~self.info.valid | self.info.ready
        m.d.comb += [
            self.o.payload.eq(word),
            self.o.valid.eq(self.i.valid & can_pass),
            self.i.ready.eq(self.o.ready & can_pass),
        ]
        decode_now = beat & completes
        with m.If(self.info.valid & self.info.ready):
            m.d.sync += self.info.valid.eq(0)
        with m.If(decode_now):
            m.d.sync += [self.info.valid.eq(1), self.info.payload.eq(info)]
            with m.If(~word.last):
                m.d.sync += decoded.eq(1)
        return m
