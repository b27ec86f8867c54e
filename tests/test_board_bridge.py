"""The UART host link on amaranth.sim: the bridge against the protocol's Python
model (:mod:`tlsnic.link`), and the driver's SerialBus against the bridge.

The harness puts the bridge in front of a small register file behind the
project's own AXI4-Lite subordinate (:class:`CsrBridge`; undecoded = SLVERR),
a :class:`WindowRam` whose AXI4 side a Python testbench drives like the NIC's
DMA, and a few board registers. The host end of the UART is bit-banged by
:class:`AmaranthUartTransport`; faults are injected between it and the driver.
"""

import asyncio
import random

import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.sim import Simulator

from tlsnic.cosim.sim_uart import AmaranthUartTransport
from tlsnic.driver.bus import BusError
from tlsnic.driver.serial_bus import SerialBus, WindowAllocator
from tlsnic.hdl.board.uart_bridge import UartBridge
from tlsnic.hdl.board.window import WindowRam
from tlsnic.hdl.host.csr import CsrBridge
from tlsnic.link import (BOARD_ID, BoardReg, Cmd, MAX_MEM, Status, crc16, encode_request,
                         encode_response)

DIVISOR = 4
PERIOD = 1e-8
IDLE = 60 * DIVISOR
WINDOW_BASE = 0x1_0000_0000
WINDOW_SIZE = 4096
N_REGS = 16


class Harness(Elaboratable):
    def __init__(self):
        self.bridge = UartBridge(divisor=DIVISOR, window_size=WINDOW_SIZE, idle=IDLE, csr_timeout=64)
        self.window = WindowRam(base=WINDOW_BASE, size=WINDOW_SIZE)
        self.csr = CsrBridge(addr_width=16)
        self.regs = Array(Signal(32, name=f"reg{i}") for i in range(N_REGS))
        self.irq = Signal()
        self.scratch = Signal(32)

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = br = self.bridge
        m.submodules.window = self.window
        m.submodules.csr = csr = self.csr
        wiring.connect(m, br.csr, csr.axil)
        wiring.connect(m, br.mem, self.window.bridge)
        # Registers 0..N_REGS-1 at 0x000..; anything else is undecoded.
        index = csr.addr[2:]
        known = csr.addr < 4 * N_REGS
        m.d.comb += [csr.rdata.eq(self.regs[index]), csr.error.eq(~known)]
        with m.If(csr.write & known):
            m.d.sync += self.regs[index].eq(csr.wdata)
        with m.Switch(br.board.addr):
            with m.Case(BoardReg.ID):
                m.d.comb += br.board.rdata.eq(BOARD_ID)
            with m.Case(BoardReg.STATUS):
                m.d.comb += br.board.rdata.eq(self.irq)
            with m.Case(BoardReg.WINDOW_BASE_LO):
                m.d.comb += br.board.rdata.eq(WINDOW_BASE & 0xFFFFFFFF)
            with m.Case(BoardReg.WINDOW_BASE_HI):
                m.d.comb += br.board.rdata.eq(WINDOW_BASE >> 32)
            with m.Case(BoardReg.WINDOW_SIZE):
                m.d.comb += br.board.rdata.eq(WINDOW_SIZE)
            with m.Case(BoardReg.SPEED_MODE):
                m.d.comb += br.board.rdata.eq(self.scratch)
                with m.If(br.board.write):
                    m.d.sync += self.scratch.eq(br.board.wdata)
            with m.Default():
                pass
        return m


def run(test, *, dma=None):
    """Run ``test(ctx, dut, transport)``; ``dma(ctx, dut)`` runs beside it."""
    dut = Harness()
    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    done = {}

    async def tb(ctx):
        t = AmaranthUartTransport(ctx, dut.bridge.rx, dut.bridge.tx, divisor=DIVISOR,
                                  clock_period=PERIOD)
        await ctx.tick().repeat(4)
        await test(ctx, dut, t)
        done["ok"] = True

    sim.add_testbench(tb)
    if dma:
        async def dma_tb(ctx):
            await dma(ctx, dut)
        sim.add_testbench(dma_tb, background=True)
    sim.run()
    assert done.get("ok")


async def exchange(t, raw, n_data):
    """Send raw request bytes; return (status, seq, data) after checking the CRC."""
    await t.write(raw)
    head = await t.read(2, t.byte_time * 20 + IDLE * PERIOD * 2)
    assert len(head) == 2, "no answer"
    n = n_data if head[0] == Status.OK else 0
    rest = await t.read(n + 2, t.byte_time * (n + 10))
    assert crc16(head + rest) == 0, "response CRC"
    assert head + rest == encode_response(head[0], head[1], rest[:n])
    return head[0], head[1], rest[:n]


