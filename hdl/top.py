"""The NIC: CSRs, rings, DMA, the TX and RX engines and the network ports.

::

    AXI4-Lite ──> CsrBridge ──> registers, rings, counters, interrupt
                                  │
    TX: TXQ ─> TxEngine ─(DMA rd)─> TlsTx ─> ChecksumEngine ─> packet FIFO ─> ChecksumInsert ─> tx[port]
                                      └─(DMA wr: tag log)
    RX: rx ─> FrameLimiter ─> TcpParser ─> ChecksumEngine ─> packet FIFO ─> RxEngine ─(DMA wr)─> host buffer
                                                                             └─> TlsRx ─┘
                                  │
    DMA: TX and RX engines ─> read / write arbiters ─> DmaReader / DmaWriter ─> AXI4 manager
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tlsnic import abi
from tlsnic.abi import Reg, Queue, Irq, Counter, COUNTER_BASE
from .host.axi import AxiLiteSignature, AxiSignature, AxiStreamSignature
from .host.csr import CsrBridge
from .host.dma import (DmaReader, DmaWriter, DmaArbiter, DmaReadPort, DmaWritePort,
                       READ_MEMBERS, WRITE_MEMBERS)
from .host.queue import Ring
from .host.tx_engine import TxEngine
from .host.rx_engine import RxEngine
from .crypto.share import GcmShare
from .tls.tx import TlsTx
from .tls.rx import TlsRx
from .net.csum_insert import ChecksumInsert
from .net.frame import from_axis, to_axis

__all__ = ["Nic"]

CSR_ADDR_WIDTH = 16


class Nic(wiring.Component):
    """The whole card, minus PHYs.

    Parameters
    ----------
    ports : int
        Network ports (TX and RX stream pairs).
    fifo_words : int
        Depth of each packet FIFO in 64-bit words.
    tx_contexts : int
        TLS transmit contexts (send tags ``1..tx_contexts``).
    rx_contexts : int
        TLS receive contexts (receive tags ``1..rx_contexts``); 0 builds no
        receive engine (``CAP_TLS_RX`` clear, the RX control opcodes BAD_OPCODE).
    shared_gcm : bool
        With a receive engine: one AES-GCM engine for both directions
        (:class:`~.crypto.share.GcmShare`), the board configuration (one
        full-rate engine is 114 EBR). Same behaviour, less crypto throughput.
    gcm_aes_cores : int
        The AES of the GCM engine(s): 0 the unrolled pipeline (a block per
        clock), n iterative cores (a block every ``ceil(15 / n)`` clocks, the
        boards' rate; :class:`~.crypto.gcm.GcmEngine`).
    table_fold : int
        Block RAM rows per TLS context-table entry (default 1; 2 takes half
        the EBR for a few clocks a segment; :class:`~.tls.table.ContextTable`).

    Members
    -------
    csr : In(AxiLiteSignature)
        Registers (``tlsnic.abi.Reg`` and friends).
    dma : Out(AxiSignature)
        Host memory, 64-bit data and addresses.
    tx, rx : AXI4-Stream ports, ``tx[i]`` out of the card and ``rx[i]`` into it.
    irq : Out(1)
        Level interrupt: ``|(IRQ_STATUS & IRQ_ENABLE)``.
    """
    def __init__(self, *, ports=1, fifo_words=2048, tx_contexts=256, rx_contexts=0,
                 shared_gcm=False, gcm_aes_cores=0, table_fold=1):
        assert 1 <= ports <= 4, "port numbers are 2 bits wide inside the card"
        self.n_ports = ports
        self.fifo_words = fifo_words
        self.tx_contexts = tx_contexts
        self.rx_contexts = rx_contexts
        self.shared_gcm = shared_gcm and rx_contexts != 0
        self.gcm_aes_cores = gcm_aes_cores
        self.table_fold = table_fold
        super().__init__({
            "csr": In(AxiLiteSignature(addr_width=CSR_ADDR_WIDTH)),
            "dma": Out(AxiSignature(addr_width=64, data_width=64)),
            "tx": Out(AxiStreamSignature(data_width=64)).array(ports),
            "rx": In(AxiStreamSignature(data_width=64)).array(ports),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = CsrBridge(addr_width=CSR_ADDR_WIDTH)
        wiring.connect(m, wiring.flipped(self.csr), bridge.axil)

        rings = {q: Ring(completion=q in (Queue.TXCQ, Queue.RXCQ)) for q in Queue}
        for q, ring in rings.items():
            m.submodules[q.name.lower()] = ring

        # ---- DMA ----
        m.submodules.reader = reader = DmaReader()
        m.submodules.writer = writer = DmaWriter()
        m.submodules.rd_arb = rd_arb = DmaArbiter(DmaReadPort(), 2)
        m.submodules.wr_arb = wr_arb = DmaArbiter(DmaWritePort(), 3)
        wiring.connect(m, rd_arb.engine, reader.port)
        wiring.connect(m, wr_arb.engine, writer.port)
        for name in READ_MEMBERS:
            dst, src = (getattr(reader.axi, name), getattr(self.dma, name))
            if name in ("arready", "rid", "rdata", "rresp", "rlast", "rvalid"):
                m.d.comb += dst.eq(src)
            else:
                m.d.comb += src.eq(dst)
        for name in WRITE_MEMBERS:
            dst, src = (getattr(writer.axi, name), getattr(self.dma, name))
            if name in ("awready", "wready", "bid", "bresp", "bvalid"):
                m.d.comb += dst.eq(src)
            else:
                m.d.comb += src.eq(dst)

        # ---- TX ----
        rx_tls = self.rx_contexts != 0
        m.submodules.tx_engine = txe = TxEngine(ports=self.n_ports, fifo_words=self.fifo_words,
                                                rx_tls=rx_tls)
        m.submodules.tx_out = tx_out = ChecksumInsert(ports=self.n_ports)
        shared = self.shared_gcm
        m.submodules.tls_tx = tls_tx = TlsTx(contexts=self.tx_contexts, ports=self.n_ports,
                                             shared_gcm=shared, aes_cores=self.gcm_aes_cores,
                                             table_fold=self.table_fold)
        wiring.connect(m, txe.tls, tls_tx.host)
        wiring.connect(m, tls_tx.dma_wr, wr_arb.clients[2])
        wiring.connect(m, txe.dma_rd, rd_arb.clients[0])
        wiring.connect(m, txe.dma_wr, wr_arb.clients[0])
        wiring.connect(m, txe.frames, tx_out.frames)
        wiring.connect(m, txe.meta, tx_out.meta)
        for i in range(self.n_ports):
            to_axis(m, tx_out.ports[i], self.tx[i])
        txq, txcq = rings[Queue.TXQ], rings[Queue.TXCQ]
        m.d.comb += [
            txe.txq_ready.eq(txq.ready), txe.txq_addr.eq(txq.entry_addr),
            txe.txq_index.eq(txq.card_index), txq.advance.eq(txe.txq_advance),
            txe.txcq_ready.eq(txcq.ready), txe.txcq_addr.eq(txcq.entry_addr),
            txe.txcq_phase.eq(txcq.phase), txcq.advance.eq(txe.txcq_advance),
        ]

        # ---- RX ----
        m.submodules.rx_engine = rxe = RxEngine(fifo_words=self.fifo_words, ports=self.n_ports,
                                                tls=rx_tls)
        if rx_tls:
            m.submodules.tls_rx = tls_rx = TlsRx(contexts=self.rx_contexts, ports=self.n_ports,
                                                 shared_gcm=shared,
                                                 aes_cores=self.gcm_aes_cores,
                                                 table_fold=self.table_fold)
            if shared:
                m.submodules.gcm = gcm = GcmShare(aes_cores=self.gcm_aes_cores)
                wiring.connect(m, tls_tx.gcm, gcm.users[0])
                wiring.connect(m, tls_rx.gcm, gcm.users[1])
            wiring.connect(m, txe.tls_rx, tls_rx.ctl)
            wiring.connect(m, rxe.tls, tls_rx.rx)
        for i in range(self.n_ports):
            from_axis(m, self.rx[i], rxe.wire[i])
        wiring.connect(m, rxe.dma_rd, rd_arb.clients[1])
        wiring.connect(m, rxe.dma_wr, wr_arb.clients[1])
        rxq, rxcq = rings[Queue.RXQ], rings[Queue.RXCQ]
        m.d.comb += [
            rxe.rxq_ready.eq(rxq.ready), rxe.rxq_addr.eq(rxq.entry_addr),
            rxe.rxq_index.eq(rxq.card_index), rxq.advance.eq(rxe.rxq_advance),
            rxe.rxcq_ready.eq(rxcq.ready), rxe.rxcq_addr.eq(rxcq.entry_addr),
            rxe.rxcq_phase.eq(rxcq.phase), rxcq.advance.eq(rxe.rxcq_advance),
        ]

        # ---- statistics ----
        # Each counter advances on a strobe, by one or by a byte count that is
        # only meaningful while the strobe is high.
        events = {
            Counter.TX_PACKETS: (tx_out.sent, 1),
            Counter.TX_BYTES: (tx_out.sent, tx_out.sent_bytes),
            Counter.TX_DESC_ERRORS: (txe.desc_error, 1),
            Counter.TX_DMA_ERRORS: (txe.dma_error | tls_tx.ev_dma_error, 1),
            Counter.TX_CSUM_IP: (tx_out.csum_ip, 1),
            Counter.TX_CSUM_L4: (tx_out.csum_l4, 1),
            Counter.RX_PACKETS: (rxe.received, 1),
            Counter.RX_BYTES: (rxe.received, rxe.received_bytes),
            Counter.RX_TRUNCATED: (rxe.truncated, 1),
            Counter.RX_DMA_ERRORS: (rxe.dma_error, 1),
            Counter.RX_CSUM_BAD: (rxe.csum_bad, 1),
            Counter.TX_TLS_DROP_BAD_FLOW: (txe.bad_tag | tls_tx.ev_bad_flow, 1),
            Counter.TX_TLS_ENCRYPTED_PACKETS: (tls_tx.ev_encrypted, 1),
            Counter.TX_TLS_ENCRYPTED_BYTES: (tls_tx.ev_encrypted, tls_tx.ev_encrypted_bytes),
            Counter.TX_TLS_RECORDS: (tls_tx.ev_records, tls_tx.ev_records_count),
            Counter.TX_TLS_OOO: (tls_tx.ev_ooo, 1),
            Counter.TX_TLS_DROP_NO_SYNC_DATA: (tls_tx.ev_no_sync, 1),
            Counter.TX_TLS_RESYNC: (tls_tx.ev_resync, 1),
            Counter.TX_TLS_DUMP_PACKETS: (tls_tx.ev_dump, 1),
            Counter.TX_TLS_DUMP_BYTES: (tls_tx.ev_dump, tls_tx.ev_dump_bytes),
            Counter.TX_TLS_CTX: (tls_tx.ev_ctx, 1),
            Counter.TX_TLS_CTX_FREED: (tls_tx.ev_ctx_freed, 1),
        }
        if rx_tls:
            decrypted = tls_rx.ev_frame & (tls_rx.ev_decrypted_bytes != 0)
            events.update({
                Counter.RX_TLS_DECRYPTED_PACKETS: (decrypted, 1),
                Counter.RX_TLS_DECRYPTED_BYTES: (decrypted, tls_rx.ev_decrypted_bytes),
                Counter.RX_TLS_RECORDS: (tls_rx.ev_frame, tls_rx.ev_records),
                Counter.RX_TLS_AUTH_FAIL: (tls_rx.ev_frame, tls_rx.ev_auth_fail),
                Counter.RX_TLS_RESYNC_REQ: (tls_rx.ev_frame, tls_rx.ev_resync_req),
                Counter.RX_TLS_RESYNC_OK: (tls_rx.ev_resync_ok, 1),
                Counter.RX_TLS_RESYNC_FAIL: (tls_rx.ev_resync_fail, 1),
                Counter.RX_TLS_LOST_SYNC: (tls_rx.ev_frame, tls_rx.ev_lost_sync),
                Counter.RX_TLS_OOO: (tls_rx.ev_ooo, 1),
                Counter.RX_TLS_CTX: (tls_rx.ev_ctx, 1),
                Counter.RX_TLS_CTX_FREED: (tls_rx.ev_ctx_freed, 1),
            })
        counters = {c: Signal(32, name=f"count_{c.name.lower()}") for c in Counter}
        for c, (strobe, amount) in events.items():
            with m.If(strobe):
                m.d.sync += counters[c].eq(counters[c] + amount)

        # ---- interrupts ----
        irq_status = Signal(len(Irq))
        irq_enable = Signal(len(Irq))
        raised = Cat(txe.txcq_advance, rxe.rxcq_advance)
        m.d.comb += self.irq.eq((irq_status & irq_enable).any())

        # ---- register decode ----
        scratch = Signal(32)
        error_status = Signal(2)
        error_cleared = Signal(2)
        addr = bridge.addr
        block = addr & ~0xFF
        offset = addr & 0xFF
        cleared = Signal(len(Irq))
        with m.If(bridge.write & (addr == Reg.IRQ_STATUS)):
            m.d.comb += cleared.eq(bridge.wdata)
        m.d.sync += irq_status.eq((irq_status & ~cleared) | raised)

        for q, ring in rings.items():
            m.d.comb += [ring.csr_offset.eq(offset), ring.csr_wdata.eq(bridge.wdata),
                         ring.csr_write.eq(bridge.write & (block == q))]

        known = Signal()
        with m.Switch(addr):
            constant_regs = {
                Reg.ID: abi.ID_MAGIC,
                Reg.VERSION: abi.VERSION,
                Reg.CAP_DATAPATH: 8 | (8 << 8),
                Reg.CAP_QUEUES: 1 | (1 << 8) | (self.n_ports << 16) | (abi.MAX_LOG_RING << 24),
                Reg.CAP_TLS: (abi.CAP_TLS_AES_128_GCM | abi.CAP_TLS_AES_256_GCM | abi.CAP_TLS_1_2
                              | abi.CAP_TLS_1_3 | abi.CAP_TLS_TX
                              | (abi.CAP_TLS_RX if rx_tls else 0)),
                Reg.CAP_CONTEXTS: self.tx_contexts | (self.rx_contexts << 16),
                Reg.CAP_MAX_FRAME: abi.MAX_FRAME,
            }
            for reg, value in constant_regs.items():
                with m.Case(reg):
                    m.d.comb += [bridge.rdata.eq(value), known.eq(1)]
            with m.Case(Reg.SCRATCH):
                m.d.comb += [bridge.rdata.eq(scratch), known.eq(1)]
                with m.If(bridge.write):
                    m.d.sync += scratch.eq(bridge.wdata)
            with m.Case(Reg.IRQ_STATUS):
                m.d.comb += [bridge.rdata.eq(irq_status), known.eq(1)]
            with m.Case(Reg.IRQ_ENABLE):
                m.d.comb += [bridge.rdata.eq(irq_enable), known.eq(1)]
                with m.If(bridge.write):
                    m.d.sync += irq_enable.eq(bridge.wdata)
            with m.Case(Reg.ERROR_STATUS):
                m.d.comb += [bridge.rdata.eq(error_status), known.eq(1)]
                with m.If(bridge.write):
                    m.d.comb += error_cleared.eq(bridge.wdata)
            for q, ring in rings.items():
                for r in abi.QueueReg:
                    with m.Case(q + r):
                        m.d.comb += [bridge.rdata.eq(ring.csr_rdata), known.eq(1)]
            for c in Counter:
                with m.Case(COUNTER_BASE + 4 * c):
                    m.d.comb += [bridge.rdata.eq(counters[c]), known.eq(1)]
            with m.Default():
                pass
        m.d.comb += bridge.error.eq(~known)
        raised_errors = Cat((bridge.write | bridge.read) & ~known,
                            txe.completion_lost | rxe.completion_lost)
        m.d.sync += error_status.eq((error_status & ~error_cleared) | raised_errors)
        return m


def make_nic(**params):
    """Factory for :class:`cosim.build.Design`."""
    return Nic(**params)
