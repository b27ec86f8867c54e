"""The host link's gateware end: UART requests to the CSR bus, the window and board registers.

The protocol is defined in :mod:`tlsnic.link` (read it first); this module
carries it out. One request at a time, strictly request then response.

::

    rx pin ─> UartRx ─> SyncFIFO(16) ─> ┌──────────────┐ ─> AXI4-Lite manager ─> NIC csr
                                        │  UartBridge  │ ─> WindowRam bridge port
    tx pin <─ UartTx <───────────────── └──────────────┘ ─> board registers

Design notes
------------

* **Nothing waits forever.** Every wait has a bound: the quiet-line timer
  (``idle`` clocks without a received byte) ends a half-received request
  (``TIMEOUT``) and ends the draining after a bad one; the CSR port gets
  ``csr_timeout`` clocks to answer (``BUS_ERROR``); the window answers within
  one DMA burst.
* **Check before acting.** The header's CRC is checked before the address or
  length is used; CSR and board writes keep their four data bytes until the
  data CRC is good. Memory writes go straight to the window as they arrive,
  since the window is the only place they can reach (see :mod:`tlsnic.link`).
* **A small receive FIFO** (16 bytes) decouples the UART from the window port,
  which may be busy for one DMA burst: at any baud rate below the core clock
  divided by about 20 no byte can be lost to it.
* The same CRC-16 register serves the header, the data block and the response
  in turn; the matrix form (:mod:`.crc`) costs a dozen LUTs.
"""

from amaranth import *
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from tlsnic.link import Cmd, Status, MAX_MEM, HEADER_BYTES
from ..host.axi import AxiLiteSignature, AxiResp
from .crc import CRC16_CCITT, crc_byte
from .uart import UartRx, UartTx
from .window import WindowPortSignature

__all__ = ["BoardRegSignature", "UartBridge"]


class BoardRegSignature(wiring.Signature):
    """Board registers: ``rdata`` is combinational from ``addr``; ``write``
    and ``read`` are one-cycle strobes."""
    def __init__(self):
        super().__init__({
            "addr": Out(16), "wdata": Out(32), "write": Out(1), "read": Out(1),
            "rdata": In(32),
        })


