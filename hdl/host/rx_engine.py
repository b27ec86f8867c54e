"""RX engine: frames from the wire into host buffers, one completion each.

Input: wire -> :class:`FrameLimiter` -> :class:`TcpParser` -> checksum
verification -> RX packet FIFO, with per-frame metadata (checksums, the TCP
segment's flow, seq and payload span) once the frame and its checksums are
complete. Per frame at the FIFO head: take one RX buffer (a 16-byte DMA read
of the RX queue entry), write ``min(frame, buffer)`` bytes, swallow the rest,
write the completion. While the RX queue is empty or the completion queue
full, the frame waits and the FIFO fills; once it is full the wire input is
back-pressured.

With a TLS receive engine (``tls=True``, :class:`~..tls.rx.TlsRx`) the frame
drains through it: once the buffer is known (so whether the frame is
truncated), the engine gets the frame's facts, then its words, and returns
them decrypted where they are TLS, then the completion's TLS fields. A frame
whose buffer could not be fetched still goes through (steered, NOT_CHECKED),
as the model does.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from tlsnic.abi import RxDescriptor, RxCompletion, RxStatus, CsumStatus, DESC_BYTES
from ..net.checksum import ChecksumEngine, ChecksumResult
from ..net.frame import FrameWord, WORD_BYTES
from ..net.frame_limit import FrameLimiter, FrameInfo
from ..net.frame_mux import FrameMux
from ..net.tcp_parse import TcpInfo, TcpParser
from ..tls.rx import TlsRxPort
from .dma import DmaReadPort, DmaWritePort, read_entry, write_entry

__all__ = ["RxFrameMeta", "RxEngine"]


class RxFrameMeta(data.Struct):
    csum: ChecksumResult    #: ``csum.length``: bytes kept in the FIFO
    info: FrameInfo
    tcp:  TcpInfo


class RxEngine(wiring.Component):
    """Receive path: all ports into one packet FIFO, frame by frame.

    Members
    -------
    wire : In(stream.Signature(FrameWord))
    rxq_*, rxcq_* : ring handshakes
    dma_rd, dma_wr : DMA client ports
    tls : Out(TlsRxPort())
        With ``tls``: to the TLS receive engine.
    received, received_bytes, truncated, dma_error, csum_bad : Out
        Per-frame strobes for the counters.
    """
    def __init__(self, *, fifo_words=2048, ports=1, tls=False):
        self.fifo_words = fifo_words
        self.ports = ports
        self.with_tls = tls
        members = {"tls": Out(TlsRxPort())} if tls else {}
        super().__init__({
            **members,
            "wire": In(stream.Signature(FrameWord)).array(ports),
            "rxq_ready": In(1), "rxq_addr": In(64), "rxq_index": In(16), "rxq_advance": Out(1),
            "rxcq_ready": In(1), "rxcq_addr": In(64), "rxcq_phase": In(1), "rxcq_advance": Out(1),
            "dma_rd": Out(DmaReadPort()),
            "dma_wr": Out(DmaWritePort()),
            "received": Out(1), "received_bytes": Out(16), "truncated": Out(1),
            "dma_error": Out(1), "csum_bad": Out(1), "completion_lost": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.limiter = limiter = FrameLimiter()
        m.submodules.csum = csum = ChecksumEngine(tx=False)
        m.submodules.data_fifo = data_fifo = SyncFIFOBuffered(
            width=FrameWord.as_shape().size, depth=self.fifo_words)
        m.submodules.meta_fifo = meta_fifo = SyncFIFOBuffered(
            width=RxFrameMeta.as_shape().size, depth=16)

        meta_in = Signal(RxFrameMeta)
        m.submodules.mux = mux = FrameMux(self.ports)
        for i in range(self.ports):
            wiring.connect(m, wiring.flipped(self.wire[i]), mux.i[i])
        wiring.connect(m, mux.o, limiter.i)
        m.d.comb += limiter.port.eq(mux.port)
        if self.with_tls:
            # The TLS engine needs each frame's TCP segment when the frame reaches the head.
            m.submodules.parser = parser = TcpParser()
            wiring.connect(m, limiter.o, parser.i)
            wiring.connect(m, parser.o, csum.i)
            parsed = parser.info.valid
            m.d.comb += [meta_in.tcp.eq(parser.info.payload), parser.info.ready.eq(meta_fifo.w_en)]
        else:
            wiring.connect(m, limiter.o, csum.i)
            parsed = 1
        m.d.comb += [
            data_fifo.w_data.eq(csum.o.payload),
            data_fifo.w_en.eq(csum.o.valid),
            csum.o.ready.eq(data_fifo.w_rdy),
        ]
        m.d.comb += [
            meta_in.csum.eq(csum.result.payload),
            meta_in.info.eq(limiter.info.payload),
            meta_fifo.w_data.eq(meta_in),
            meta_fifo.w_en.eq(csum.result.valid & limiter.info.valid & parsed & meta_fifo.w_rdy),
            csum.result.ready.eq(meta_fifo.w_en),
            limiter.info.ready.eq(meta_fifo.w_en),
        ]

        meta = Signal(RxFrameMeta)
        m.d.comb += meta.eq(meta_fifo.r_data)
        desc = Signal(RxDescriptor)
        status = Signal(RxStatus)
        write_words = Signal(range(8192))     # words still to hand to the DMA writer
        write_len = Signal(16)
        completion = Signal(RxCompletion)
        m.d.comb += [
            completion.index.eq(self.rxq_index),
            completion.status.eq(status),
            completion.port.eq(meta.info.port),
            completion.length.eq(meta.info.wire_length),
            completion.ip_csum.eq(meta.csum.ip_csum),
            completion.l4_csum.eq(meta.csum.l4_csum),
            completion.l3_proto.eq(meta.csum.l3_proto),
            completion.l4_proto.eq(meta.csum.l4_proto),
            completion.phase.eq(self.rxcq_phase),
        ]
        rd, wr = self.dma_rd, self.dma_wr
        fetch = Signal()
        fetched, fetch_failed = read_entry(m, rd, self.rxq_addr, desc, fetch)
        write_completion = Signal()
        completion_done, completion_lost = write_entry(m, wr, self.rxcq_addr, completion,
                                                       write_completion)
        m.d.comb += self.completion_lost.eq(completion_lost)
        # The words drain from the packet FIFO, through the TLS engine if there is one.
        frame_word = Signal(FrameWord)
        out_valid = Signal()        # a word of the frame is there for the writer
        take = Signal()             # ... and is taken (to the writer, or swallowed)
        if self.with_tls:
            tls = self.tls
            m.d.comb += [
                tls.i.valid.eq(data_fifo.r_rdy),
                tls.i.payload.eq(data_fifo.r_data),
                data_fifo.r_en.eq(tls.i.valid & tls.i.ready),
                frame_word.eq(tls.o.payload),
                out_valid.eq(tls.o.valid),
                tls.o.ready.eq(take),
            ]
        else:
            m.d.comb += [frame_word.eq(data_fifo.r_data), out_valid.eq(data_fifo.r_rdy),
                         data_fifo.r_en.eq(take)]
        if self.with_tls:
            result = Signal.like(tls.result.payload)
            m.d.comb += [
                completion.tag.eq(result.tag), completion.tls.eq(result.tls),
                completion.auth_fail.eq(result.auth_fail), completion.resync.eq(result.resync),
                completion.dec_start.eq(result.dec_start), completion.dec_end.eq(result.dec_end),
                completion.resync_offset.eq(result.resync_offset),
            ]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(meta_fifo.r_rdy & self.rxq_ready & self.rxcq_ready):
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += fetch.eq(1)
                with m.If(fetched & fetch_failed):
                    m.d.sync += [status.eq(RxStatus.DMA_ERROR), write_words.eq(0),
                                 write_len.eq(0)]
                    m.next = "TLS" if self.with_tls else "DRAIN"
                with m.Elif(fetched):
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                kept = meta.csum.length
                fits = desc.length >= kept
                length = Mux(fits, kept, desc.length[:16])
                m.d.sync += [
                    write_len.eq(length),
                    write_words.eq((length + 7) >> 3),
                    status.eq(Mux(fits & ~meta.info.cut, RxStatus.OK, RxStatus.TRUNCATED)),
                ]
                m.next = "TLS" if self.with_tls else "WRITE"
            if self.with_tls:
                with m.State("TLS"):
                    # The frame's facts; "checked": whole, buffer fetched, no BAD checksum.
                    p = tls.frame.payload
                    m.d.comb += [
                        tls.frame.valid.eq(1),
                        p.info.eq(meta.tcp), p.port.eq(meta.info.port), p.kept.eq(meta.csum.length),
                        p.checked.eq((status == RxStatus.OK) & (meta.csum.ip_csum != CsumStatus.BAD)
                                     & (meta.csum.l4_csum != CsumStatus.BAD)),
                    ]
                    with m.If(tls.frame.ready):
                        m.next = "WRITE"
            with m.State("WRITE"):
                with m.If(write_len == 0):
                    m.next = "DRAIN"
                with m.Else():
                    m.d.comb += [wr.req.valid.eq(1), wr.req.payload.addr.eq(desc.addr),
                                 wr.req.payload.length.eq(write_len)]
                    with m.If(wr.req.ready):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                # Hand the first ``write_words`` words to the writer, swallow the rest.
                to_writer = write_words != 0
                m.d.comb += [
                    wr.data.valid.eq(to_writer & out_valid),
                    wr.data.payload.eq(frame_word.data),
                    take.eq(out_valid & Mux(to_writer, wr.data.ready, 1)),
                ]
                with m.If(take):
                    with m.If(to_writer):
                        m.d.sync += write_words.eq(write_words - 1)
                    with m.If(frame_word.last):
                        m.next = "STATUS"
            with m.State("STATUS"):
                with m.If((write_len == 0) | (status == RxStatus.DMA_ERROR)):
                    m.next = "RESULT" if self.with_tls else "COMPLETE"
                with m.Else():
                    m.d.comb += wr.status.ready.eq(1)
                    with m.If(wr.status.valid):
                        with m.If(wr.status.payload.error):
                            m.d.sync += status.eq(RxStatus.DMA_ERROR)
                        m.next = "RESULT" if self.with_tls else "COMPLETE"
            if self.with_tls:
                with m.State("RESULT"):
                    m.d.comb += tls.result.ready.eq(1)
                    with m.If(tls.result.valid):
                        m.d.sync += result.eq(tls.result.payload)
                        m.next = "COMPLETE"
            with m.State("COMPLETE"):
                m.d.comb += write_completion.eq(1)
                with m.If(completion_done):
                    m.d.comb += [
                        self.rxq_advance.eq(1), self.rxcq_advance.eq(1), meta_fifo.r_en.eq(1),
                        self.received.eq(status != RxStatus.DMA_ERROR),
                        self.received_bytes.eq(Mux(status != RxStatus.DMA_ERROR,
                                                   meta.info.wire_length, 0)),
                        self.truncated.eq(status == RxStatus.TRUNCATED),
                        self.dma_error.eq(status == RxStatus.DMA_ERROR),
                        self.csum_bad.eq((meta.csum.ip_csum == CsumStatus.BAD)
                                         | (meta.csum.l4_csum == CsumStatus.BAD)),
                    ]
                    m.next = "IDLE"
        return m
