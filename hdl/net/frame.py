"""The frame datapath word, and adapters to AXI4-Stream.

Frames move through the card as streams of :class:`FrameWord`: 64 data bits,
byte ``k`` of the frame in lane ``k % 8`` of word ``k // 8`` (AXI4-Stream byte
order), every word full except the last.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring

__all__ = ["FrameWord", "WORD_BYTES", "keep_count", "header_window", "from_axis", "to_axis"]

WORD_BYTES = 8


class FrameWord(data.Struct):
    data: 64
    keep: 8     #: contiguous from lane 0; partial only when ``last``
    last: 1


def keep_count(keep):
    """Number of valid bytes (0..8) in a contiguous ``keep`` mask."""
    return sum(keep[i] for i in range(WORD_BYTES))


def header_window(m, word, index, window):
    """The first ``len(window) // 64`` words of a frame, as they stand with
    ``word`` (the frame's word number ``index``) included: driven
    combinationally, for the caller to register into ``window`` on each beat.

    Bytes past the frame's end read as zero (``keep`` masks them, and word 0
    clears whatever the previous frame left), so parsing a short frame is
    deterministic: the model in ``cosim/model.py`` reads the same zeros.
    """
    masked = Cat(word.data.word_select(k, 8) & word.keep[k].replicate(8)
                 for k in range(WORD_BYTES))
    window_now = Signal.like(window)
    m.d.comb += window_now.eq(window)
    for k in range(len(window) // 64):
        with m.If(index == k):
            m.d.comb += window_now.word_select(k, 64).eq(masked)
            if k == 0:
                m.d.comb += window_now[64:].eq(0)
    return window_now


def from_axis(m, axis, frames):
    """Drive the ``stream.Signature(FrameWord)`` ``frames`` from an AXI4-Stream
    subordinate port ``axis`` (combinational)."""
    m.d.comb += [
        frames.valid.eq(axis.tvalid),
        frames.payload.data.eq(axis.tdata),
        frames.payload.keep.eq(axis.tkeep),
        frames.payload.last.eq(axis.tlast),
        axis.tready.eq(frames.ready),
    ]


def to_axis(m, frames, axis):
    """Drive the AXI4-Stream manager port ``axis`` from ``frames`` (combinational)."""
    m.d.comb += [
        axis.tvalid.eq(frames.valid),
        axis.tdata.eq(frames.payload.data),
        axis.tkeep.eq(frames.payload.keep),
        axis.tlast.eq(frames.payload.last),
        frames.ready.eq(axis.tready),
    ]
