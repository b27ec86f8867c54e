"""Inline TLS receive: steering, the record tracker, in-place decryption, resync search.

The contract is the "TLS receive" section of :mod:`tlsnic.abi`; the executable
specification, byte for byte, is :mod:`tlsnic.cosim.model_tls_rx`.

Where it sits
-------------
The receive path is store-and-forward (:mod:`..host.rx_engine`): a frame is
checksummed and parsed (:class:`~..net.tcp_parse.TcpParser`) on its way into
the packet FIFO, so when it reaches the FIFO head its checksums, flow and
sequence number are known. There the RX engine takes a buffer, then hands the
frame to :class:`TlsRx`: first its facts (``rx.frame``: the parsed TCP
segment, ingress port, bytes kept, and whether it is *checked*: checksums
good, not truncated, buffer fetched), then its words (``rx.i``). ``TlsRx``
returns the words, decrypted where they are TLS (``rx.o``, into the DMA
writer), then one :class:`RxTlsResult` with the completion's TLS fields::

    rx.frame ─> steering lookup ─> context read ─> decision (ABI rules 1-3)
    rx.i ─> walker / header scanner ─┬─> merge FIFO ─┐
                                     │               ├─> CryptoMerge ─> rx.o
                                     └─> GcmEngine ──┘  (decrypt mode)
                                          │ o_state, o_tag
                               commit: context table write, rx.result

Decryption happens as the frame drains from the packet FIFO into its host
buffer, after the checksum is known, so a frame with a bad checksum never
moves its context. As in :class:`~.tx.TlsTx`, one frame is inside at a time:
the context read at the start of a frame is the one the previous frame wrote,
at the cost of the GCM drain (~25 clocks) per TLS frame.

Control descriptors (RX_SET_STATIC, RX_RESYNC, RX_FREE) arrive from the TX
engine on ``ctl`` exactly like the transmit engine's (a command, the
parameter block's words, a verdict), and are served between frames; the
context table and the steering table have one owner and no port conflicts.

The tracker
-----------
Per context: ``next_seq``, the tracker state (TRACKING / SEARCHING /
PENDING), the record the walker is in (:class:`RxRecord`: number, offset,
header, nonce, *skip*), the search window and the candidate's seq, and the
GCM state of a record split across frames. Per frame the decision (ABI rules
1-3) is made once from the context as read; then each word is

* walked (:class:`~.walk.RecordStep`, the transmit engine's step) in TRACKING
  and PENDING: a record being decrypted (TRACKING, not skipped) gets its AAD,
  payload and tag chunks; any other record is followed without the cipher.
  Every completed header is checked (:func:`~.rx_search.header_plausible`); a
  bad one ends the walk for the frame and starts a search from the next frame;
* scanned (:class:`~.rx_search.HeaderScanner`) in SEARCHING: the first
  plausible header becomes the candidate, the context goes PENDING and the
  walker takes the rest of the word from the header's end.

The decrypted span
------------------
``[dec_start, dec_end)`` covers the bytes of records being decrypted,
header, nonce and tag included. A header whose bytes turn out implausible is
not part of it, even the bytes of it that went by in earlier words of the
frame: header steps extend the span only once the header is complete and
good (or when the frame ends inside it), which is the model's rule.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tlsnic.abi import (TxOpcode, TxStatus, TlsStaticParams,
                        TlsRxResyncParams, RxTlsStatus, layout_bytes)
from ..crypto.share import GcmUser
from ..crypto.gcm import Chunk, GcmProgress, GcmState, Kind, progress_of, resume_state
from ..host.dma import DmaReadWord
from ..net.frame import FrameWord, WORD_BYTES
from ..net.steer import SteerAnswer, SteerOp, SteerTable, flow_key_of
from ..net.tcp_parse import TcpInfo
from .merge import MergeWord
from .rx_search import HeaderScanner, header_plausible, WINDOW_BYTES
from .tx import TlsTxCommand, TlsTxVerdict
from .tx_context import HEADER_LEN, record_aad, record_nonce, fresh_state, static_entry, static_ok
from .table import ContextTable, write_field_apart
from .walk import RecordStep, cipher_path, feed_gcm, word_lanes

__all__ = ["RxRecord", "RxConnection", "RxContext", "RxTlsFrame", "RxTlsResult", "TlsRxControl", "TlsRxPort",
           "TlsRx", "BUFFER_WORDS"]

MERGE_FIFO_DEPTH = 48       # > GCM latency (35) in words, so the walker does not wait on the merge
#: Frame words ``TlsRx`` can hold between ``rx.i`` and ``rx.o``.
BUFFER_WORDS = MERGE_FIFO_DEPTH + 4
#: Most tags one frame can complete: a MAX_FRAME of minimal TLS 1.3 records.
MAX_TAGS = 512


class RxRecord(data.Struct):
    """The record a receive context's walker is in (the model's ``TlsRxRecord``).

    ``number`` is absolute in TRACKING and counted from the candidate (0) in
    PENDING; the record starts at ``next_seq - offset``.
    """
    number:    64
    offset:    15       #: record bytes seen, header included
    header:    40       #: header bytes in wire order
    nonce:     64       #: TLS 1.2 explicit nonce bytes in wire order
    skip:      1        #: entered without all of its bytes: followed, not decrypted
    aad_done:  1        #: the AAD chunk has gone to the cipher
    gcm_saved: 1        #: ``RxContext.gcm`` holds the state after the last byte


class RxConnection(data.Struct):
    """What ``RX_SET_STATIC`` gives a receive tag, in a table of its own that
    only install and free write (see :class:`~.tx_context.TxConnection`)."""
    in_use:   1
    aes256:   1
    tls13:    1
    ipv6:     1
    port:     2
    key:      256
    salt_iv:  96
    src_addr: 128             #: the peer; IPv4 in bytes 0..3, the rest zero
    dst_addr: 128
    src_port: 16
    dst_port: 16


class RxContext(data.Struct):
    """What moves in a receive tag's context (the key never leaves but through the cipher)."""
    state:    RxTlsStatus     #: TRACKING, SEARCHING or PENDING
    next_seq: 32
    window:   32              #: SEARCHING: bytes carried to the next frame (newest in 24..31)
    window_count: 3
    candidate_seq: 32         #: PENDING
    rec:      RxRecord
    gcm:      GcmProgress     #: the record so far (``rec.gcm_saved``)


