"""The resync search: find the first plausible TLS record header in a byte stream.

A receive context that has lost its place (``SEARCHING`` in the ABI's "TLS
receive" section) scans its flow's new payload bytes for a header that looks
right: content type 23 (TLS 1.3) or 20..23 (TLS 1.2), version 0x0303, length
within :func:`tlsnic.abi.record_length_bounds`. The first one found becomes the
resync candidate reported to the driver; the record walker then follows its
chain (``PENDING``) from the byte after the header.

How one word is scanned
-----------------------
The datapath moves a 64-bit word per clock, so the scanner looks at eight
candidate starts per clock: every start whose fifth byte is in this word. Its
view is twelve bytes, the four newest bytes before the word (the *window*,
carried across words and across frames that follow each other without a gap,
since a header may straddle a frame boundary) and the word's new lanes
``[lo, hi)`` shifted down to sit right after them. Each start is checked once,
in the clock its last byte arrives, so the lowest start found in a clock is the
first in the stream. Starts need all five bytes present: a window that holds
fewer than four bytes (a fresh search) marks its missing bytes absent.

The window is the only state; it lives in the receive context between frames
(32 bits of bytes and a count). Finding a candidate does not update it: the
walker takes over from the header's end, and a later search starts afresh.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tlsnic.abi import TlsVersion, record_length_bounds

__all__ = ["WINDOW_BYTES", "header_plausible", "HeaderScanner"]

#: Bytes of a header the window keeps from before the current word.
WINDOW_BYTES = 4
HEADER_LEN = 5
_BOUNDS_12 = record_length_bounds(TlsVersion.TLS_1_2)
_BOUNDS_13 = record_length_bounds(TlsVersion.TLS_1_3)


def header_plausible(header, tls13):
    """Whether the five header bytes ``header`` (byte 0 in bits 0..7) could start
    a record of the context's version: the ABI's rule for a resync candidate,
    and for every header the receive walker meets."""
    header = Value.cast(header)
    ctype = header[0:8]
    length = Cat(header[32:40], header[24:32])
    type_ok = Mux(tls13, ctype == 23, (ctype >= 20) & (ctype <= 23))
    lo = Mux(tls13, _BOUNDS_13[0], _BOUNDS_12[0])
    hi = Mux(tls13, _BOUNDS_13[1], _BOUNDS_12[1])
    return (type_ok & (header[8:16] == 0x03) & (header[16:24] == 0x03)
            & (length >= lo) & (length <= hi))


class HeaderScanner(wiring.Component):
    """Scans one word per clock for the first plausible header.

    Members
    -------
    data : In(64)
        The word (frame byte order: lane ``k`` in bits ``8k..8k+7``).
    lo, hi : In(range(9))
        The lanes ``[lo, hi)`` that are new stream bytes (``lo <= hi``).
    tls13 : In(1)
    window_in, window_count_in : In
        The window before this word, ``window_count_in`` (0..4) valid bytes, the
        newest in bits 24..31. Where the caller keeps it (a register while a
        frame is scanned, the context table between frames) is its choice.
    found : Out(1)
        A candidate ends in ``[lo, hi)`` (combinational).
    start : Out(signed(5))
        Its first byte, as a lane of this word (-4..3: negative ones came
        before the word, in the window).
    end : Out(range(9))
        The lane after its last byte (``start + 5``).
    header : Out(40)
        Its five bytes.
    window_out, window_count_out : Out
        The window after the word, when nothing was found.
    """
    def __init__(self):
        super().__init__({
            "data": In(64), "lo": In(range(9)), "hi": In(range(9)), "tls13": In(1),
            "window_in": In(32), "window_count_in": In(range(WINDOW_BYTES + 1)),
            "found": Out(1), "start": Out(signed(5)), "end": Out(range(9)), "header": Out(40),
            "window_out": Out(32), "window_count_out": Out(range(WINDOW_BYTES + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        n = Signal(range(9))
        m.d.comb += n.eq(self.hi - self.lo)
        shifted = Signal(64)
        m.d.comb += shifted.eq(self.data >> (self.lo * 8))
        view = Signal(96)           # window (bytes 0..3) then the new bytes (4..)
        m.d.comb += view.eq(Cat(self.window_in, shifted))
        present = Signal(12)
        m.d.comb += present.eq(Cat(
            *[(WINDOW_BYTES - k) <= self.window_count_in for k in range(WINDOW_BYTES)],
            *[n > k for k in range(8)]))

        for j in reversed(range(8)):
            header = view[8 * j:8 * j + 40]
            with m.If(present[j:j + HEADER_LEN].all() & header_plausible(header, self.tls13)):
                m.d.comb += [self.found.eq(1), self.header.eq(header),
                             self.start.eq(self.lo + j - WINDOW_BYTES),
                             self.end.eq(self.lo + j + HEADER_LEN - WINDOW_BYTES)]

        # The four newest bytes of the view end at byte 4 + n - 1.
        with m.Switch(n):
            for k in range(9):
                with m.Case(k):
                    m.d.comb += self.window_out.eq(view[8 * k:8 * k + 32])
        count = self.window_count_in + n
        m.d.comb += self.window_count_out.eq(Mux(count > WINDOW_BYTES, WINDOW_BYTES, count))
        return m
