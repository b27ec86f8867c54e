"""TX engine: TX queue descriptors in, frames into the TX packet FIFO, completions out.

Per descriptor: fetch it (one 16-byte DMA read), check it, hand it to the TLS
transmit engine (:class:`~hdl.tls.tx.TlsTx`) as a command, read its bytes
from host memory into it (a frame, or a TLS control block), wait for its
verdict, then write one completion. Frames leave ``TlsTx`` (encrypted where
they are TLS) through the checksum engine into the packet FIFO. A frame is
only started when the FIFO has room for all of it, so the output side never
waits on a frame that cannot finish. A frame that is not to be sent (its read
failed, or the TLS engine dropped it) still flows into the FIFO (its words
must be drained somewhere) but is marked ``drop``: the output side discards
it and it never reaches the wire.

The checks that need no bytes are made here, before anything is read, in the
order the ABI gives: opcode, length, port for a PACKET; tag (range, and live
or free as the opcode needs), DUMP length for the TLS control opcodes.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tlsnic.abi import (TxDescriptor, TxCompletion, TxOpcode, TxStatus, TxFlags,
                        MAX_FRAME, DESC_BYTES, TlsStaticParams, TlsProgressParams,
                        TlsRxResyncParams, layout_bytes)
from ..net.checksum import ChecksumEngine, ChecksumResult
from ..net.frame import FrameWord, WORD_BYTES
from ..tls.tx import TlsTxCommand, TlsTxHost, BUFFER_WORDS as TLS_BUFFER_WORDS
from ..tls.rx import TlsRxControl
from .dma import DmaReadPort, DmaWritePort, read_entry, write_entry

__all__ = ["TxFrameMeta", "TxEngine"]


class TxFrameMeta(data.Struct):
    """What the output side needs to know about a frame in the packet FIFO."""
    csum: ChecksumResult
    flags: TxFlags
    port: 2
    drop: 1


class TxEngine(wiring.Component):
    """Descriptor processing for the TX queue.

    Parameters
    ----------
    ports : int
        Network ports; a descriptor naming another port completes BAD_PORT.
    fifo_words : int
        Depth of the TX packet FIFO in 64-bit words (at least one MAX_FRAME).

    Members
    -------
    txq_*, txcq_* : ring handshakes (see :class:`hdl.host.queue.Ring`)
    dma_rd, dma_wr : DMA client ports
    tls : Out(TlsTxHost())
        To the TLS transmit engine.
    tls_rx : Out(TlsRxControl())
        With ``rx_tls``: the RX control opcodes go to the TLS receive engine
        (without it they are BAD_OPCODE).
    frames : Out(stream.Signature(FrameWord))
        Packet FIFO data, to :class:`hdl.net.csum_insert.ChecksumInsert`.
    meta : Out(stream.Signature(TxFrameMeta))
        One per frame, available once the whole frame is in the FIFO.
    events : Out(...)
        One-cycle strobes: ``completed``, ``desc_error``, ``dma_error``.
    """
    def __init__(self, *, ports=1, fifo_words=2048, rx_tls=False):
        assert fifo_words * WORD_BYTES >= MAX_FRAME
        self.ports = ports
        self.fifo_words = fifo_words
        self.rx_tls = rx_tls
        super().__init__({
            **({"tls_rx": Out(TlsRxControl())} if rx_tls else {}),
            "txq_ready": In(1), "txq_addr": In(64), "txq_index": In(16), "txq_advance": Out(1),
            "txcq_ready": In(1), "txcq_addr": In(64), "txcq_phase": In(1), "txcq_advance": Out(1),
            "dma_rd": Out(DmaReadPort()),
            "dma_wr": Out(DmaWritePort()),
            "tls": Out(TlsTxHost()),
            "frames": Out(stream.Signature(FrameWord)),
            "meta": Out(stream.Signature(TxFrameMeta)),
            "completed": Out(1), "desc_error": Out(1), "dma_error": Out(1),
            "completion_lost": Out(1), "bad_tag": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.csum = csum = ChecksumEngine(tx=True)
        m.submodules.data_fifo = data_fifo = SyncFIFOBuffered(
            width=FrameWord.as_shape().size, depth=self.fifo_words)
        m.submodules.side_fifo = side_fifo = SyncFIFOBuffered(width=11, depth=4)
        m.submodules.meta_fifo = meta_fifo = SyncFIFOBuffered(
            width=TxFrameMeta.as_shape().size, depth=16)

        # Packet FIFO out.
        m.d.comb += [
            self.frames.valid.eq(data_fifo.r_rdy),
            self.frames.payload.eq(data_fifo.r_data),
            data_fifo.r_en.eq(self.frames.ready),
            self.meta.valid.eq(meta_fifo.r_rdy),
            self.meta.payload.eq(meta_fifo.r_data),
            meta_fifo.r_en.eq(self.meta.ready),
        ]
        # TLS engine into the checksum engine into the data FIFO.
        wiring.connect(m, wiring.flipped(self.tls.frames), csum.i)
        m.d.comb += [
            data_fifo.w_data.eq(csum.o.payload),
            data_fifo.w_en.eq(csum.o.valid),
            csum.o.ready.eq(data_fifo.w_rdy),
        ]
        # Frame metadata: descriptor side-info joined with the checksum result.
        side = Signal(data.StructLayout({"flags": TxFlags, "port": 2, "drop": 1}))
        meta_in = Signal(TxFrameMeta)
        m.d.comb += [
            side.eq(side_fifo.r_data),
            meta_in.csum.eq(csum.result.payload),
            meta_in.flags.eq(side.flags),
            meta_in.port.eq(side.port),
            meta_in.drop.eq(side.drop),
            meta_fifo.w_data.eq(meta_in),
            meta_fifo.w_en.eq(side_fifo.r_rdy & csum.result.valid & meta_fifo.w_rdy),
            side_fifo.r_en.eq(meta_fifo.w_en),
            csum.result.ready.eq(meta_fifo.w_en),
        ]

        desc = Signal(TxDescriptor)
        status = Signal(TxStatus)
        words = Signal(range(MAX_FRAME // WORD_BYTES + 2))
        completion = Signal(TxCompletion)
        m.d.comb += [
            completion.index.eq(self.txq_index),
            completion.opcode.eq(desc.opcode),
            completion.status.eq(status),
            completion.length.eq(Mux((status == TxStatus.OK) & (desc.opcode == TxOpcode.PACKET),
                                     desc.length, 0)),
            completion.tag.eq(desc.tag),
            completion.phase.eq(self.txcq_phase),
        ]
        rd = self.dma_rd
        fetch = Signal()
        fetched, fetch_failed = read_entry(m, rd, self.txq_addr, desc, fetch)
        write_completion = Signal()
        completion_done, completion_lost = write_entry(m, self.dma_wr, self.txcq_addr, completion,
                                                       write_completion)
        m.d.comb += self.completion_lost.eq(completion_lost)

        tls = self.tls
        read_length = Signal(16)
        tls_opcode = ((desc.opcode == TxOpcode.SET_STATIC) | (desc.opcode == TxOpcode.SET_PROGRESS)
                      | (desc.opcode == TxOpcode.DUMP) | (desc.opcode == TxOpcode.FREE))
        m.d.comb += [
            tls.lookup_tag.eq(desc.tag),
            tls.cmd.payload.opcode.eq(desc.opcode),
            tls.cmd.payload.tag.eq(desc.tag),
            tls.cmd.payload.port.eq(desc.port[:2]),
            tls.cmd.payload.length.eq(read_length),
        ]
        # The engine a command goes to: TlsTx, or TlsRx for the RX control opcodes.
        to_rx = Signal()
        if self.rx_tls:
            tls_rx = self.tls_rx
            rx_opcode = ((desc.opcode == TxOpcode.RX_SET_STATIC) | (desc.opcode == TxOpcode.RX_RESYNC)
                         | (desc.opcode == TxOpcode.RX_FREE))
            m.d.comb += [
                tls_rx.lookup_tag.eq(desc.tag),
                tls_rx.cmd.payload.opcode.eq(desc.opcode),
                tls_rx.cmd.payload.tag.eq(desc.tag),
                tls_rx.cmd.payload.length.eq(read_length),
            ]
            cmd = [tls.cmd, tls_rx.cmd]
            data_ports = [tls.data, tls_rx.data]
            verdicts = [tls.verdict, tls_rx.verdict]
        else:
            rx_opcode = C(0, 1)
            cmd, data_ports, verdicts = [tls.cmd], [tls.data], [tls.verdict]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.txq_ready & self.txcq_ready):
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += fetch.eq(1)
                with m.If(fetched & fetch_failed):
                    m.d.sync += status.eq(TxStatus.DMA_ERROR)
                    m.d.comb += self.dma_error.eq(1)
                    m.next = "COMPLETE"
                with m.Elif(fetched):
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += words.eq((desc.length + 7) >> 3)
                # A live context for everything but SET_STATIC, which needs a free one.
                tag_ok = Mux(desc.opcode == TxOpcode.SET_STATIC,
                             tls.lookup_in_range & ~tls.lookup_live, tls.lookup_live)
                with m.If(desc.opcode == TxOpcode.NOP):
                    m.d.sync += status.eq(TxStatus.OK)
                    m.next = "COMPLETE"
                with m.Elif(desc.opcode == TxOpcode.PACKET):
                    with m.If((desc.length == 0) | (desc.length > MAX_FRAME)):
                        m.d.sync += status.eq(TxStatus.BAD_LENGTH)
                        m.d.comb += self.desc_error.eq(1)
                        m.next = "COMPLETE"
                    with m.Elif(desc.port >= self.ports):
                        m.d.sync += status.eq(TxStatus.BAD_PORT)
                        m.d.comb += self.desc_error.eq(1)
                        m.next = "COMPLETE"
                    with m.Else():
                        m.d.sync += read_length.eq(desc.length)
                        m.next = "WAIT_ROOM"
                with m.Elif(tls_opcode):
                    with m.If(~tag_ok):
                        m.d.sync += status.eq(TxStatus.BAD_TAG)
                        m.d.comb += self.bad_tag.eq(1)
                        m.next = "COMPLETE"
                    with m.Elif((desc.opcode == TxOpcode.DUMP)
                                & ((desc.length == 0) | (desc.length > MAX_FRAME))):
                        m.d.sync += status.eq(TxStatus.BAD_LENGTH)
                        m.d.comb += self.desc_error.eq(1)
                        m.next = "COMPLETE"
                    with m.Else():
                        with m.Switch(desc.opcode):
                            with m.Case(TxOpcode.SET_STATIC):
                                m.d.sync += read_length.eq(layout_bytes(TlsStaticParams))
                            with m.Case(TxOpcode.SET_PROGRESS):
                                m.d.sync += read_length.eq(layout_bytes(TlsProgressParams))
                            with m.Case(TxOpcode.DUMP):
                                m.d.sync += read_length.eq(desc.length)
                            with m.Default():
                                m.d.sync += read_length.eq(0)
                        m.next = "COMMAND"
                with m.Elif(rx_opcode):
                    # Receive contexts: a tag space of their own; a bad tag is
                    # not a TX drop (no counter), as the model has it.
                    rx_tag_ok = Mux(desc.opcode == TxOpcode.RX_SET_STATIC,
                                    tls_rx.lookup_in_range & ~tls_rx.lookup_live,
                                    tls_rx.lookup_live) if self.rx_tls else C(0, 1)
                    with m.If(~rx_tag_ok):
                        m.d.sync += status.eq(TxStatus.BAD_TAG)
                        m.next = "COMPLETE"
                    with m.Else():
                        m.d.sync += to_rx.eq(1)
                        with m.Switch(desc.opcode):
                            with m.Case(TxOpcode.RX_SET_STATIC):
                                m.d.sync += read_length.eq(layout_bytes(TlsStaticParams))
                            with m.Case(TxOpcode.RX_RESYNC):
                                m.d.sync += read_length.eq(layout_bytes(TlsRxResyncParams))
                            with m.Default():
                                m.d.sync += read_length.eq(0)
                        m.next = "COMMAND"
                with m.Else():
                    m.d.sync += status.eq(TxStatus.BAD_OPCODE)
                    m.d.comb += self.desc_error.eq(1)
                    m.next = "COMPLETE"
            with m.State("WAIT_ROOM"):
                # Room for the whole frame, counting the words the TLS engine and
                # the checksum engine's short delay line may hold, generously.
                room = (self.fifo_words - data_fifo.level) > (words + 16 + TLS_BUFFER_WORDS)
                with m.If(room):
                    m.next = "COMMAND"
            with m.State("COMMAND"):
                m.d.comb += [c.valid.eq(to_rx == i) for i, c in enumerate(cmd)]
                with m.If(Array(c.ready for c in cmd)[to_rx]):
                    with m.If(read_length == 0):
                        m.next = "VERDICT"
                    with m.Else():
                        m.next = "REQUEST"
            with m.State("REQUEST"):
                m.d.comb += [rd.req.valid.eq(1), rd.req.payload.addr.eq(desc.addr),
                             rd.req.payload.length.eq(read_length)]
                with m.If(rd.req.ready):
                    m.next = "DATA"
            with m.State("DATA"):
                word = rd.resp.payload
                for i, port in enumerate(data_ports):
                    m.d.comb += [port.valid.eq(rd.resp.valid & (to_rx == i)), port.payload.eq(word)]
                m.d.comb += rd.resp.ready.eq(Array(p.ready for p in data_ports)[to_rx])
                with m.If(rd.resp.valid & rd.resp.ready & word.last):
                    m.d.comb += self.dma_error.eq(word.error)
                    m.next = "VERDICT"
            with m.State("VERDICT"):
                verdict = Signal.like(tls.verdict.payload)
                m.d.comb += verdict.eq(Array(v.payload for v in verdicts)[to_rx])
                is_packet = desc.opcode == TxOpcode.PACKET
                forced = Mux(verdict.force_csum, (TxFlags.CSUM_IP | TxFlags.CSUM_L4).value, 0)
                with m.If(Array(v.valid for v in verdicts)[to_rx] & (~is_packet | side_fifo.w_rdy)):
                    m.d.comb += [v.ready.eq(to_rx == i) for i, v in enumerate(verdicts)]
                    m.d.sync += status.eq(verdict.status)
                    with m.If(is_packet):
                        m.d.comb += [
                            side_fifo.w_en.eq(1),
                            side_fifo.w_data.eq(Cat(desc.flags.as_value() | forced, desc.port[:2],
                                                    verdict.drop)),
                        ]
                    m.next = "COMPLETE"
            with m.State("COMPLETE"):
                m.d.comb += write_completion.eq(1)
                m.d.sync += to_rx.eq(0)
                with m.If(completion_done):
                    m.d.comb += [self.txq_advance.eq(1), self.txcq_advance.eq(1),
                                 self.completed.eq(1)]
                    m.next = "IDLE"
        return m