class RxTlsFrame(data.Struct):
    """What the RX engine tells ``TlsRx`` of a frame before its words."""
    info:    TcpInfo
    port:    2
    kept:    16     #: frame bytes in the packet FIFO (the segment must end inside)
    checked: 1      #: checksums not BAD, not truncated, buffer fetched


class RxTlsResult(data.Struct):
    """The completion's TLS fields for one frame."""
    tag:       16
    tls:       RxTlsStatus
    auth_fail: 1
    resync:    1
    dec_start: 14
    dec_end:   14
    resync_offset: 16


class TlsRxControl(wiring.Signature):
    """The TX engine's side of ``TlsRx``'s control descriptors (as :class:`~.tx.TlsTxHost`).

    Members
    -------
    cmd : Out(stream.Signature(TlsTxCommand))
        RX_SET_STATIC, RX_RESYNC, RX_FREE; tag checked already.
    data : Out(stream.Signature(DmaReadWord))
        The parameter block (none for RX_FREE).
    verdict : In(stream.Signature(TlsTxVerdict))
        One per command (only ``status`` is used).
    lookup_tag, lookup_in_range, lookup_live :
        Combinational tag checks for the TX engine.
    """
    def __init__(self):
        super().__init__({
            "cmd": Out(stream.Signature(TlsTxCommand)),
            "data": Out(stream.Signature(DmaReadWord)),
            "verdict": In(stream.Signature(TlsTxVerdict)),
            "lookup_tag": Out(16), "lookup_in_range": In(1), "lookup_live": In(1),
        })


class TlsRxPort(wiring.Signature):
    """The RX engine's side of ``TlsRx``: per frame its facts, its words in and
    out, and its result."""
    def __init__(self):
        super().__init__({
            "frame": Out(stream.Signature(RxTlsFrame)),
            "i": Out(stream.Signature(FrameWord)),
            "o": In(stream.Signature(FrameWord)),
            "result": In(stream.Signature(RxTlsResult)),
        })


class _Mode:
    PASS = 0    # words pass unchanged
    SCAN = 1    # SEARCHING: the header scanner looks at the new bytes
    WALK = 2    # TRACKING / PENDING: the walker follows records


