"""Cuts received frames at MAX_FRAME bytes, so a runaway frame can never fill
the RX packet FIFO without ending (the FIFO only releases whole frames).

The kept part of an oversize frame ends early (``last`` on the word that
reaches the limit); the rest is swallowed up to the real end. One ``info`` beat
per frame, at its real end, gives the wire length (saturating at 65535) and
whether the frame was cut.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tlsnic.abi import MAX_FRAME
from .frame import FrameWord, WORD_BYTES, keep_count

__all__ = ["FrameInfo", "FrameLimiter"]


class FrameInfo(data.Struct):
    wire_length: 16
    cut: 1
    port: 2         #: ingress port


class FrameLimiter(wiring.Component):
    i: In(stream.Signature(FrameWord))
    port: In(2)     #: ingress port of the frame on ``i``, reported in ``info``
    o: Out(stream.Signature(FrameWord))
    info: Out(stream.Signature(FrameInfo))

    def elaborate(self, platform):
        m = Module()
        assert MAX_FRAME % WORD_BYTES == 0
        length = Signal(17)         # bytes so far, saturating above 65535
        cutting = Signal()          # past the limit: swallow to the real end
        word = self.i.payload
        new_length = length + keep_count(word.keep)
        at_limit = new_length >= MAX_FRAME

        info_free = ~self.info.valid | self.info.ready
        with m.If(self.info.valid & self.info.ready):
            m.d.sync += self.info.valid.eq(0)

        m.d.comb += [
            self.o.payload.data.eq(word.data),
            self.o.payload.keep.eq(word.keep),
            self.o.payload.last.eq(word.last | at_limit),
            self.o.valid.eq(self.i.valid & ~cutting & info_free),
            self.i.ready.eq(info_free & (cutting | self.o.ready)),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += length.eq(Mux(new_length > 0xFFFF, 0x10000, new_length))
            with m.If(at_limit & ~word.last):
                m.d.sync += cutting.eq(1)
            with m.If(word.last):
                m.d.sync += [
                    length.eq(0), cutting.eq(0),
                    self.info.valid.eq(1),
                    self.info.payload.wire_length.eq(Mux(new_length > 0xFFFF, 0xFFFF, new_length)),
                    self.info.payload.cut.eq(cutting | (new_length > MAX_FRAME)),
                    self.info.payload.port.eq(self.port),
                ]
        return m
