"""AXI4-Lite subordinate to a simple register bus.

One access at a time: a write takes its address and data together and answers
on B; a read answers on R the cycle after its address. The register decode
lives with whoever owns the registers (``hdl/top.py``): it sees ``addr`` with a
one-cycle ``write`` or ``read`` strobe, returns ``rdata`` combinationally and
says ``error`` for an address it does not decode (answered with SLVERR).
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AxiLiteSignature, AxiResp

__all__ = ["CsrBridge"]


class CsrBridge(wiring.Component):
    def __init__(self, *, addr_width=16):
        super().__init__({
            "axil":  In(AxiLiteSignature(addr_width=addr_width)),
            "addr":  Out(addr_width),
            "wdata": Out(32),
            "write": Out(1),
            "read":  Out(1),
            "rdata": In(32),
            "error": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.axil
        with m.FSM():
            with m.State("IDLE"):
                with m.If(bus.awvalid & bus.wvalid):
                    m.d.comb += [bus.awready.eq(1), bus.wready.eq(1),
                                 self.addr.eq(bus.awaddr), self.wdata.eq(bus.wdata),
                                 self.write.eq(1)]
                    m.d.sync += [bus.bvalid.eq(1),
                                 bus.bresp.eq(Mux(self.error, AxiResp.SLVERR, AxiResp.OKAY))]
                    m.next = "WRITE_RESP"
                with m.Elif(bus.arvalid):
                    m.d.comb += [bus.arready.eq(1), self.addr.eq(bus.araddr), self.read.eq(1)]
                    m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(self.rdata),
                                 bus.rresp.eq(Mux(self.error, AxiResp.SLVERR, AxiResp.OKAY))]
                    m.next = "READ_RESP"
            with m.State("WRITE_RESP"):
                with m.If(bus.bready):
                    m.d.sync += bus.bvalid.eq(0)
                    m.next = "IDLE"
            with m.State("READ_RESP"):
                with m.If(bus.rready):
                    m.d.sync += bus.rvalid.eq(0)
                    m.next = "IDLE"
        return m
