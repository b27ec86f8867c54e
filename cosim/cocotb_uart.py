"""A :class:`~tlsnic.driver.serial_bus.Transport` on a UART pin pair under cocotb.

The host end of the board's link in a cocotb simulation, analogous to
:mod:`tlsnic.cosim.sim_uart` (its amaranth.sim twin). The line is driven and
decoded by cocotbext-uart's :class:`UartSource` / :class:`UartSink`, a model
written independently of the gateware's UART; this class only adds the
timeouts a :class:`~tlsnic.driver.serial_bus.SerialBus` needs. Times are
simulated seconds. The models wake up once per bit while the line is busy and
not at all while it is idle.
"""

import logging

from cocotb.triggers import Timer
from cocotbext.uart import UartSink, UartSource

__all__ = ["CocotbUartTransport"]


def _ns(seconds):
    return max(1, round(seconds * 1e9))


class CocotbUartTransport:
    """Parameters
    ----------
    rx : cocotb handle
        The board's receive pin (driven here).
    tx : cocotb handle
        The board's transmit pin (listened to here).
    baud : int
        Bits per second; ``1e9 / baud`` must be a whole number of
        nanoseconds (the models time bits in ns).
    """

    def __init__(self, rx, tx, *, baud):
        if 1e9 / baud != int(1e9 / baud):
            raise ValueError(f"{baud} baud is not a whole number of ns per bit")
        for pin in (rx, tx):
            logging.getLogger(f"cocotb.{pin._path}").setLevel(logging.WARNING)
        self.source = UartSource(rx, baud=baud)
        self.sink = UartSink(tx, baud=baud)
        self.byte_time = 10 / baud
        self.sent = 0
        self.received = 0

    async def write(self, data):
        """Returns once the last stop bit is on the line."""
        data = bytes(data)
        await self.source.write(data)
        await self.source.wait()
        self.sent += len(data)

    async def read(self, n, timeout):
        """Up to ``n`` bytes; fewer when no byte completes within ``timeout``
        (counted from the call and again from each byte received)."""
        out = bytearray()
        while len(out) < n:
            if self.sink.empty():
                await self.sink.wait(_ns(timeout), "ns")
                if self.sink.empty():
                    break
            out += self.sink.read_nowait(min(n - len(out), self.sink.count()))
        self.received += len(out)
        return bytes(out)

    async def quiet(self, duration):
        while True:
            self.sink.clear()
            await self.sink.wait(_ns(duration), "ns")
            if self.sink.empty() and not self.sink.active:
                return

    async def sleep(self, duration):
        await Timer(_ns(duration), "ns")
