"""A store-and-forward frame buffer whose writer can take a frame back.

A MAC learns whether a received frame is good only at its end (the FCS), and
whether a frame fits only while writing it. :class:`PacketBuffer` lets the
writer put words in speculatively and then either *commit* the frame (the
reader may now see it) or *drop* it (the write pointer goes back to the last
commit, as if nothing had been written). The reader only ever sees whole,
committed frames, so downstream logic never has to undo anything, and a frame
that starts to stream out is already complete: a transmitter fed from here can
not underrun.

Three pointers into one RAM: ``rd`` (reader), ``commit`` (end of the last
committed frame) and ``wr`` (speculative end). One slot stays empty so that
``wr == rd`` always means empty.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["PacketBuffer"]


class PacketBuffer(wiring.Component):
    """Frame FIFO with commit / drop, in one clock domain (``sync``).

    Parameters
    ----------
    shape : shape-like
        One word (its frame-end flag, if any, is the writer's business).
    depth : int
        Words, a power of two; the largest frame it can ever hold is
        ``depth - 1`` words.

    Members
    -------
    w_data : In(shape)
    w_en : In(1)
        Append ``w_data`` to the open frame. Ignored while ``w_full``.
    w_full : Out(1)
        No room for one more word.
    w_alone : Out(1)
        Nothing committed is waiting for the reader: if the buffer is full now,
        the open frame alone fills it and will never fit (the writer drops it).
    w_commit : In(1)
        Close the open frame; it becomes visible to the reader. Words written
        in the same cycle are included.
    w_drop : In(1)
        Forget the open frame. Takes precedence over ``w_commit``; a word
        written in the same cycle is forgotten too.
    r : Out(stream.Signature(shape))
        Committed words, in order.
    """

    def __init__(self, shape, depth):
        assert depth >= 4 and depth & (depth - 1) == 0, "depth must be a power of two"
        self.depth = depth
        super().__init__({
            "w_data": In(shape), "w_en": In(1), "w_full": Out(1), "w_alone": Out(1),
            "w_commit": In(1), "w_drop": In(1),
            "r": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        aw = (self.depth - 1).bit_length()
        m.submodules.mem = mem = Memory(shape=self.r.payload.shape(), depth=self.depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=())

        wr = Signal(aw)
        commit = Signal(aw)
        rd = Signal(aw)
        # ``wr + 1`` and ``commit + 1`` (mod depth) kept in registers beside
        # them. The MAC writes at 125 MHz: an adder between ``wr`` and the full
        # compare, then another after the write decision, made this the
        # receive clock's deepest path (9 LUT levels; 121 MHz placed on the
        # ECP5-85). (The adder was also one bit wider than the pointers, so
        # ``wr == depth - 1`` never read full and the next write emptied the
        # buffer; tests/test_board_mac.py::test_packet_buffer_against_a_model.)
        wr_inc = Signal(aw, init=1)
        commit_inc = Signal(aw, init=1)
        # ... and ``wr + 2``, ``commit + 2``, ``rd + 1``, for ``w_full`` below.
        wr_inc2 = Signal(aw, init=2)
        commit_inc2 = Signal(aw, init=2)
        rd_inc = Signal(aw, init=1)

        # ``w_full`` is ``wr + 1 == rd`` a clock late, a register. Its next
        # value is one of six compares of registers (where ``wr`` and ``rd``
        # go next: drop, write or neither; read or not), all made in
        # parallel, chosen by the cycle's write, drop and read decisions: so
        # the MAC's end-of-frame decision reaches the register through a
        # select, not through the pointer arithmetic and an 11-bit compare
        # (the receive clock's critical path before: 7.1 ns routed alone,
        # tools/synth_board_pieces.py --route; 118 MHz placed, from the
        # reader's pointer, before ``w_full`` was a register at all).
        full = Signal()
        m.d.comb += [self.w_full.eq(full), self.w_alone.eq(commit == rd)]
        write = self.w_en & ~self.w_full
        wr_next, wr_next_inc, wr_next_inc2 = Signal(aw), Signal(aw), Signal(aw)
        m.d.comb += [
            wp.addr.eq(wr), wp.data.eq(self.w_data), wp.en.eq(write),
            wr_next.eq(Mux(write, wr_inc, wr)),
            wr_next_inc.eq(Mux(write, wr_inc2, wr_inc)),
            wr_next_inc2.eq(Mux(write, wr_inc2 + 1, wr_inc2)),
        ]
        with m.If(self.w_drop):
            m.d.sync += [wr.eq(commit), wr_inc.eq(commit_inc), wr_inc2.eq(commit_inc2)]
        with m.Else():
            m.d.sync += [wr.eq(wr_next), wr_inc.eq(wr_next_inc), wr_inc2.eq(wr_next_inc2)]
            with m.If(self.w_commit):
                m.d.sync += [commit.eq(wr_next), commit_inc.eq(wr_next_inc),
                             commit_inc2.eq(wr_next_inc2)]

        # Read: the RAM's output register is the stream's payload register.
        # ``unread`` is ``rd != commit`` a clock late, a register made the way
        # ``full`` is (compares of where the pointers go, in parallel, chosen
        # by the cycle's decisions), so the RAM's read enable (the EBR's clock
        # enable) is one LUT from flip-flops and the stream's ``ready``: with
        # the 11-bit compare in front of it, it was the routed board's one
        # failing receive path (118.7 MHz, 0.96 ns of logic and 7.47 ns of
        # wire, at 14abc8c).
        unread = Signal()
        advance = unread & (~self.r.valid | self.r.ready)
        commit_moves = self.w_commit & ~self.w_drop
        m.d.comb += [rp.addr.eq(rd), rp.en.eq(advance), self.r.payload.eq(rp.data)]
        m.d.sync += [rd.eq(Mux(advance, rd_inc, rd)), rd_inc.eq(Mux(advance, rd_inc + 1, rd_inc))]
        with m.If(advance):
            m.d.sync += [
                full.eq(Mux(self.w_drop, commit_inc == rd_inc,
                            Mux(write, wr_inc2 == rd_inc, wr_inc == rd_inc))),
                unread.eq(Mux(commit_moves, Mux(write, wr_inc != rd_inc, wr != rd_inc),
                              commit != rd_inc)),
            ]
        with m.Else():
            m.d.sync += [
                full.eq(Mux(self.w_drop, commit_inc == rd,
                            Mux(write, wr_inc2 == rd, wr_inc == rd))),
                unread.eq(Mux(commit_moves, Mux(write, wr_inc != rd, wr != rd), commit != rd)),
            ]
        with m.If(advance):
            m.d.sync += self.r.valid.eq(1)
        with m.Elif(self.r.ready):
            m.d.sync += self.r.valid.eq(0)
        return m
