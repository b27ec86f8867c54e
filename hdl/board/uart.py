"""8N1 UART receiver and transmitter with a fixed divisor.

``amaranth-stdio`` is only a placeholder on PyPI, so the project has its own.
The receiver synchronises the line with two flip-flops, waits for a start bit,
checks it again half a bit later (a glitch shorter than half a bit is not a
start), then samples each bit in its middle. A missing stop bit is reported as
a framing error with the byte: the host-link bridge treats it like a bad CRC.
"""

from amaranth import *
from amaranth.lib import cdc, data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UartByte", "UartRx", "UartTx"]


class UartByte(data.Struct):
    data: 8
    frame_error: 1


class UartRx(wiring.Component):
    """Parameters
    ----------
    divisor : int
        Clocks per bit.

    Members
    -------
    rx : In(1)
        The line (idle high); synchronised here.
    bytes : Out(stream.Signature(UartByte))
        No back-pressure: a byte not taken before the next one completes is lost
        (the bridge always takes them at once).
    """
    def __init__(self, divisor):
        assert divisor >= 4
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "bytes": Out(stream.Signature(UartByte))})

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = cdc.FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(self.divisor))
        bit = Signal(range(10))
        shreg = Signal(8)
        m.d.sync += self.bytes.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        m.next = "IDLE"           # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                        m.next = "BITS"
            with m.State("BITS"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(bit + 1)]
                    with m.If(bit == 8):
                        m.d.sync += [self.bytes.valid.eq(1), self.bytes.payload.data.eq(shreg),
                                     self.bytes.payload.frame_error.eq(~line)]
                        # A missing stop bit (or a break): wait for the idle level.
                        m.next = "STOP"
                    with m.Else():
                        m.d.sync += shreg.eq(Cat(shreg[1:], line))
            with m.State("STOP"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """Parameters
    ----------
    divisor : int
        Clocks per bit.

    Members
    -------
    bytes : In(stream.Signature(8))
    tx : Out(1)
    """
    def __init__(self, divisor):
        assert divisor >= 2
        self.divisor = divisor
        super().__init__({"bytes": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        shreg = Signal(9)       # data bits, then the stop bit
        left = Signal(range(10))
        m.d.comb += self.bytes.ready.eq((left == 0) & (timer == 0))
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(left != 0):
            m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg[1:]), left.eq(left - 1),
                         timer.eq(self.divisor - 1)]
        with m.Elif(self.bytes.valid):
            m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.bytes.payload, C(1, 1))),
                         left.eq(9), timer.eq(self.divisor - 1)]
        return m