class UartBridge(wiring.Component):
    """Parameters
    ----------
    divisor : int
        Clocks per UART bit (e.g. 125 MHz / 1 Mbaud = 125).
    window_size : int
        Bytes of the host-memory window (``MEM_*`` offsets must stay inside).
    idle : int
        Clocks of quiet line that end a request (default: 4 byte times).
        Use a value above the host's largest gap inside one request.
    csr_timeout : int
        Clocks the CSR port has to answer one access.

    Members
    -------
    rx : In(1), tx : Out(1)
        UART pins (idle high).
    csr : Out(AxiLiteSignature(addr_width=16))
    mem : Out(WindowPortSignature)
    board : Out(BoardRegSignature)
    """
    def __init__(self, *, divisor, window_size, idle=None, csr_timeout=1024):
        self.divisor = divisor
        self.window_size = window_size
        self.idle = idle if idle is not None else 40 * divisor
        self.csr_timeout = csr_timeout
        self.window_addr_width = (window_size // 8 - 1).bit_length()
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "csr": Out(AxiLiteSignature(addr_width=16)),
            "mem": Out(WindowPortSignature(self.window_addr_width)),
            "board": Out(BoardRegSignature()),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UartRx(self.divisor)
        m.submodules.utx = utx = UartTx(self.divisor)
        m.submodules.rxq = rxq = fifo.SyncFIFOBuffered(width=9, depth=16)
        m.d.comb += [
            urx.rx.eq(self.rx), self.tx.eq(utx.tx),
            rxq.w_data.eq(urx.bytes.payload.as_value()), rxq.w_en.eq(urx.bytes.valid),
        ]
        in_byte, in_ferr = rxq.r_data[:8], rxq.r_data[8]

        # Quiet-line timer: clocks since the UART last delivered a byte.
        quiet = Signal(range(self.idle + 1))
        with m.If(urx.bytes.valid):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != self.idle):
            m.d.sync += quiet.eq(quiet + 1)
        line_quiet = (quiet == self.idle) & ~rxq.r_rdy

        hdr = Signal(64)                    # cmd, seq, addr[4], len[2]
        cmd, seq, addr, length = hdr[0:8], hdr[8:16], hdr[16:48], hdr[48:64]
        crc = Signal(16, init=CRC16_CCITT.init)
        cnt = Signal(range(max(MAX_MEM, HEADER_BYTES) + 3))
        status = Signal(8)
        rdata = Signal(32)                  # CSR / board read data, also write data
        mem_byte = Signal(8)
        fetched = Signal()                  # mem_byte holds the next response byte
        timer = Signal(range(self.csr_timeout + 1))

        crc_in = crc_byte(CRC16_CCITT, crc, in_byte)
        data_idx = Signal(16)               # response data byte being sent
        m.d.comb += data_idx.eq(cnt - 2)
        offset = Signal(32)
        m.d.comb += offset.eq(addr + cnt)   # window byte for data byte ``cnt``

        is_write = (cmd == Cmd.CSR_WRITE) | (cmd == Cmd.MEM_WRITE) | (cmd == Cmd.BOARD_WRITE)
        is_mem = (cmd == Cmd.MEM_READ) | (cmd == Cmd.MEM_WRITE)
        is_reg = ((cmd == Cmd.CSR_READ) | (cmd == Cmd.CSR_WRITE) |
                  (cmd == Cmd.BOARD_READ) | (cmd == Cmd.BOARD_WRITE))
        # Response data bytes: only for a successful read.
        resp_len = Signal(16)
        m.d.comb += resp_len.eq(Mux((status == Status.OK) & ~is_write, length, 0))

        # Outgoing byte register feeding the UART transmitter.
        out_valid = Signal()
        out_byte = Signal(8)
        m.d.comb += [utx.bytes.valid.eq(out_valid), utx.bytes.payload.eq(out_byte)]
        with m.If(utx.bytes.ready & out_valid):
            m.d.sync += out_valid.eq(0)

        def fail(m, code, drain=True):
            m.d.sync += status.eq(code)
            m.next = "DRAIN" if drain else "RESPOND"

        m.d.comb += [self.board.addr.eq(addr[:16]), self.board.wdata.eq(rdata),
                     self.csr.araddr.eq(addr[:16]), self.csr.awaddr.eq(addr[:16]),
                     self.csr.wdata.eq(rdata), self.csr.wstrb.eq(0xF)]

        with m.FSM():
            with m.State("HEADER"):
                with m.If(rxq.r_rdy):
                    m.d.comb += rxq.r_en.eq(1)
                    m.d.sync += [crc.eq(crc_in), cnt.eq(cnt + 1)]
                    with m.If(cnt < 8):
                        m.d.sync += hdr.word_select(cnt[:3], 8).eq(in_byte)
                    with m.If(in_ferr):
                        fail(m, Status.BAD_CRC)
                    with m.Elif(cnt == HEADER_BYTES - 1):
                        with m.If(crc_in != 0):
                            fail(m, Status.BAD_CRC)
                        with m.Else():
                            m.next = "CHECK"
                with m.Elif(line_quiet & (cnt != 0)):
                    fail(m, Status.TIMEOUT, drain=False)
            with m.State("CHECK"):
                m.d.sync += [cnt.eq(0), crc.eq(CRC16_CCITT.init), status.eq(Status.OK),
                             timer.eq(0)]
                reg_ok = is_reg & (length == 4) & (addr < 0x10000)
                mem_ok = is_mem & (length != 0) & (length <= MAX_MEM) & \
                    (addr + length <= self.window_size)
                with m.If(~reg_ok & ~mem_ok):
                    fail(m, Status.BAD_REQUEST)
                with m.Elif(is_write):
                    m.next = "DATA"
                with m.Else():
                    m.next = "EXECUTE"
            with m.State("DATA"):
                with m.If(self.mem.req):
                    with m.If(self.mem.ack):
                        m.d.sync += [self.mem.req.eq(0), cnt.eq(cnt + 1)]
                with m.Elif(rxq.r_rdy):
                    m.d.comb += rxq.r_en.eq(1)
                    m.d.sync += crc.eq(crc_in)
                    with m.If(in_ferr):
                        fail(m, Status.BAD_CRC)
                    with m.Elif((cnt < length) & (cmd == Cmd.MEM_WRITE)):
                        # Counted once the window took the byte.
                        m.d.sync += [self.mem.req.eq(1), self.mem.we.eq(1),
                                     self.mem.addr.eq(offset[3:]),
                                     self.mem.wdata.eq(in_byte.replicate(8)),
                                     self.mem.wstrb.eq(1 << offset[:3])]
                    with m.Else():
                        m.d.sync += cnt.eq(cnt + 1)
                        with m.If(cnt < 4):
                            m.d.sync += rdata.word_select(cnt[:2], 8).eq(in_byte)
                        with m.If(cnt == length + 1):
                            with m.If(crc_in != 0):
                                fail(m, Status.BAD_CRC)
                            with m.Else():
                                m.next = "EXECUTE"
                with m.Elif(line_quiet):
                    fail(m, Status.TIMEOUT, drain=False)
            with m.State("EXECUTE"):
                m.d.sync += timer.eq(timer + 1)
                with m.If(timer == self.csr_timeout):
                    fail(m, Status.BUS_ERROR, drain=False)
                with m.Elif(cmd == Cmd.CSR_READ):
                    with m.If(timer == 0):
                        m.d.sync += self.csr.arvalid.eq(1)
                    with m.If(self.csr.arvalid & self.csr.arready):
                        m.d.sync += [self.csr.arvalid.eq(0), self.csr.rready.eq(1)]
                    with m.If(self.csr.rready & self.csr.rvalid):
                        m.d.sync += [self.csr.rready.eq(0), rdata.eq(self.csr.rdata),
                                     status.eq(Mux(self.csr.rresp == AxiResp.OKAY,
                                                   Status.OK, Status.BUS_ERROR))]
                        m.next = "RESPOND"
                with m.Elif(cmd == Cmd.CSR_WRITE):
                    with m.If(timer == 0):
                        m.d.sync += [self.csr.awvalid.eq(1), self.csr.wvalid.eq(1),
                                     self.csr.bready.eq(1)]
                    with m.If(self.csr.awvalid & self.csr.awready):
                        m.d.sync += self.csr.awvalid.eq(0)
                    with m.If(self.csr.wvalid & self.csr.wready):
                        m.d.sync += self.csr.wvalid.eq(0)
                    with m.If(self.csr.bready & self.csr.bvalid):
                        m.d.sync += [self.csr.bready.eq(0),
                                     status.eq(Mux(self.csr.bresp == AxiResp.OKAY,
                                                   Status.OK, Status.BUS_ERROR))]
                        m.next = "RESPOND"
                with m.Elif(cmd == Cmd.BOARD_READ):
                    m.d.comb += self.board.read.eq(1)
                    m.d.sync += rdata.eq(self.board.rdata)
                    m.next = "RESPOND"
                with m.Elif(cmd == Cmd.BOARD_WRITE):
                    m.d.comb += self.board.write.eq(1)
                    m.next = "RESPOND"
                with m.Else():
                    m.next = "RESPOND"
            with m.State("DRAIN"):
                # Swallow the rest of a damaged request, then answer once.
                m.d.comb += rxq.r_en.eq(rxq.r_rdy)
                with m.If(line_quiet):
                    m.next = "RESPOND"
            with m.State("RESPOND"):
                # Nothing of the CSR handshake may outlive its request.
                m.d.sync += [self.csr.arvalid.eq(0), self.csr.rready.eq(0),
                             self.csr.awvalid.eq(0), self.csr.wvalid.eq(0),
                             self.csr.bready.eq(0),
                             cnt.eq(0), crc.eq(CRC16_CCITT.init)]
                m.next = "SEND"
            with m.State("SEND"):
                # cnt: 0 status, 1 seq, 2.. data, then the two CRC bytes.
                byte = Signal(8)
                with m.If(cnt == 0):
                    m.d.comb += byte.eq(status)
                with m.Elif(cnt == 1):
                    m.d.comb += byte.eq(seq)
                with m.Elif(is_mem):
                    m.d.comb += byte.eq(mem_byte)
                with m.Else():
                    m.d.comb += byte.eq(rdata.word_select(data_idx[:2], 8))
                is_data = (cnt >= 2) & (data_idx < resp_len)
                crc_out = crc_byte(CRC16_CCITT, crc, byte)
                with m.If(~out_valid):
                    with m.If(is_data & is_mem & ~fetched):
                        # Fetch the window word holding this byte first.
                        m.d.sync += [self.mem.req.eq(1), self.mem.we.eq(0),
                                     self.mem.addr.eq((addr + data_idx)[3:])]
                        m.next = "FETCH"
                    with m.Elif(cnt < 2 + resp_len):
                        m.d.sync += [out_valid.eq(1), out_byte.eq(byte), crc.eq(crc_out),
                                     cnt.eq(cnt + 1), fetched.eq(0)]
                    with m.Elif(cnt == 2 + resp_len):
                        m.d.sync += [out_valid.eq(1), out_byte.eq(crc[8:]), cnt.eq(cnt + 1)]
                    with m.Else():
                        m.d.sync += [out_valid.eq(1), out_byte.eq(crc[:8]), cnt.eq(0),
                                     crc.eq(CRC16_CCITT.init)]
                        m.next = "HEADER"
            with m.State("FETCH"):
                with m.If(self.mem.ack):
                    lane = (addr + data_idx)[:3]
                    m.d.sync += [self.mem.req.eq(0), fetched.eq(1),
                                 mem_byte.eq(self.mem.rdata.word_select(lane, 8))]
                    m.next = "SEND"
        return m
