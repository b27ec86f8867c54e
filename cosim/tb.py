"""The cocotb testbench around the NIC top: clock, reset, bus models, wire.

:class:`TB` builds what a verification engineer expects from a Corundum/taxi
testbench: a clock, a reset, an AXI4-Lite manager on the CSR port, an AXI4
subordinate on the DMA port backed by the driver's :class:`HostMemory`, and an
AXI4-Stream source/sink per network port, with optional idle and back-pressure
generators. :class:`CocotbBus` and :class:`CocotbWire` put the driver's
:class:`~tlsnic.driver.bus.Bus` and the scenarios' :class:`Wire` on top, so the
very code that runs on the reference model runs here.
"""

import itertools
import logging
import random
import warnings

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer, with_timeout
from cocotbext.axi import (AxiBus, AxiLiteBus, AxiLiteMaster, AxiSlave, AxiStreamBus,
                           AxiStreamFrame, AxiStreamSink, AxiStreamSource)
from cocotbext.axi.constants import AxiResp

from ..driver.bus import BusError
from ..driver.hostmem import HostMemory, HostMemoryBus
from .wire_api import Wire

__all__ = ["TB", "CocotbBus", "CocotbWire", "CLOCK_NS"]

#: 125 MHz: the core clock the board targets; simulation time is only a label.
CLOCK_NS = 8
#: Cycles a wait may take before it counts as a hang.
DEFAULT_BUDGET = 2_000_000


class CocotbBus(HostMemoryBus):
    """The driver's :class:`~tlsnic.driver.bus.Bus` over the gateware."""

    def __init__(self, tb, memory, budget=DEFAULT_BUDGET):
        self.tb = tb
        self.memory = memory
        self.budget = budget

    async def read32(self, addr):
        resp = await self.tb.csr.read(addr, 4)
        if resp.resp != AxiResp.OKAY:
            raise BusError(f"CSR read at {addr:#06x}: {AxiResp(resp.resp).name}")
        return int.from_bytes(resp.data, "little")

    async def write32(self, addr, value):
        resp = await self.tb.csr.write(addr, int(value).to_bytes(4, "little"))
        if resp.resp != AxiResp.OKAY:
            raise BusError(f"CSR write at {addr:#06x}: {AxiResp(resp.resp).name}")

    async def wait_irq(self):
        if self.tb.dut.irq.value:
            return
        rise = RisingEdge(self.tb.dut.irq)
        timeout = ClockCycles(self.tb.dut.clk, self.budget)
        if await First(rise, timeout) is timeout:
            raise TimeoutError(f"no interrupt within {self.budget} cycles")


class CocotbWire(Wire):
    """The scenarios' :class:`Wire` over the AXI4-Stream ports."""

    def __init__(self, tb, budget=DEFAULT_BUDGET):
        self.tb = tb
        self.budget = budget

    async def send(self, frame, port=0):
        await self.tb.rx[port].send(AxiStreamFrame(bytes(frame)))

    async def recv(self, port=0):
        try:
            frame = await with_timeout(self.tb.tx[port].recv(), self.budget * CLOCK_NS, "ns")
        except cocotb.triggers.SimTimeoutError:
            raise TimeoutError(f"no frame on port {port} within {self.budget} cycles") from None
        return bytes(frame.tdata)

    def pending(self, port=0):
        return self.tb.tx[port].count()


class TB:
    """Testbench for :class:`tlsnic.hdl.top.Nic`.

    Parameters
    ----------
    dut : cocotb handle of the ``nic`` top
    memory : HostMemory or None
        Host RAM; a fresh one by default.
    ports : int
    idle : bool
        Insert random idle cycles on the RX stream source.
    backpressure : bool
        Insert random back-pressure on the TX stream sinks.
    """

    def __init__(self, dut, memory=None, ports=1, *, idle=False, backpressure=False, seed=1):
        self.dut = dut
        self.log = logging.getLogger("cocotb.tb")
        # The bus models log a banner and every transfer at INFO/DEBUG; a
        # regression log should show failures, not traffic.
        logging.getLogger(f"cocotb.{dut._name}").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.")
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, "ns").start())
        self.memory = memory or HostMemory()
        self.csr = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "csr_"), dut.clk, dut.rst)
        self.dma = AxiSlave(AxiBus.from_prefix(dut, "dma_"), dut.clk, dut.rst,
                            target=self.memory.space)
        self.tx = [AxiStreamSink(AxiStreamBus.from_prefix(dut, f"tx__{i}_"), dut.clk, dut.rst)
                   for i in range(ports)]
        self.rx = [AxiStreamSource(AxiStreamBus.from_prefix(dut, f"rx__{i}_"), dut.clk, dut.rst)
                   for i in range(ports)]
        rng = random.Random(seed)
        if idle:
            for source in self.rx:
                source.set_pause_generator(itertools.cycle(rng.random() < 0.3 for _ in range(97)))
        if backpressure:
            for sink in self.tx:
                sink.set_pause_generator(itertools.cycle(rng.random() < 0.3 for _ in range(89)))
        self.bus = CocotbBus(self, self.memory)
        self.wire = CocotbWire(self)

    def use_memory(self, memory):
        """Give the card a fresh host RAM (between scenarios of one simulation)."""
        self.memory = memory
        self.bus.memory = memory
        self.dma.read_if.target = memory.space
        self.dma.write_if.target = memory.space

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def cycles(self):
        """Cycles simulated so far."""
        return int(cocotb.utils.get_sim_time("ns") // CLOCK_NS)