# ---- the bridge against the protocol model ----------------------------------------------

def test_csr_read_write_and_slverr():
    async def test(ctx, dut, t):
        st, seq, _ = await exchange(t, encode_request(Cmd.CSR_WRITE, 7, 0x0C, 4, (0xDEADBEEF).to_bytes(4, "little")), 0)
        assert (st, seq) == (Status.OK, 7)
        assert ctx.get(dut.regs[3]) == 0xDEADBEEF
        st, seq, data = await exchange(t, encode_request(Cmd.CSR_READ, 8, 0x0C, 4), 4)
        assert (st, seq, data) == (Status.OK, 8, (0xDEADBEEF).to_bytes(4, "little"))
        st, _, _ = await exchange(t, encode_request(Cmd.CSR_READ, 9, 0x400, 4), 4)
        assert st == Status.BUS_ERROR
        st, _, _ = await exchange(t, encode_request(Cmd.CSR_WRITE, 10, 0x400, 4, bytes(4)), 0)
        assert st == Status.BUS_ERROR
    run(test)


def test_mem_write_read_any_alignment_and_bounds():
    rng = random.Random(1)

    async def test(ctx, dut, t):
        image = bytearray(WINDOW_SIZE)
        for off, n in ((0, 8), (3, 1), (13, 29), (100, MAX_MEM), (WINDOW_SIZE - 5, 5)):
            data = bytes(rng.randrange(256) for _ in range(n))
            image[off:off + n] = data
            st, _, _ = await exchange(t, encode_request(Cmd.MEM_WRITE, off & 0xFF, off, n, data), 0)
            assert st == Status.OK
        for off, n in ((0, 16), (11, 40), (96, MAX_MEM), (WINDOW_SIZE - 7, 7)):
            st, _, data = await exchange(t, encode_request(Cmd.MEM_READ, 1, off, n), n)
            assert st == Status.OK and data == bytes(image[off:off + n])
        for off, n in ((WINDOW_SIZE - 4, 5), (0, MAX_MEM + 1), (0, 0)):
            st, _, _ = await exchange(t, encode_request(Cmd.MEM_READ, 2, off, n), n)
            assert st == Status.BAD_REQUEST
        st, _, _ = await exchange(t, encode_request(Cmd.CSR_READ, 3, 0, 8), 8)   # CSR length 4 only
        assert st == Status.BAD_REQUEST
    run(test)


def test_damaged_requests_are_answered_and_the_next_one_works():
    async def test(ctx, dut, t):
        good = encode_request(Cmd.CSR_WRITE, 1, 0x04, 4, (0x11223344).to_bytes(4, "little"))
        # A corrupted header byte (address): nothing is written, BAD_CRC.
        bad = bytearray(good)
        bad[2] ^= 0x40
        assert await exchange(t, bytes(bad), 0) == (Status.BAD_CRC, 1, b"")
        assert ctx.get(dut.regs[4]) == 0 and ctx.get(dut.regs[5]) == 0
        # A corrupted data byte: the CSR write is not carried out.
        bad = bytearray(good)
        bad[11] ^= 0x01
        assert (await exchange(t, bytes(bad), 0))[0] == Status.BAD_CRC
        assert ctx.get(dut.regs[1]) == 0
        # A lost header byte: the header check fails on whatever came tenth.
        assert (await exchange(t, good[:5] + good[6:], 0))[0] == Status.BAD_CRC
        # A lost data byte: the bridge waits for the quiet line, says TIMEOUT.
        assert (await exchange(t, good[:12] + good[13:], 0))[0] == Status.TIMEOUT
        assert ctx.get(dut.regs[1]) == 0
        # A lost header and garbage: still one answer per request, then normal.
        assert (await exchange(t, bytes([0x99, 0x98, 0x97]), 0))[0] == Status.TIMEOUT
        # A UART framing error (stop bit low) inside the request.
        await t.write(good[:3])
        await t.write_bits([0] + [0] * 8 + [0])
        await t.write_bits([1] * 4 * DIVISOR)
        head = await t.read(4, t.byte_time * 10 + IDLE * PERIOD * 3)
        assert head[0] == Status.BAD_CRC and crc16(head) == 0
        # An unknown command with a good CRC.
        assert (await exchange(t, encode_request(Cmd.CSR_READ, 5, 0, 4)[:0] +
                               _raw_header(0x7F, 5, 0, 4), 0))[0] == Status.BAD_REQUEST
        assert await exchange(t, good, 0) == (Status.OK, 1, b"")
        assert ctx.get(dut.regs[1]) == 0x11223344
    run(test)


