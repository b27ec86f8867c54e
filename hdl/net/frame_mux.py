"""Merges the frames of several network ports into one stream.

Round robin between ports, switching only between frames, so every frame
leaves whole; the port a frame came from travels beside it.
"""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .frame import FrameWord

__all__ = ["FrameMux"]


class FrameMux(wiring.Component):
    """Members
    -------
    i : In(stream.Signature(FrameWord)).array(n)
    o : Out(stream.Signature(FrameWord))
    port : Out(range(n))
        Where the frame on ``o`` came from; steady for the whole frame.
    """
    def __init__(self, n):
        self.n = n
        super().__init__({
            "i": In(stream.Signature(FrameWord)).array(n),
            "o": Out(stream.Signature(FrameWord)),
            "port": Out(range(max(n, 2))),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.n
        current = self.port
        in_frame = Signal()     # the current port is mid-frame: stay on it
        inputs = Array(self.i)
        sel = inputs[current]
        m.d.comb += [
            self.o.valid.eq(sel.valid),
            self.o.payload.eq(sel.payload),
        ]
        for k, port in enumerate(self.i):
            m.d.comb += port.ready.eq((current == k) & self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += in_frame.eq(~self.o.payload.last)
        # Between frames, with nothing waiting on the current port, move to the
        # next port that has a frame (round robin from the current one).
        with m.If(~in_frame & ~sel.valid):
            for k in reversed(range(1, n)):
                cand = (current + k) % n
                with m.If(Cat(p.valid for p in self.i).bit_select(cand, 1)):
                    m.d.sync += current.eq(cand)
        return m
