"""AMBA AXI signatures: AXI4-Lite (CSRs), AXI4 (DMA) and AXI4-Stream (wire).

Member names are the AMBA signal names in lower case, so a flattened port such
as ``csr__awaddr`` is found by cocotbext-axi's ``from_prefix(dut, "csr_")``.
Each signature is written from the manager's (master's) side; a subordinate
port is ``In(signature)``.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AxiResp", "AxiLiteSignature", "AxiSignature", "AxiStreamSignature"]


class AxiResp:
    OKAY   = 0b00
    EXOKAY = 0b01
    SLVERR = 0b10
    DECERR = 0b11


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite, 32-bit data."""
    def __init__(self, *, addr_width):
        self.addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })


class AxiSignature(wiring.Signature):
    """AXI4 with one ID (all transfers in order), INCR bursts."""
    def __init__(self, *, addr_width, data_width, id_width=1):
        self.addr_width = addr_width
        self.data_width = data_width
        strb = data_width // 8
        super().__init__({
            "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
            "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(strb), "wlast": Out(1), "wvalid": Out(1),
            "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
            "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })


class AxiStreamSignature(wiring.Signature):
    """AXI4-Stream with byte enables (``tkeep``) and frame ends (``tlast``)."""
    def __init__(self, *, data_width):
        self.data_width = data_width
        super().__init__({
            "tdata": Out(data_width), "tkeep": Out(data_width // 8), "tlast": Out(1),
            "tvalid": Out(1), "tready": In(1),
        })