def _raw_header(cmd, seq, addr, length):
    import struct
    block = struct.pack("<BBIH", cmd, seq, addr, length)
    return block + crc16(block).to_bytes(2, "big")


def test_window_shared_with_dma_bursts():
    """What the NIC's DMA writes, the host reads through the link, and back; an
    address outside the window answers SLVERR."""
    seen = {}

    async def dma(ctx, dut):
        axi = dut.window.axi
        ctx.set(axi.bready, 1)
        ctx.set(axi.rready, 1)
        await ctx.tick().repeat(10)
        for base, words in ((WINDOW_BASE + 64, [0x0706050403020100 + (i << 56) for i in range(8)]),
                            (WINDOW_BASE + WINDOW_SIZE, [1])):
            ctx.set(axi.awaddr, base); ctx.set(axi.awlen, len(words) - 1); ctx.set(axi.awsize, 3)
            ctx.set(axi.awvalid, 1)
            await ctx.tick().until(axi.awready)
            ctx.set(axi.awvalid, 0)
            for i, w in enumerate(words):
                ctx.set(axi.wdata, w); ctx.set(axi.wstrb, 0xFF); ctx.set(axi.wlast, i == len(words) - 1)
                ctx.set(axi.wvalid, 1)
                await ctx.tick().until(axi.wready)
            ctx.set(axi.wvalid, 0)
            bresp, = await ctx.tick().sample(axi.bresp).until(axi.bvalid)
            seen.setdefault("bresp", []).append(bresp)
        seen["written"] = True
        await ctx.tick().until(dut.regs[0] == 1)        # the host wrote the window: read it back
        ctx.set(axi.araddr, WINDOW_BASE + 200); ctx.set(axi.arlen, 1); ctx.set(axi.arvalid, 1)
        await ctx.tick().until(axi.arready)
        ctx.set(axi.arvalid, 0)
        beats = []
        while len(beats) < 2:
            *_, d, v = await ctx.tick().sample(axi.rdata, axi.rvalid)
            if v:
                beats.append(d)
        seen["read"] = beats

    async def test(ctx, dut, t):
        while "written" not in seen:
            await ctx.tick().repeat(50)
        assert seen["bresp"] == [0, 2]
        st, _, data = await exchange(t, encode_request(Cmd.MEM_READ, 1, 64, 64), 64)
        assert data == b"".join((0x0706050403020100 + (i << 56)).to_bytes(8, "little") for i in range(8))
        payload = bytes(range(16))
        assert (await exchange(t, encode_request(Cmd.MEM_WRITE, 2, 200, 16, payload), 0))[0] == Status.OK
        assert (await exchange(t, encode_request(Cmd.CSR_WRITE, 3, 0, 4, (1).to_bytes(4, "little")), 0))[0] == Status.OK
        while "read" not in seen:
            await ctx.tick().repeat(50)
        assert b"".join(w.to_bytes(8, "little") for w in seen["read"]) == payload
    run(test, dma=dma)



def test_window_write_burst_passes_a_stalled_read_burst():
    """A read burst held with ``rready`` low does not block a write burst: on
    the board the transmit engine's read can wait on the receive engine's
    writes (both TLS engines share one GCM engine), so a window that served
    one burst at a time could deadlock the card."""
    from amaranth.sim import Simulator
    dut = WindowRam(base=WINDOW_BASE, size=WINDOW_SIZE)
    axi = dut.axi
    seen = {}

    async def bench(ctx):
        ctx.set(axi.bready, 1)
        ctx.set(axi.araddr, WINDOW_BASE); ctx.set(axi.arlen, 3); ctx.set(axi.arvalid, 1)
        await ctx.tick().until(axi.arready)
        ctx.set(axi.arvalid, 0)            # rready stays low: the read burst waits
        ctx.set(axi.awaddr, WINDOW_BASE + 8); ctx.set(axi.awlen, 1); ctx.set(axi.awvalid, 1)
        await ctx.tick().until(axi.awready)
        ctx.set(axi.awvalid, 0)
        for i, w in enumerate((0x1111, 0x2222)):
            ctx.set(axi.wdata, w); ctx.set(axi.wstrb, 0xFF); ctx.set(axi.wlast, i == 1)
            ctx.set(axi.wvalid, 1)
            await ctx.tick().until(axi.wready)
        ctx.set(axi.wvalid, 0)
        seen["bresp"], = await ctx.tick().sample(axi.bresp).until(axi.bvalid)
        ctx.set(axi.rready, 1)
        beats = []
        while len(beats) < 4:
            *_, d, v, last = await ctx.tick().sample(axi.rdata, axi.rvalid, axi.rlast)
            if v:
                beats.append((d, last))
        seen["read"] = beats

    sim = Simulator(dut)
    sim.add_clock(8e-9)
    sim.add_testbench(bench)
    sim.run_until(2e-6)
    assert seen["bresp"] == 0
    assert [last for _, last in seen["read"]] == [0, 0, 0, 1]
    assert seen["read"][3][0] == 0


