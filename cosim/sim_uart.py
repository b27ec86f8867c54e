"""A :class:`~tlsnic.driver.serial_bus.Transport` that drives a UART pin pair
under ``amaranth.sim``: the host end of the board's link, bit by bit.

Times are simulated seconds; ``clock_period`` converts them to clocks of the
domain the pins are sampled in. Only for tests: it wakes up every clock while
it listens.
"""

__all__ = ["AmaranthUartTransport"]


class AmaranthUartTransport:
    """Parameters
    ----------
    ctx : amaranth.sim testbench context
    rx : Signal
        The board's receive pin (driven here).
    tx : Signal
        The board's transmit pin (listened to here).
    divisor : int
        Clocks per bit.
    clock_period : float
    domain : str
    """

    def __init__(self, ctx, rx, tx, *, divisor, clock_period, domain="sync"):
        self.ctx = ctx
        self.rx = rx
        self.tx = tx
        self.divisor = divisor
        self.period = clock_period
        self.domain = domain
        self.byte_time = 10 * divisor * clock_period
        self.sent = 0
        self.received = 0

    def _clocks(self, seconds):
        return max(1, round(seconds / self.period))

    async def _tick(self, n=1):
        await self.ctx.tick(self.domain).repeat(n)

    async def write_bits(self, bits):
        for bit in bits:
            self.ctx.set(self.rx, bit)
            await self._tick(self.divisor)
        self.ctx.set(self.rx, 1)

    async def write(self, data):
        for byte in bytes(data):
            await self.write_bits([0] + [(byte >> i) & 1 for i in range(8)] + [1])
            self.sent += 1

    async def _byte(self):
        """Decode one byte whose start bit was just seen."""
        await self._tick(self.divisor // 2)
        value = 0
        for i in range(8):
            await self._tick(self.divisor)
            value |= self.ctx.get(self.tx) << i
        await self._tick(self.divisor)          # into the stop bit
        self.received += 1
        return value

    async def read(self, n, timeout):
        limit = self._clocks(timeout)
        out, waited = bytearray(), 0
        while len(out) < n and waited < limit:
            await self._tick()
            waited += 1
            if not self.ctx.get(self.tx):
                out.append(await self._byte())
                waited = 0                      # the timeout is between bytes
        return bytes(out)

    async def quiet(self, duration):
        limit, idle = self._clocks(duration), 0
        while idle < limit:
            await self._tick()
            idle += 1
            if not self.ctx.get(self.tx):
                await self._byte()
                idle = 0

    async def sleep(self, duration):
        await self._tick(self._clocks(duration))
