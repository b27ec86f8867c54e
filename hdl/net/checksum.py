"""Streaming IPv4 header and TCP/UDP checksums: TX offload and RX verification.

Frames pass straight through (``i`` to ``o``); a copy of each word goes into a
short delay FIFO so the accumulators can start once the header window has been
parsed (four words in). The accumulators then run one word per clock, four
words behind the input, and hand their sums to a result stage at each frame
end, so back-to-back frames cost no bubbles.

Three one's-complement sums run side by side, each over a byte range:
the IPv4 header, the L4 segment, and the pseudo-header addresses. All ranges
start at even offsets, so 16-bit lanes of a word never straddle a range start;
an odd range end just masks the low byte of a lane. In TX mode the checksum
fields themselves are summed as zero (the host may leave anything there).
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tlsnic.abi import CsumStatus, L3Proto, L4Proto
from .frame import FrameWord, WORD_BYTES, header_window, keep_count
from .parse import HeaderInfo, WINDOW_WORDS, parse_window

__all__ = ["ChecksumResult", "ChecksumEngine"]

TCP_MIN, UDP_MIN = 20, 8
TCP_FIELD, UDP_FIELD = 16, 6
IP_FIELD = 10


class ChecksumResult(data.Struct):
    """Per-frame result, in frame order."""
    length:   16            #: frame bytes
    l3_proto: L3Proto
    l4_proto: L4Proto
    ip_csum:  CsumStatus    #: RX verdict
    l4_csum:  CsumStatus
    ip_ok:    1             #: TX: the IPv4 header may be patched
    l4_ok:    1             #: TX: the L4 checksum may be patched
    ip_field: 7             #: byte offset of the IPv4 checksum field
    l4_field: 7             #: byte offset of the TCP/UDP checksum field
    ip_value: 16            #: TX: checksum to write there
    l4_value: 16


def _fold(m, value):
    """Fold a wide one's-complement sum into 16 bits (two end-around carries
    are enough for sums below 2**32)."""
    once = Signal(18)
    twice = Signal(16)
    m.d.comb += [
        once.eq(value[:16] + value[16:32] + value[32:]),
        twice.eq(once[:16] + once[16:]),
    ]
    return twice


class ChecksumEngine(wiring.Component):
    """Checksums of a frame stream.

    Parameters
    ----------
    tx : bool
        Offload mode: checksum fields count as zero and ``*_value`` is what to
        write. Otherwise verification mode: ``*_csum`` hold the verdicts.

    Members
    -------
    i : In(stream.Signature(FrameWord))
    o : Out(stream.Signature(FrameWord))
        The same frames, unchanged.
    result : Out(stream.Signature(ChecksumResult))
        One per frame, after its last word has passed.
    """
    def __init__(self, *, tx):
        self.tx = tx
        super().__init__({
            "i": In(stream.Signature(FrameWord)),
            "o": Out(stream.Signature(FrameWord)),
            "result": Out(stream.Signature(ChecksumResult)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.delay = delay = SyncFIFOBuffered(width=len(Signal(FrameWord).as_value()), depth=8)
        m.submodules.infos = infos = SyncFIFOBuffered(width=HeaderInfo.as_shape().size, depth=2)

        # ---- input side: pass through, capture the header window, parse ----
        in_index = Signal(range(WINDOW_WORDS + 1))   # saturates: only the window matters
        window = Signal(WINDOW_WORDS * 64)
        parsed = Signal()                            # this frame's info is queued

        word = self.i.payload
        window_now = header_window(m, word, in_index, window)
        info_now = parse_window(m, window_now)
        parse_now = ~parsed & ((in_index == WINDOW_WORDS - 1) | word.last)

        can_take = delay.w_rdy & (infos.w_rdy | ~parse_now)
        m.d.comb += [
            self.o.payload.eq(word),
            self.o.valid.eq(self.i.valid & can_take),
            self.i.ready.eq(self.o.ready & can_take),
        ]
        take = self.i.valid & self.i.ready
        m.d.comb += [
            delay.w_data.eq(word),
            delay.w_en.eq(take),
            infos.w_data.eq(info_now),
            infos.w_en.eq(take & parse_now),
        ]
        with m.If(take):
            m.d.sync += window.eq(window_now)
            with m.If(parse_now):
                m.d.sync += parsed.eq(1)
            with m.If(word.last):
                m.d.sync += [in_index.eq(0), parsed.eq(0)]
            with m.Elif(in_index != WINDOW_WORDS):
                m.d.sync += in_index.eq(in_index + 1)

        # ---- accumulate, four words behind ----
        info = Signal(HeaderInfo)
        m.d.comb += info.eq(infos.r_data)
        dword = Signal(FrameWord)
        m.d.comb += dword.eq(delay.r_data)

        position = Signal(16)       # byte offset of the word being accumulated
        ip_sum = Signal(32)
        l4_sum = Signal(32)
        pseudo_sum = Signal(32)
        udp_field = Signal(16)      # the UDP checksum as sent (0 = none, over IPv4)

        l4_field = Mux(info.l4_proto == L4Proto.UDP, info.l4 + UDP_FIELD, info.l4 + TCP_FIELD)
        ip_field = info.l3 + IP_FIELD
        lane_sums = {}
        for name in ("ip", "l4", "pseudo"):
            lane_sums[name] = []
        for lane in range(WORD_BYTES // 2):
            bytes_ = {}
            for half in range(2):
                b = 2 * lane + half
                pos = position + b
                value = dword.data.word_select(b, 8) & dword.keep[b].replicate(8)
                if self.tx:
                    # The host may leave anything in the checksum fields.
                    in_ip_field = (pos >= ip_field) & (pos < ip_field + 2)
                    in_l4_field = (pos >= l4_field) & (pos < l4_field + 2)
                else:
                    in_ip_field = in_l4_field = C(0)
                bytes_[half] = {
                    "ip": Mux((pos >= info.l3) & (pos < info.ip_end) & ~in_ip_field, value, 0),
                    "l4": Mux((pos >= info.l4) & (pos < info.l4_end) & ~in_l4_field, value, 0),
                    "pseudo": Mux((pos >= info.pseudo_start) & (pos < info.pseudo_end), value, 0),
                }
            for name in lane_sums:
                lane_sums[name].append(Cat(bytes_[1][name], bytes_[0][name]))

        frame_len = position + keep_count(dword.keep)
        handoff = Signal()
        result_free = ~self.result.valid | self.result.ready
        accumulate = infos.r_rdy & delay.r_rdy & (~dword.last | result_free)
        m.d.comb += [
            delay.r_en.eq(accumulate),
            infos.r_en.eq(accumulate & dword.last),
            handoff.eq(accumulate & dword.last),
        ]
        new_sums = {
            "ip": ip_sum + sum(lane_sums["ip"]),
            "l4": l4_sum + sum(lane_sums["l4"]),
            "pseudo": pseudo_sum + sum(lane_sums["pseudo"]),
        }
        with m.If(accumulate):
            m.d.sync += [position.eq(position + WORD_BYTES),
                         ip_sum.eq(new_sums["ip"]), l4_sum.eq(new_sums["l4"]),
                         pseudo_sum.eq(new_sums["pseudo"])]
            with m.If((position >> 3) == (l4_field >> 3)):
                m.d.sync += udp_field.eq(Cat(dword.data.word_select(l4_field[:3] + 1, 8),
                                             dword.data.word_select(l4_field[:3], 8)))
            with m.If(dword.last):
                m.d.sync += [position.eq(0), ip_sum.eq(0), l4_sum.eq(0), pseudo_sum.eq(0)]

        # ---- result stage: sums of the frame that just ended ----
        r_info = Signal(HeaderInfo)
        r_len = Signal(16)
        r_ip = Signal(32)
        r_l4 = Signal(32)
        r_udp_field = Signal(16)
        with m.If(self.result.valid & self.result.ready):
            m.d.sync += self.result.valid.eq(0)
        with m.If(handoff):
            m.d.sync += [
                self.result.valid.eq(1), r_info.eq(info), r_len.eq(frame_len),
                r_ip.eq(new_sums["ip"]),
                r_l4.eq(new_sums["l4"] + new_sums["pseudo"] + info.proto
                        + (info.l4_end - info.l4)[:16]),
            ]
            # The field may sit in this very word.
            with m.If((position >> 3) == (l4_field >> 3)):
                m.d.sync += r_udp_field.eq(Cat(dword.data.word_select(l4_field[:3] + 1, 8),
                                               dword.data.word_select(l4_field[:3], 8)))
            with m.Else():
                m.d.sync += r_udp_field.eq(udp_field)

        res = self.result.payload
        ip_folded = _fold(m, r_ip)
        l4_folded = _fold(m, r_l4)
        header_fits = r_len >= r_info.l3_min
        l4_min = Mux(r_info.l4_proto == L4Proto.UDP, UDP_MIN, TCP_MIN)
        segment_ok = (header_fits & (r_info.l4_end <= r_len)
                      & (r_info.l4_end >= r_info.l4 + l4_min))
        is_ip4 = r_info.l3_proto == L3Proto.IPV4
        is_ip6 = (r_info.l3_proto == L3Proto.IPV6) & header_fits
        # An IPv4 header cut short locates no segment at all (``tlsnic.abi``).
        has_l4 = (r_info.l4_proto != L4Proto.OTHER) & ((is_ip4 & header_fits) | is_ip6)
        udp_none = (r_info.l4_proto == L4Proto.UDP) & (r_udp_field == 0)
        m.d.comb += [
            res.length.eq(r_len),
            res.l3_proto.eq(Mux(is_ip4 | is_ip6, r_info.l3_proto, L3Proto.OTHER)),
            res.l4_proto.eq(Mux(has_l4, r_info.l4_proto, L4Proto.OTHER)),
            res.ip_field.eq(r_info.l3 + IP_FIELD),
            res.l4_field.eq(Mux(r_info.l4_proto == L4Proto.UDP, r_info.l4 + UDP_FIELD,
                                r_info.l4 + TCP_FIELD)),
            res.ip_ok.eq(is_ip4 & header_fits),
            res.l4_ok.eq(has_l4 & segment_ok),
            res.ip_value.eq(~ip_folded),
            # UDP sends an all-zero result as 0xFFFF (zero means "no checksum").
            res.l4_value.eq(Mux((r_info.l4_proto == L4Proto.UDP) & (l4_folded == 0xFFFF),
                                0xFFFF, ~l4_folded)),
        ]
        with m.If(is_ip4):
            m.d.comb += res.ip_csum.eq(Mux(header_fits & (ip_folded == 0xFFFF),
                                           CsumStatus.GOOD, CsumStatus.BAD))
        with m.If(has_l4):
            with m.If(~segment_ok):
                m.d.comb += res.l4_csum.eq(CsumStatus.BAD)
            with m.Elif(udp_none):
                m.d.comb += res.l4_csum.eq(Mux(is_ip4, CsumStatus.NONE, CsumStatus.BAD))
            with m.Elif(l4_folded == 0xFFFF):
                m.d.comb += res.l4_csum.eq(CsumStatus.GOOD)
            with m.Else():
                m.d.comb += res.l4_csum.eq(CsumStatus.BAD)
        return m
