"""Host memory on the board: a window of on-chip RAM that the NIC's DMA reaches.

On a PC the card's DMA master reads and writes the host's RAM. On the board
the "host" is at the far end of a slow serial link, so the rings and buffers
live in block RAM instead: :class:`WindowRam` answers the NIC's AXI4 manager
port for addresses ``[base, base + size)`` and lets the host-link bridge read
and write the same words through a second, simple port.

Design notes
------------

* One read and one write port on one RAM (a simple dual-port DP16KD layout),
  shared by everybody: the AXI side serves one read burst and one write burst
  at a time, each on its own port and independently of the other, and the
  bridge is served when neither is running, with priority (no burst starts
  while it asks). A bridge access thus waits at most one burst each way; the
  bridge is a thousand times slower than that anyway.
* Reads stream at one beat per clock (the RAM's output register is the R
  channel's payload register, held while ``rready`` is low).
* An address outside the window answers SLVERR, beat by beat, and a write
  there changes nothing: the same rule as :class:`tlsnic.driver.hostmem.HostMemory`
  (unmapped = DMA error), so the NIC's ``*_DMA_ERRORS`` counters mean the same
  on the board as in simulation.
* Only full-width (64-bit) INCR bursts are used by the NIC's DMA engines;
  other sizes are treated as 64-bit beats.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..host.axi import AxiResp, AxiSignature

__all__ = ["WindowPortSignature", "WindowRam"]


class WindowPortSignature(wiring.Signature):
    """The bridge's port: a request, acknowledged one or more clocks later.

    ``addr`` is a word index (byte offset >> 3). ``rdata`` is valid with ``ack``.
    """
    def __init__(self, addr_width):
        super().__init__({
            "req": Out(1), "we": Out(1), "addr": Out(addr_width),
            "wdata": Out(64), "wstrb": Out(8),
            "ack": In(1), "rdata": In(64),
        })


class WindowRam(wiring.Component):
    """Parameters
    ----------
    base : int
        DMA address of the first byte (aligned to ``size``).
    size : int
        Bytes, a power of two, at least 64.

    Members
    -------
    axi : In(AxiSignature(addr_width=64, data_width=64))
        To the NIC's ``dma`` port.
    bridge : In(WindowPortSignature)
    """
    def __init__(self, *, base=0x1_0000_0000, size=64 * 1024):
        assert size >= 64 and size & (size - 1) == 0 and base % size == 0
        self.base = base
        self.size = size
        self.words = size // 8
        self.addr_width = (self.words - 1).bit_length()
        super().__init__({
            "axi": In(AxiSignature(addr_width=64, data_width=64)),
            "bridge": In(WindowPortSignature(self.addr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=64, depth=self.words, init=[])
        wp = mem.write_port(granularity=8)
        rp = mem.read_port(transparent_for=())
        axi, br = self.axi, self.bridge

        # Reads and writes are served independently (the RAM has a port for
        # each): a read burst the NIC holds with ``rready`` low never blocks
        # its writes. The two TLS engines share one GCM engine on the board,
        # and the transmit engine's read burst can wait on the receive
        # engine's writes (see hdl/crypto/share.py).
        raddr = Signal(64)          # byte address of the next read beat
        waddr = Signal(64)          # byte address of the next write beat
        beats = Signal(9)           # read beats still to fetch
        rident = Signal.like(axi.arid)
        wident = Signal.like(axi.awid)
        werr = Signal()

        def inside(a):
            return (a[self.addr_width + 3:] == self.base >> (self.addr_width + 3))

        def word(a):
            return a[3:3 + self.addr_width]

        m.d.sync += br.ack.eq(0)
        m.d.comb += br.rdata.eq(rp.data)
        # The bridge goes first between bursts: while it asks, no burst starts.
        bridge_waits = Signal()
        m.d.comb += bridge_waits.eq(br.req & ~br.ack)
        read_idle, write_idle = Signal(), Signal()

        with m.FSM(name="write"):
            with m.State("IDLE"):
                m.d.comb += write_idle.eq(1)
                with m.If(axi.awvalid & ~bridge_waits):
                    m.d.comb += axi.awready.eq(1)
                    m.d.sync += [waddr.eq(axi.awaddr), wident.eq(axi.awid), werr.eq(0)]
                    m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += [axi.wready.eq(1), wp.addr.eq(word(waddr)), wp.data.eq(axi.wdata)]
                with m.If(axi.wvalid):
                    m.d.comb += wp.en.eq(Mux(inside(waddr), axi.wstrb, 0))
                    m.d.sync += [waddr.eq(waddr + 8), werr.eq(werr | ~inside(waddr))]
                    with m.If(axi.wlast):
                        m.next = "BRESP"
            with m.State("BRESP"):
                m.d.comb += [axi.bvalid.eq(1), axi.bid.eq(wident),
                             axi.bresp.eq(Mux(werr, AxiResp.SLVERR, AxiResp.OKAY))]
                with m.If(axi.bready):
                    m.next = "IDLE"

        with m.FSM(name="read"):
            with m.State("IDLE"):
                m.d.comb += read_idle.eq(1)
                with m.If(axi.arvalid & ~bridge_waits):
                    m.d.comb += axi.arready.eq(1)
                    m.d.sync += [raddr.eq(axi.araddr), rident.eq(axi.arid),
                                 beats.eq(axi.arlen + 1)]
                    m.next = "READ"
            with m.State("READ"):
                rerr = Signal()
                last = Signal()
                advance = (beats != 0) & (~axi.rvalid | axi.rready)
                m.d.comb += [rp.addr.eq(word(raddr)), rp.en.eq(advance),
                             axi.rdata.eq(Mux(rerr, 0, rp.data)), axi.rid.eq(rident),
                             axi.rresp.eq(Mux(rerr, AxiResp.SLVERR, AxiResp.OKAY)),
                             axi.rlast.eq(last)]
                with m.If(advance):
                    m.d.sync += [raddr.eq(raddr + 8), beats.eq(beats - 1), axi.rvalid.eq(1),
                                 rerr.eq(~inside(raddr)), last.eq(beats == 1)]
                with m.Elif(axi.rready):
                    m.d.sync += axi.rvalid.eq(0)
                    with m.If(last & axi.rvalid):
                        m.next = "IDLE"

        with m.If(bridge_waits & read_idle & write_idle):
            m.d.comb += [rp.addr.eq(br.addr), rp.en.eq(~br.we),
                         wp.addr.eq(br.addr), wp.data.eq(br.wdata),
                         wp.en.eq(Mux(br.we, br.wstrb, 0))]
            m.d.sync += br.ack.eq(1)
        return m
