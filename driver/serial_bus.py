"""The driver's :class:`~tlsnic.driver.bus.Bus` over the board's UART host link.

:class:`SerialBus` speaks :mod:`tlsnic.link` to
:class:`tlsnic.hdl.board.uart_bridge.UartBridge` through a byte
:class:`Transport`: :class:`PySerialTransport` for a real board, or a
simulator's UART model in tests. Host memory is the board's on-chip window:
:meth:`SerialBus.alloc` hands out ranges of it (first fit), and the interrupt
is polled through the board's ``STATUS`` register.

Retries: every request is repeated, after the line has gone quiet, when its
answer is missing, damaged, stale (wrong ``seq``) or a NAK (``BAD_CRC``,
``TIMEOUT``); the protocol makes repeating safe (see :mod:`tlsnic.link`).
After ``retries`` failures the call raises ``TimeoutError``: the link is dead,
not the card. ``BUS_ERROR`` and ``BAD_REQUEST`` are not retried: they raise
:class:`~tlsnic.driver.bus.BusError`, as an undecoded CSR does on every backend.

``alloc`` must be synchronous (it is in :class:`~tlsnic.driver.bus.Bus`), yet
memory must read as zero once allocated: the zeroing is queued and written
before the next access of any kind, so the card can never be told about the
memory (which takes a CSR or memory write) before it is zero.
"""

import asyncio
import itertools
from typing import Protocol

from tlsnic.link import (BOARD_ID, BoardReg, Cmd, LinkStatusBits, MAX_MEM, Status, crc16,
                         encode_request)

from .bus import BusError

__all__ = ["Transport", "PySerialTransport", "SerialBus", "WindowAllocator"]

_READS = (Cmd.CSR_READ, Cmd.MEM_READ, Cmd.BOARD_READ)