# ---- the driver's Bus backend over the bridge ---------------------------------------------

class Faulty:
    """Passes a transport through, damaging chosen writes and reads."""
    def __init__(self, inner, *, corrupt_writes=(), drop_writes=(), corrupt_reads=()):
        self.inner = inner
        self.byte_time = inner.byte_time
        self.corrupt_writes, self.drop_writes, self.corrupt_reads = set(corrupt_writes), set(drop_writes), set(corrupt_reads)
        self.writes = self.reads = 0

    async def write(self, data):
        data = bytearray(data)
        self.writes += 1
        if self.writes in self.corrupt_writes:
            data[len(data) // 2] ^= 0x10
        if self.writes in self.drop_writes:
            del data[3]
        await self.inner.write(bytes(data))

    async def read(self, n, timeout):
        data = bytearray(await self.inner.read(n, timeout))
        self.reads += 1
        if self.reads in self.corrupt_reads and data:
            data[-1] ^= 0x01
        return bytes(data)

    async def quiet(self, d):
        await self.inner.quiet(d)

    async def sleep(self, d):
        await self.inner.sleep(d)


def test_serial_bus_registers_memory_and_errors():
    async def test(ctx, dut, t):
        bus = await SerialBus.connect(t, bridge_idle=IDLE * PERIOD, irq_timeout=1e-3)
        assert (bus.window.base, bus.window.size) == (WINDOW_BASE, WINDOW_SIZE)
        await bus.write32(0x08, 0xCAFEF00D)
        assert await bus.read32(0x08) == 0xCAFEF00D
        with pytest.raises(BusError):
            await bus.read32(0x800)
        a = bus.alloc(100)
        b = bus.alloc(300, align=256)
        assert a % 64 == 0 and b % 256 == 0 and WINDOW_BASE <= a < b < WINDOW_BASE + WINDOW_SIZE
        # Memory the board had dirtied reads as zero once allocated.
        await bus.mem_write(b, b"\xff" * 300)
        bus.free(b)
        b = bus.alloc(300, align=256)
        assert await bus.mem_read(b, 300) == bytes(300)
        payload = bytes(random.Random(2).randrange(256) for _ in range(300))
        await bus.mem_write(b + 1, payload[:299])
        assert await bus.mem_read(b + 1, 299) == payload[:299]
        with pytest.raises(BusError):
            await bus.mem_read(b + 512, 4)           # past the (rounded-up) allocation
        assert bus.stats["retries"] == 0
    run(test)


def test_serial_bus_retries_through_corruption_and_loss():
    async def test(ctx, dut, t):
        f = Faulty(t, corrupt_writes={1, 4}, drop_writes={2}, corrupt_reads={5})
        bus = SerialBus(f, window_base=WINDOW_BASE, window_size=WINDOW_SIZE, bridge_idle=IDLE * PERIOD)
        await bus.write32(0x10, 0x5EED)             # write 1 corrupted, write 2 loses a byte
        assert ctx.get(dut.regs[4]) == 0x5EED
        assert await bus.read32(0x10) == 0x5EED     # write 4 corrupted, a reply damaged
        assert bus.stats["retries"] >= 3
        bus.retries = 2
        dead = Faulty(t, corrupt_writes=set(range(1, 10)))
        bus.transport = dead
        with pytest.raises(TimeoutError):
            await bus.read32(0x10)
    run(test)


def test_serial_bus_wait_irq_polls_status():
    async def test(ctx, dut, t):
        bus = SerialBus(t, window_base=WINDOW_BASE, window_size=WINDOW_SIZE,
                        bridge_idle=IDLE * PERIOD, irq_timeout=2e-4)
        with pytest.raises(TimeoutError):
            await bus.wait_irq()
        ctx.set(dut.irq, 1)
        await bus.wait_irq()
    run(test)


def test_window_allocator_first_fit_and_coalescing():
    w = WindowAllocator(0x1000, 1024)
    a = w.alloc(100)                 # 128 bytes at 0x1000
    b = w.alloc(64)
    c = w.alloc(512, align=512)
    assert (a, b, c) == (0x1000, 0x1080, 0x1200)
    with pytest.raises(MemoryError):
        w.alloc(512)
    w.free(a)
    w.free(b)
    assert w.alloc(192) == 0x1000    # the two freed blocks merged
    with pytest.raises(ValueError):
        w.free(0x1234)