class TlsRx(wiring.Component):
    """The TLS receive engine.

    Parameters
    ----------
    contexts : int
        Receive contexts, tags ``1..contexts``.
    ports : int
        Network ports (RX_SET_STATIC's ``port`` must name one).
    shared_gcm : bool
        Use a GCM engine outside (``gcm``, a :class:`~..crypto.share.GcmShare`
        user port) instead of one of its own.
    aes_cores : int
        Without ``shared_gcm``: the AES of its own engine (0: the unrolled
        pipeline, n: n iterative cores; :class:`~..crypto.gcm.GcmEngine`).
    table_fold : int
        Block RAM rows per context-table entry (:class:`~.table.ContextTable`).

    Members
    -------
    ctl : In(TlsRxControl())
    rx : In(TlsRxPort())
    gcm : Out(GcmUser())
        With ``shared_gcm`` only.
    ev_* : Out
        Counter strobes (one clock per frame or command), with amounts.
    """
    def __init__(self, *, contexts=256, ports=1, shared_gcm=False, aes_cores=0, table_fold=1):
        assert 2 <= contexts < 1 << 15
        self.contexts = contexts
        self.ports = ports
        self.shared_gcm = shared_gcm
        self.aes_cores = aes_cores
        self.table_fold = table_fold
        super().__init__({
            **({"gcm": Out(GcmUser())} if shared_gcm else {}),
            "ctl": In(TlsRxControl()),
            "rx": In(TlsRxPort()),
            "ev_frame": Out(1),         # strobes the per-frame amounts below
            "ev_decrypted_bytes": Out(14),
            "ev_records": Out(range(MAX_TAGS + 1)), "ev_auth_fail": Out(range(MAX_TAGS + 1)),
            "ev_resync_req": Out(1), "ev_lost_sync": Out(2), "ev_ooo": Out(1),
            "ev_resync_ok": Out(1), "ev_resync_fail": Out(1),
            "ev_ctx": Out(1), "ev_ctx_freed": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.steer = steer = SteerTable(contexts=self.contexts)
        gcm, merge_fifo = cipher_path(m, wiring.flipped(self.rx.o), MERGE_FIFO_DEPTH,
                                      shared=self.gcm if self.shared_gcm else None,
                                      aes_cores=self.aes_cores)
        m.submodules.scanner = scanner = HeaderScanner()
        fold = self.table_fold
        m.submodules.conns = conns = ContextTable(RxConnection, self.contexts + 1, fold=fold)
        # The saved GCM progress is written apart (unfolded), as TX's.
        m.submodules.table = table = ContextTable(RxContext, self.contexts + 1, fold=fold,
                                                  separate=("gcm",) if fold == 1 else ())
        table_rd, table_wr = table.read, table.write
        conn_wr = conns.write
        # Both halves of an entry are read together, at one address, only when
        # a command or a steered frame is taken (a folded table starts a read
        # on ``en``); neither is taken while the last entry is being written.
        table_busy = table.busy | conns.busy
        m.d.comb += [conns.read.addr.eq(table_rd.addr), conns.read.en.eq(table_rd.en),
                     table_rd.en.eq(0)]

        # ---- live contexts (registers: the TX engine asks combinationally)
        live = Signal(self.contexts + 1)
        tag_bits = len(live).bit_length()
        ctl = self.ctl
        in_range = (ctl.lookup_tag != 0) & (ctl.lookup_tag <= self.contexts)
        m.d.comb += [ctl.lookup_in_range.eq(in_range),
                     ctl.lookup_live.eq(in_range & live.bit_select(ctl.lookup_tag[:tag_bits], 1))]

        # ---- per-command / per-frame registers (the wide ones without reset,
        # as in TlsTx: loaded before they are read)
        cmd = Signal(TlsTxCommand)
        frame = Signal(RxTlsFrame, reset_less=True)
        info = frame.info
        # The entry as read, held by the tables until their next read (as TX).
        conn = conns.read.data          # the connection
        ctx = table_rd.data             # the moving half
        tag = Signal(16)                # the frame's context (0: none)
        rec = Signal(RxRecord)          # the walker's record
        state = Signal(RxTlsStatus)     # the tracker, as it moves through the frame
        window = Signal(32)
        window_count = Signal(range(WINDOW_BYTES + 1))
        candidate = Signal(32)
        mode = Signal(2)
        commit = Signal()               # the frame's new bytes move the context
        params = Signal(layout_bytes(TlsStaticParams) * 8, reset_less=True)
        pidx = Signal(range(len(params) // 64 + 1))
        frame_error = Signal()
        first_byte = Signal(17)
        end_byte = Signal(17)
        pos = Signal(17)
        lanes_done = Signal(range(WORD_BYTES + 1))
        in_engine = Signal()
        state_taken = Signal()
        save_issued = Signal()
        saved = Signal(GcmProgress, reset_less=True)
        got_state = Signal()
        tags_expected = Signal(range(MAX_TAGS + 1))
        tags_received = Signal(range(MAX_TAGS + 1))
        tags_failed = Signal(range(MAX_TAGS + 1))
        result = Signal(RxTlsResult)
        lost_sync = Signal(2)
        span_valid = Signal()
        span_start = Signal(17)
        span_end = Signal(17)
        hdr_pend = Signal()             # decrypted header bytes not yet in the span
        hdr_pend_start = Signal(17)
        hdr_pend_end = Signal(17)

        # ---- GCM outputs other than chunks: always taken
        m.d.comb += [gcm.o_state.ready.eq(1), gcm.o_tag.ready.eq(1)]
        with m.If(gcm.o_state.valid):
            m.d.sync += [saved.eq(progress_of(gcm.o_state.payload)), got_state.eq(1)]
        with m.If(gcm.o_tag.valid):
            m.d.sync += [tags_received.eq(tags_received + 1),
                         tags_failed.eq(tags_failed + ~gcm.o_tag.payload.ok)]

        # ---- the walker's step (combinational; used in WALK)
        word = self.rx.i.payload
        lstart, lane_hi, avail, kc = word_lanes(m, word, pos, first_byte, end_byte, lanes_done)
        decrypting = (state == RxTlsStatus.TRACKING) & ~rec.skip
        step = RecordStep(m, rec, conn.tls13, decrypting & ~rec.aad_done, word.data, lstart,
                          avail, RxRecord)
        n = step.n
        header_bad = step.header_done & ~header_plausible(step.rec_new.header, conn.tls13)

        # Chunks of this word so far (a word holds up to three cipher runs).
        touched = Signal()
        acc_chunks = Signal(2)
        acc_lanes = Signal(9)
        new_chunks = Signal(2)
        new_lanes = Signal(9)
        m.d.comb += [new_chunks.eq(Mux(touched, acc_chunks, 0)),
                     new_lanes.eq(Mux(touched, acc_lanes, 0))]

        chunk = Signal(Chunk)
        chunk_valid = Signal()
        load_state = Signal(GcmState)
        aad_data, aad_count = record_aad(conn, rec)
        fresh = fresh_state(m, conn, rec, decrypt=1)
        resumed = resume_state(m, ctx.gcm, key=conn.key, aes256=conn.aes256,
                               iv=record_nonce(conn, rec), decrypt=1)
        with m.If(step.aad):
            m.d.comb += [chunk.kind.eq(Kind.AAD), chunk.data.eq(aad_data), chunk.count.eq(aad_count),
                         chunk.load.eq(1), load_state.eq(fresh)]
        with m.Else():
            m.d.comb += [chunk.kind.eq(Mux(step.text, Kind.TEXT, Kind.TAG)),
                         chunk.data.eq(step.shifted & step.run_mask), chunk.count.eq(n),
                         chunk.load.eq(~in_engine), load_state.eq(resumed)]
        needs_chunk = decrypting & (step.aad | step.text | step.tag)
        # Cipher lanes of this step (a word pushed in PASS or SCAN mode has none).
        step_lanes = (mode == _Mode.WALK) & decrypting & (step.text | step.tag) & (n != 0)
        with m.If(step_lanes):
            held = Mux(touched, acc_chunks, 0)
            m.d.comb += [new_lanes.word_select(held, 3).eq(lstart), new_chunks.eq(held + 1)]

        rec_next = Signal(RxRecord)     # the record after this step
        m.d.comb += rec_next.eq(step.rec_new)
        with m.If(step.record_ends):
            m.d.comb += [rec_next.eq(0), rec_next.number.eq(rec.number + 1)]

        merge_entry = Signal(MergeWord)
        push_word = Signal()
        m.d.comb += [
            merge_entry.data.eq(word.data), merge_entry.keep.eq(word.keep),
            merge_entry.last.eq(word.last), merge_entry.forward.eq(1),
            merge_entry.chunks.eq(new_chunks), merge_entry.lanes.eq(new_lanes),
            merge_fifo.w_data.eq(merge_entry),
            merge_fifo.w_en.eq(push_word),
            self.rx.i.ready.eq(push_word),
        ]
        save_chunk = Signal()
        feed_gcm(m, gcm, chunk, chunk_valid, load_state, save_chunk, state_taken)
        if self.shared_gcm:
            m.d.comb += self.gcm.hold.eq(in_engine)

        # The scanner looks at the same lanes.
        m.d.comb += [scanner.data.eq(word.data), scanner.lo.eq(lstart), scanner.hi.eq(lane_hi),
                     scanner.tls13.eq(conn.tls13), scanner.window_in.eq(window),
                     scanner.window_count_in.eq(window_count)]
        offset_of_candidate = Signal(16)    # resync_offset: frame offset minus payload start
        m.d.comb += offset_of_candidate.eq(pos + scanner.start - info.payload_start)

        # ---- the frame's flow and the decision
        frame_key = flow_key_of(m, frame.port, info.ipv6, info.src_addr, info.dst_addr,
                                info.src_port, info.dst_port)
        key_ok = (conn.in_use & (conn.port == frame.port) & (conn.ipv6 == info.ipv6)
                  & (conn.src_addr == info.src_addr) & (conn.dst_addr == info.dst_addr)
                  & (conn.src_port == info.src_port) & (conn.dst_port == info.dst_port))
        seg_len = Signal(17)
        m.d.comb += seg_len.eq(info.payload_end - info.payload_start)
        ahead = Signal(signed(32))
        m.d.comb += ahead.eq(info.seq - ctx.next_seq)
        rec_len_ctx = Cat(ctx.rec.header[32:40], ctx.rec.header[24:32])
        distance = Signal(signed(34))       # the frame's seq from the record's start
        m.d.comb += distance.eq(ctx.rec.offset + ahead)

        static = data.View(TlsStaticParams, params)
        resync = data.View(TlsRxResyncParams, params[:layout_bytes(TlsRxResyncParams) * 8])
        static_key = flow_key_of(m, static.port, static.ip_version == 6, static.src_addr,
                                 static.dst_addr, static.src_port, static.dst_port)
        conn_key = flow_key_of(m, conn.port, conn.ipv6, conn.src_addr, conn.dst_addr,
                              conn.src_port, conn.dst_port)
        verdict = Signal(TlsTxVerdict)
        m.d.comb += ctl.verdict.payload.eq(verdict)
        m.d.comb += self.rx.result.payload.eq(result)

        def finish(st):
            m.d.sync += [verdict.status.eq(st), params.eq(0)]
            m.next = "VERDICT"

        # Install and free write the same entry, built from ``params``, which
        # a free clears first (and every command when it finishes, so that a
        # key does not stay in it): a free is an install from zeros, not in
        # use (as TX's, :class:`~.tx.TlsTxEngine`).
        freeing = cmd.opcode == TxOpcode.RX_FREE
        new_conn = Signal(RxConnection)
        new_entry = Signal(RxContext)
        static_entry(m, new_conn, new_entry, static)
        with m.If(freeing):
            m.d.comb += [new_conn.in_use.eq(0), new_conn.aes256.eq(0), new_conn.tls13.eq(0),
                         new_conn.ipv6.eq(0)]
        with m.Else():
            m.d.comb += new_entry.state.eq(RxTlsStatus.TRACKING)
        gcm_write = Signal()        # the entry's GCM progress is written (from ``saved``)

        def write_entry(entry):
            m.d.comb += [table_wr.addr.eq(cmd.tag), table_wr.data.eq(entry), table_wr.en.eq(1)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += table_rd.addr.eq(ctl.cmd.payload.tag)
                m.d.sync += [frame_error.eq(0), pidx.eq(0)]
                with m.If(steer.busy | table_busy):
                    pass
                with m.Elif(ctl.cmd.valid):
                    m.d.comb += [ctl.cmd.ready.eq(1), table_rd.en.eq(1)]
                    m.d.sync += cmd.eq(ctl.cmd.payload)
                    m.next = "C_LOAD"
                with m.Elif(self.rx.frame.valid):
                    m.d.comb += self.rx.frame.ready.eq(1)
                    m.d.sync += [
                        frame.eq(self.rx.frame.payload), tag.eq(0), mode.eq(_Mode.PASS),
                        commit.eq(0), pos.eq(0), lanes_done.eq(0), touched.eq(0),
                        in_engine.eq(0), state_taken.eq(0), save_issued.eq(0), got_state.eq(0),
                        tags_expected.eq(0), tags_received.eq(0), tags_failed.eq(0),
                        lost_sync.eq(0), span_valid.eq(0), hdr_pend.eq(0), result.eq(0),
                    ]
                    m.next = "F_LOOKUP"

            # ---- control descriptors
            with m.State("C_LOAD"):
                with m.If(~table_busy):
                    with m.If(freeing):
                        m.d.sync += [params.eq(0), saved.eq(0)]
                        m.next = "C_STEER"
                    with m.Else():
                        m.next = "C_PARAMS"
            with m.State("C_PARAMS"):
                m.d.comb += ctl.data.ready.eq(1)
                with m.If(ctl.data.valid):
                    m.d.sync += [params.word_select(pidx, 64).eq(ctl.data.payload.data),
                                 pidx.eq(pidx + 1)]
                    with m.If(ctl.data.payload.error):
                        m.d.sync += frame_error.eq(1)
                    with m.If(ctl.data.payload.last):
                        m.next = "C_CHECK"
            with m.State("C_CHECK"):
                with m.If(frame_error):
                    finish(TxStatus.DMA_ERROR)
                with m.Elif(cmd.opcode == TxOpcode.RX_SET_STATIC):
                    with m.If(static_ok(static, self.ports)):
                        m.next = "C_STEER"
                    with m.Else():
                        finish(TxStatus.BAD_PARAMS)
                with m.Else():      # RX_RESYNC
                    confirm = resync.flags.as_value()[0]
                    with m.If((ctx.state != RxTlsStatus.PENDING)
                              | (ctx.candidate_seq != resync.candidate_seq)):
                        m.d.comb += self.ev_resync_fail.eq(1)
                        finish(TxStatus.RESYNC_STALE)
                    with m.Else():
                        entry = Signal(RxContext)
                        m.d.comb += entry.eq(ctx)
                        with m.If(confirm):
                            m.d.comb += [
                                entry.state.eq(RxTlsStatus.TRACKING),
                                entry.rec.number.eq(ctx.rec.number + resync.record_number),
                                entry.rec.skip.eq(ctx.rec.offset != 0),
                                entry.rec.aad_done.eq(0), entry.rec.gcm_saved.eq(0),
                                self.ev_resync_ok.eq(1),
                            ]
                        with m.Else():
                            m.d.comb += [entry.state.eq(RxTlsStatus.SEARCHING),
                                         entry.window_count.eq(0), self.ev_resync_fail.eq(1)]
                        write_entry(entry)
                        finish(TxStatus.OK)
            with m.State("C_STEER"):
                # RX_SET_STATIC inserts the rule, RX_FREE removes it.
                insert = cmd.opcode == TxOpcode.RX_SET_STATIC
                m.d.comb += [steer.update.valid.eq(1),
                             steer.update.payload.op.eq(Mux(insert, SteerOp.INSERT, SteerOp.REMOVE)),
                             steer.update.payload.key.eq(Mux(insert, static_key, conn_key)),
                             steer.update.payload.tag.eq(cmd.tag)]
                with m.If(steer.update.ready):
                    m.next = "C_STEERED"
            with m.State("C_STEERED"):
                m.d.comb += steer.answer.ready.eq(1)
                with m.If(steer.answer.valid & (cmd.opcode == TxOpcode.RX_FREE)):
                    # The entry goes with its key: all zeros (``params`` and
                    # ``saved`` were cleared on the way here).
                    write_entry(new_entry)
                    m.d.comb += [gcm_write.eq(1),
                                 conn_wr.addr.eq(cmd.tag), conn_wr.data.eq(new_conn), conn_wr.en.eq(1)]
                    m.d.comb += self.ev_ctx_freed.eq(1)
                    m.d.sync += live.bit_select(cmd.tag[:tag_bits], 1).eq(0)
                    finish(TxStatus.OK)
                with m.Elif(steer.answer.valid):
                    with m.Switch(steer.answer.payload):
                        with m.Case(SteerAnswer.OK):
                            m.d.comb += [self.ev_ctx.eq(1),
                                         conn_wr.addr.eq(cmd.tag), conn_wr.data.eq(new_conn),
                                         conn_wr.en.eq(1)]
                            write_entry(new_entry)
                            m.d.sync += live.bit_select(cmd.tag[:tag_bits], 1).eq(1)
                            finish(TxStatus.OK)
                        with m.Case(SteerAnswer.EXISTS):
                            finish(TxStatus.STEER_EXISTS)
                        with m.Default():
                            finish(TxStatus.STEER_FULL)
            with m.State("VERDICT"):
                m.d.comb += ctl.verdict.valid.eq(1)
                with m.If(ctl.verdict.ready):
                    m.next = "IDLE"

            # ---- frames
            with m.State("F_LOOKUP"):
                # Only a whole TCP segment is steered (``tlsnic.abi``, Steering).
                with m.If(info.is_tcp & (info.payload_end <= frame.kept)):
                    m.d.comb += [steer.lookup.valid.eq(1), steer.lookup.payload.eq(frame_key)]
                    with m.If(steer.lookup.ready):
                        m.next = "F_STEER"
                with m.Else():
                    m.next = "WALK"
            with m.State("F_STEER"):
                m.d.comb += [steer.result.ready.eq(~table_busy),
                             table_rd.addr.eq(steer.result.payload.tag)]
                with m.If(steer.result.valid & ~table_busy):
                    m.d.comb += table_rd.en.eq(steer.result.payload.hit)
                    m.d.sync += tag.eq(Mux(steer.result.payload.hit, steer.result.payload.tag, 0))
                    with m.If(steer.result.payload.hit):
                        m.next = "F_LOAD"
                    with m.Else():
                        m.next = "WALK"
            with m.State("F_LOAD"):
                with m.If(~table_busy):
                    m.d.sync += [rec.eq(table_rd.data.rec), state.eq(table_rd.data.state),
                                 window.eq(table_rd.data.window),
                                 window_count.eq(table_rd.data.window_count),
                                 candidate.eq(table_rd.data.candidate_seq)]
                    m.next = "F_DECIDE"
            with m.State("F_DECIDE"):
                m.d.sync += [first_byte.eq(info.payload_start), end_byte.eq(info.payload_end)]
                with m.If(~key_ok):
                    m.d.sync += tag.eq(0)
                with m.Else():
                    m.d.sync += result.tag.eq(tag)
                    with m.If(seg_len == 0):
                        pass                                            # rule 1: NONE
                    with m.Elif(~frame.checked):
                        m.d.sync += result.tls.eq(RxTlsStatus.NOT_CHECKED)
                    with m.Elif(ahead + seg_len <= 0):                  # rule 2
                        m.d.sync += result.tls.eq(RxTlsStatus.OUT_OF_ORDER)
                        m.d.comb += self.ev_ooo.eq(1)
                    with m.Else():
                        m.d.sync += commit.eq(1)
                        with m.If(ahead < 0):
                            m.d.sync += first_byte.eq(info.payload_start - ahead)
                        was_searching = ctx.state == RxTlsStatus.SEARCHING
                        searching = Signal()        # after the gap rule
                        m.d.comb += searching.eq(was_searching)
                        with m.If(ahead > 0):                           # rule 3: a gap
                            end = rec_len_ctx + HEADER_LEN
                            with m.If(~was_searching & (ctx.rec.offset >= HEADER_LEN)
                                      & (distance <= end)):
                                # The header survived: skip the rest of the record.
                                with m.If(distance == end):
                                    m.d.sync += [rec.eq(0), rec.number.eq(ctx.rec.number + 1)]
                                with m.Else():
                                    m.d.sync += [rec.offset.eq(distance), rec.skip.eq(1),
                                                 rec.gcm_saved.eq(0)]
                            with m.Else():
                                m.d.sync += [state.eq(RxTlsStatus.SEARCHING), window_count.eq(0),
                                             lost_sync.eq(~was_searching)]
                                m.d.comb += searching.eq(1)
                        m.d.sync += [mode.eq(Mux(searching, _Mode.SCAN, _Mode.WALK)),
                                     result.tls.eq(Mux(searching, RxTlsStatus.SEARCHING, ctx.state))]
                m.next = "WALK"

            with m.State("WALK"):
                with m.If(self.rx.i.valid & merge_fifo.w_rdy):
                    with m.If((mode == _Mode.PASS) | (avail == 0)):
                        m.d.comb += push_word.eq(1)
                    with m.Elif(mode == _Mode.SCAN):
                        with m.If(scanner.found):
                            # The candidate: follow its chain from the header's end.
                            m.d.sync += [
                                mode.eq(_Mode.WALK), state.eq(RxTlsStatus.PENDING),
                                rec.eq(0), rec.offset.eq(HEADER_LEN), rec.header.eq(scanner.header),
                                lanes_done.eq(scanner.end),
                                candidate.eq(info.seq + offset_of_candidate.as_signed()),
                                result.resync.eq(1), result.resync_offset.eq(offset_of_candidate),
                            ]
                        with m.Else():
                            m.d.sync += [window.eq(scanner.window_out),
                                         window_count.eq(scanner.window_count_out)]
                            m.d.comb += push_word.eq(1)
                    with m.Else():
                        m.d.comb += chunk_valid.eq(needs_chunk)
                        fire = Mux(needs_chunk, gcm.i_chunk.ready, 1)
                        p0 = pos + lstart
                        with m.If(header_bad):
                            # Lost: the rest of the frame passes; search from the next frame.
                            m.d.sync += [mode.eq(_Mode.PASS), state.eq(RxTlsStatus.SEARCHING),
                                         window_count.eq(0), lost_sync.eq(lost_sync + 1),
                                         hdr_pend.eq(0)]
                        with m.Elif(fire):
                            m.d.sync += [rec.eq(rec_next), lanes_done.eq(lstart + n)]
                            with m.If(chunk.load & needs_chunk):
                                m.d.sync += in_engine.eq(1)
                            with m.If(step.aad):
                                m.d.sync += rec.aad_done.eq(1)
                            with m.If(step.record_ends):
                                m.d.sync += in_engine.eq(0)
                                with m.If(decrypting):
                                    m.d.sync += tags_expected.eq(tags_expected + 1)
                            # The decrypted span (header bytes once the header is good).
                            with m.If(decrypting & (n != 0)):
                                with m.If(step.hdr & ~step.header_done):
                                    m.d.sync += [hdr_pend.eq(1), hdr_pend_end.eq(p0 + n)]
                                    with m.If(~hdr_pend):
                                        m.d.sync += hdr_pend_start.eq(p0)
                                with m.Else():
                                    m.d.sync += [span_valid.eq(1), span_end.eq(p0 + n), hdr_pend.eq(0)]
                                    with m.If(~span_valid):
                                        m.d.sync += span_start.eq(Mux(hdr_pend, hdr_pend_start, p0))
                            with m.If(~step.aad & (lstart + n == lane_hi)):
                                m.d.comb += push_word.eq(1)
                            with m.Else():
                                m.d.sync += [touched.eq(1), acc_chunks.eq(new_chunks),
                                             acc_lanes.eq(new_lanes)]
                    with m.If(push_word):
                        m.d.sync += [touched.eq(0), lanes_done.eq(0), pos.eq(pos + WORD_BYTES)]
                        with m.If(word.last):
                            m.next = "SAVE"
            with m.State("SAVE"):
                with m.If(hdr_pend):
                    # The frame ended inside a header being decrypted: its bytes count.
                    m.d.sync += [hdr_pend.eq(0), span_valid.eq(1), span_end.eq(hdr_pend_end)]
                    with m.If(~span_valid):
                        m.d.sync += span_start.eq(hdr_pend_start)
                with m.If(in_engine):
                    m.d.comb += save_chunk.eq(1)
                    with m.If(gcm.i_chunk.ready):
                        # The engine is done with this frame's state (a shared
                        # engine may go to the other direction).
                        m.d.sync += [save_issued.eq(1), in_engine.eq(0)]
                        m.next = "DRAIN"
                with m.Else():
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If((tags_received == tags_expected) & (~save_issued | got_state)):
                    with m.If(commit):
                        entry = Signal(RxContext)
                        rec_out = Signal(RxRecord)
                        m.d.comb += [
                            rec_out.eq(rec), rec_out.gcm_saved.eq(save_issued),
                            entry.eq(ctx), entry.rec.eq(rec_out), entry.state.eq(state),
                            entry.window.eq(window), entry.window_count.eq(window_count),
                            entry.candidate_seq.eq(candidate),
                            entry.next_seq.eq(info.seq + seg_len),
                            table_wr.addr.eq(tag), table_wr.data.eq(entry), table_wr.en.eq(1),
                        ]
                        m.d.comb += gcm_write.eq(save_issued)
                    with m.If(span_valid):
                        m.d.sync += [result.dec_start.eq(span_start - info.payload_start),
                                     result.dec_end.eq(span_end - info.payload_start)]
                    m.d.sync += result.auth_fail.eq(tags_failed != 0)
                    m.next = "RESULT"
            with m.State("RESULT"):
                m.d.comb += self.rx.result.valid.eq(1)
                with m.If(self.rx.result.ready):
                    m.d.comb += [
                        self.ev_frame.eq(1),
                        self.ev_decrypted_bytes.eq(result.dec_end - result.dec_start),
                        self.ev_records.eq(tags_received), self.ev_auth_fail.eq(tags_failed),
                        self.ev_resync_req.eq(result.resync), self.ev_lost_sync.eq(lost_sync),
                    ]
                    m.next = "IDLE"
        write_field_apart(m, table, "gcm", saved, ctx.gcm, gcm_write)
        return m