class Transport(Protocol):
    """Bytes to and from the board. Times are seconds (simulated ones in a simulator)."""

    #: Seconds one byte takes on the line (10 bits).
    byte_time: float

    async def write(self, data: bytes) -> None: ...

    async def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes; fewer if ``timeout`` passes first."""
        ...

    async def quiet(self, duration: float) -> None:
        """Discard input until nothing has arrived for ``duration``."""
        ...

    async def sleep(self, duration: float) -> None: ...


class PySerialTransport:
    """A :class:`Transport` on a pyserial port (the board's USB-UART).

    Blocking pyserial calls run in a worker thread, so an event loop stays live.
    """

    def __init__(self, port, baudrate=1_000_000):
        import serial
        self.serial = serial.Serial(port, baudrate=baudrate, timeout=0)
        self.byte_time = 10 / baudrate
        #: USB-UART bridges hold received bytes for up to their latency timer
        #: (16 ms by default on FTDI parts) before passing them on.
        self.latency = 0.05

    async def write(self, data):
        await asyncio.to_thread(self._write, bytes(data))

    def _write(self, data):
        self.serial.write(data)
        self.serial.flush()

    async def read(self, n, timeout):
        return await asyncio.to_thread(self._read, n, timeout)

    def _read(self, n, timeout):
        self.serial.timeout = timeout
        return bytes(self.serial.read(n))

    async def quiet(self, duration):
        def drain():
            self.serial.timeout = duration
            while self.serial.read(4096):
                pass
        await asyncio.to_thread(drain)

    async def sleep(self, duration):
        await asyncio.sleep(duration)

    def close(self):
        self.serial.close()


class WindowAllocator:
    """First-fit allocation of ``[base, base + size)``."""

    def __init__(self, base, size):
        self.base = base
        self.size = size
        self.free_list = [(0, size)]      # (offset, length), sorted, coalesced
        self.live = {}                    # address -> length

    def alloc(self, size, align=64):
        if size <= 0:
            raise ValueError(f"allocation size must be positive, not {size}")
        if align <= 0 or align & (align - 1):
            raise ValueError(f"alignment must be a power of two, not {align}")
        size = -(-size // align) * align
        for i, (off, length) in enumerate(self.free_list):
            start = -(-(self.base + off) // align) * align - self.base
            if start + size <= off + length:
                pieces = [(off, start - off), (start + size, off + length - start - size)]
                self.free_list[i:i + 1] = [p for p in pieces if p[1] > 0]
                self.live[self.base + start] = size
                return self.base + start
        raise MemoryError(f"host-memory window full: no {size} bytes aligned to {align}")

    def free(self, addr):
        try:
            size = self.live.pop(addr)
        except KeyError:
            raise ValueError(f"{addr:#x} is not an allocation") from None
        blocks = sorted(self.free_list + [(addr - self.base, size)])
        merged = []
        for off, length in blocks:
            if merged and merged[-1][0] + merged[-1][1] == off:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((off, length))
        self.free_list = merged

    def contains(self, addr, length=1):
        return any(a <= addr and addr + length <= a + n for a, n in self.live.items())


class SerialBus:
    """The :class:`~tlsnic.driver.bus.Bus` over a :class:`Transport`.

    Parameters
    ----------
    transport : Transport
    window_base, window_size : int
        The host-memory window (:meth:`connect` reads them from the board).
    bridge_idle : float
        Seconds of quiet line after which the bridge gives up on a request
        (its ``idle`` clocks over its clock); the host waits twice that before
        a retry.
    retries : int
    irq_poll : float
        Seconds between two polls of the interrupt line.
    irq_timeout : float
        :meth:`wait_irq` raises ``TimeoutError`` after this long.
    """

    def __init__(self, transport, *, window_base, window_size, bridge_idle=None, retries=8,
                 irq_poll=0.0, irq_timeout=10.0):
        self.transport = transport
        self.window = WindowAllocator(window_base, window_size)
        self.bridge_idle = bridge_idle if bridge_idle is not None else 4 * transport.byte_time
        self.retries = retries
        self.irq_poll = irq_poll
        self.irq_timeout = irq_timeout
        self.slack = getattr(transport, "latency", 0.0)
        self._seq = itertools.count(1)
        self._zero = []                   # (address, length) still to be zeroed on the board
        self.stats = {"requests": 0, "retries": 0}

    @classmethod
    async def connect(cls, transport, **kwargs):
        """Open the link: check the board's ID and read its window."""
        probe = cls(transport, window_base=0, window_size=0, **kwargs)
        board_id = await probe.board_read(BoardReg.ID)
        if board_id != BOARD_ID:
            raise BusError(f"not a tlsnic board: ID {board_id:#010x}")
        lo = await probe.board_read(BoardReg.WINDOW_BASE_LO)
        hi = await probe.board_read(BoardReg.WINDOW_BASE_HI)
        size = await probe.board_read(BoardReg.WINDOW_SIZE)
        return cls(transport, window_base=lo | hi << 32, window_size=size, **kwargs)

    # ---- the link ----

    def _response_timeout(self, n):
        # Response bytes, plus the bridge's own quiet wait before a NAK, plus
        # the transport's latency (a USB-UART buffers for milliseconds).
        return self.transport.byte_time * (n + 8) + 2 * self.bridge_idle + self.slack

    async def _resync(self):
        self.stats["retries"] += 1
        await self.transport.quiet(2 * self.bridge_idle)

    async def _request(self, cmd, addr, length, data=b""):
        """One operation, retried until it gets a good answer; returns read data."""
        t = self.transport
        want = length if cmd in _READS else 0
        for _ in range(self.retries):
            seq = next(self._seq) & 0xFF
            self.stats["requests"] += 1
            await t.write(encode_request(cmd, seq, addr, length, data))
            # The bridge first takes in the whole request, then answers.
            head = await t.read(2, self._response_timeout(2) + t.byte_time * (12 + len(data)))
            if len(head) < 2:
                await self._resync()
                continue
            n = want if head[0] == Status.OK else 0
            rest = await t.read(n + 2, self._response_timeout(n))
            if len(rest) < n + 2 or crc16(head + rest) != 0:
                await self._resync()
                continue
            status = head[0]
            if status in (Status.BAD_CRC, Status.TIMEOUT):
                self.stats["retries"] += 1
                continue
            if status == Status.OK and head[1] != seq:
                await self._resync()      # a late answer to an earlier attempt
                continue
            if status == Status.BUS_ERROR:
                raise BusError(f"{cmd.name} at {addr:#x}: bus error")
            if status != Status.OK:
                raise BusError(f"{cmd.name} at {addr:#x} length {length}: {Status(status).name}"
                               if status in Status._value2member_map_ else f"status {status:#x}")
            return rest[:n]
        raise TimeoutError(f"host link: {cmd.name} at {addr:#x} failed {self.retries} times")

    async def _flush_zero(self):
        while self._zero:
            addr, length = self._zero[0]
            chunk = min(length, MAX_MEM)
            await self._mem_write(addr, bytes(chunk))
            if chunk == length:
                self._zero.pop(0)
            else:
                self._zero[0] = (addr + chunk, length - chunk)

    # ---- board registers ----

    async def board_read(self, reg):
        await self._flush_zero()
        return int.from_bytes(await self._request(Cmd.BOARD_READ, int(reg), 4), "little")

    async def board_write(self, reg, value):
        await self._flush_zero()
        await self._request(Cmd.BOARD_WRITE, int(reg), 4, int(value).to_bytes(4, "little"))

    # ---- Bus ----

    async def read32(self, addr):
        await self._flush_zero()
        return int.from_bytes(await self._request(Cmd.CSR_READ, addr, 4), "little")

    async def write32(self, addr, value):
        await self._flush_zero()
        await self._request(Cmd.CSR_WRITE, addr, 4, (int(value) & 0xFFFF_FFFF).to_bytes(4, "little"))

    def alloc(self, size, align=64):
        addr = self.window.alloc(size, align)
        self._zero.append((addr, self.window.live[addr]))
        return addr

    def free(self, addr):
        self._zero = [(a, n) for a, n in self._zero if not (addr <= a < addr + self.window.live.get(addr, 0))]
        self.window.free(addr)

    def _check(self, addr, length):
        if not self.window.contains(addr, length):
            raise BusError(f"host memory access of {length} bytes at {addr:#x}: unmapped")

    async def mem_read(self, addr, length):
        if length == 0:
            return b""
        self._check(addr, length)
        await self._flush_zero()
        out = bytearray()
        for off in range(0, length, MAX_MEM):
            n = min(MAX_MEM, length - off)
            out += await self._request(Cmd.MEM_READ, addr + off - self.window.base, n)
        return bytes(out)

    async def mem_write(self, addr, data):
        data = bytes(data)
        if not data:
            return
        self._check(addr, len(data))
        await self._flush_zero()
        await self._mem_write(addr, data)

    async def _mem_write(self, addr, data):
        for off in range(0, len(data), MAX_MEM):
            chunk = data[off:off + MAX_MEM]
            await self._request(Cmd.MEM_WRITE, addr + off - self.window.base, len(chunk), chunk)

    async def link_status(self):
        """The board's ``STATUS`` register as :class:`LinkStatusBits`."""
        return await self.board_read(BoardReg.STATUS)

    async def wait_irq(self):
        waited = 0.0
        while True:
            if await self.link_status() & LinkStatusBits.IRQ:
                return
            if waited >= self.irq_timeout:
                raise TimeoutError(f"no interrupt within {self.irq_timeout} s")
            step = max(self.irq_poll, self.transport.byte_time * 16)
            await self.transport.sleep(step)
            waited += step + self.transport.byte_time * 16
