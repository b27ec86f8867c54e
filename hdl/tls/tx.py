"""Inline TLS transmit: the card side of ``tls_device`` / mlx5 kTLS TX.

The contract is the "TLS transmit" section of :mod:`tlsnic.abi`; the
executable specification, byte for byte, is :mod:`tlsnic.cosim.model_tls_tx`.

Where it sits
-------------
The TX engine hands every descriptor that carries data (a PACKET, tagged or
not, and the TLS control descriptors) to :class:`TlsTx` as a *command*, then
streams the bytes it read from host memory into ``i``. ``TlsTx`` answers each
command with one *verdict* (status, drop, force checksums), and forwards
PACKET frames, encrypted where they are TLS, to the checksum engine::

    i ─> TcpParser ─> word FIFO ─> walker ─┬─> merge FIFO ─┐
                                           │               ├─> CryptoMerge ─> o
                                           └─> GcmEngine ──┘
                                                 │ o_state, o_tag
                                  commit: context table, tag log (DMA write)

One descriptor is inside at a time (the TX engine waits for the verdict), so
the context read at the start of a frame is the one the previous frame wrote,
and a frame that fails halfway is simply not committed: a dropped frame
changes nothing in its context, as the ABI says. The cost is the time from
the last word to the commit (the GCM pipeline drains, ~25 clocks per tagged
frame); overlapping frames of different contexts is future work.

The walker
----------
For a frame it may encrypt, the walker follows the record structure over the
TCP payload one *step* per clock: from the current lane of the current word,
the run of bytes up to the end of the word, of the payload, or of the record
region (header, explicit nonce, payload, tag), whichever comes first. Header
and nonce bytes are collected (and the header checked) and pass unchanged;
payload and tag runs become one GCM chunk each; at a record's first payload
byte one extra step issues the record's AAD chunk, which also loads a fresh
GCM state. In steady state a word is one step, so the walker keeps up with
the 64-bit datapath; a word can take up to four steps where records meet.

The GCM state of a record rides on its first chunk in a frame (``load``) and,
if the record is still open at the end of the frame, comes back through a
zero-byte ``save`` chunk to be stored in the context. Records entered by
``SET_PROGRESS`` with ``SEEK`` get a seek state (counter at the byte offset,
no GHASH); their tag bytes never go to the cipher but are written by the
walker from the tag the driver gave (``TAG_VALID``), or the frame is dropped
with NO_TAG.

Tag log
-------
A record's tag is logged by the frame (or DUMP) in which its first tag byte
passes, as the model does: tags completed in the frame come from ``o_tag``,
a tag begun but not finished from the saved state (GCM has it from the first
tag byte on). The tags wait in a small RAM until the commit, then go to host
memory as :class:`~tlsnic.abi.TlsTagLogEntry` writes; a dropped frame writes
none.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tlsnic.abi import (TxOpcode, TxStatus, TlsCipher, TlsVersion, TlsStaticParams,
                        TlsProgressParams, TlsTagLogEntry, TLS_MAX_CIPHERTEXT, layout_bytes)
from ..crypto.share import GcmUser
from ..crypto.gcm import Chunk, GcmEngine, GcmProgress, GcmState, Kind, progress_of, resume_state
from ..host.dma import DmaReadWord, DmaWritePort, write_entry
from ..net.frame import FrameWord, WORD_BYTES
from ..net.tcp_parse import TcpParser, TCP_WINDOW_WORDS
from .merge import CryptoMerge, MergeWord
from .table import ContextTable, write_field_apart
from .walk import RecordStep, cipher_path, feed_gcm, word_lanes
from .tx_context import (TxConnection, TxContext, TxRecord, HEADER_LEN, NONCE_LEN, TAG_LEN, record_length,
                         record_aad, record_nonce, fresh_state, seek_state, static_ok, static_entry)

__all__ = ["TlsTxCommand", "TlsTxVerdict", "TlsTxHost", "TlsTx", "BUFFER_WORDS"]

WORD_FIFO_DEPTH = 16        # > TCP_WINDOW_WORDS: the parser never waits for the walker
MERGE_FIFO_DEPTH = 48       # > GCM latency (35) in words, so the walker does not wait on the merge
#: Frame words ``TlsTx`` can hold between ``i`` and ``o``: the TX engine counts
#: them when it checks the packet FIFO has room for a frame.
BUFFER_WORDS = WORD_FIFO_DEPTH + MERGE_FIFO_DEPTH + 4
#: Largest number of tags one frame or DUMP can log: a MAX_FRAME of the
#: smallest TLS 1.3 records (22 bytes on the wire).
MAX_TAGS = 512
PARAMS_BITS = layout_bytes(TlsStaticParams) * 8


class TlsTxCommand(data.Struct):
    """One descriptor for :class:`TlsTx`; ``length`` bytes follow on ``i`` (none for FREE)."""
    opcode: TxOpcode
    tag:    16
    port:   2
    length: 16      #: DUMP: the bytes to walk


class TlsTxVerdict(data.Struct):
    status:     TxStatus
    drop:       1       #: PACKET: discard the frame (it is in the packet FIFO already)
    force_csum: 1       #: PACKET: TLS bytes were rewritten, fill both checksums


class TlsTxHost(wiring.Signature):
    """The TX engine's side of :class:`TlsTx`.

    Members
    -------
    cmd : Out(stream.Signature(TlsTxCommand))
        One per descriptor that goes through (PACKET and the TLS control opcodes).
    data : Out(stream.Signature(DmaReadWord))
        The descriptor's bytes as read from host memory (none for FREE).
    frames : In(stream.Signature(FrameWord))
        PACKET frames, TLS bytes encrypted (dropped frames too: the verdict says so).
    verdict : In(stream.Signature(TlsTxVerdict))
        One per command, once it is committed.
    lookup_tag, lookup_in_range, lookup_live :
        Combinational: is ``lookup_tag`` a context number, and is it in use
        (the checks the TX engine makes before it reads a control block).
    """
    def __init__(self):
        super().__init__({
            "cmd": Out(stream.Signature(TlsTxCommand)),
            "data": Out(stream.Signature(DmaReadWord)),
            "frames": In(stream.Signature(FrameWord)),
            "verdict": In(stream.Signature(TlsTxVerdict)),
            "lookup_tag": Out(16), "lookup_in_range": In(1), "lookup_live": In(1),
        })


class TlsTx(wiring.Component):
    """The TLS transmit engine.

    Parameters
    ----------
    contexts : int
        TX contexts, tags ``1..contexts``.
    ports : int
        Network ports (SET_STATIC's ``port`` must name one).
    shared_gcm : bool
        Use a GCM engine outside (``gcm``, a :class:`~..crypto.share.GcmShare`
        user port) instead of one of its own.
    aes_cores : int
        Without ``shared_gcm``: the AES of its own engine (0: the unrolled
        pipeline, n: n iterative cores; :class:`~..crypto.gcm.GcmEngine`).
    table_fold : int
        Block RAM rows per context-table entry (:class:`~.table.ContextTable`):
        2 takes half the EBR and a few clocks a segment.

    Members
    -------
    host : In(TlsTxHost())
        Commands, their bytes, frames out, verdicts.
    dma_wr : Out(DmaWritePort())
        Tag log writes.
    gcm : Out(GcmUser())
        With ``shared_gcm`` only.
    ev_* : Out
        Counter strobes, with amounts where a counter advances by more than one.
    """
    def __init__(self, *, contexts=256, ports=1, shared_gcm=False, aes_cores=0, table_fold=1):
        assert 1 <= contexts < 1 << 16
        self.contexts = contexts
        self.ports = ports
        self.shared_gcm = shared_gcm
        self.aes_cores = aes_cores
        self.table_fold = table_fold
        super().__init__({
            **({"gcm": Out(GcmUser())} if shared_gcm else {}),
            "host": In(TlsTxHost()),
            "dma_wr": Out(DmaWritePort()),
            "ev_encrypted": Out(1), "ev_encrypted_bytes": Out(16),
            "ev_records": Out(1), "ev_records_count": Out(range(MAX_TAGS + 1)),
            "ev_ooo": Out(1), "ev_no_sync": Out(1), "ev_bad_flow": Out(1),
            "ev_resync": Out(1), "ev_dump": Out(1), "ev_dump_bytes": Out(16),
            "ev_ctx": Out(1), "ev_ctx_freed": Out(1), "ev_dma_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.parser = parser = TcpParser()
        m.submodules.word_fifo = word_fifo = SyncFIFOBuffered(
            width=FrameWord.as_shape().size, depth=WORD_FIFO_DEPTH)
        gcm, merge_fifo = cipher_path(m, wiring.flipped(self.host.frames), MERGE_FIFO_DEPTH,
                                      shared=self.gcm if self.shared_gcm else None,
                                      aes_cores=self.aes_cores)
        fold = self.table_fold
        m.submodules.conns = conns = ContextTable(TxConnection, self.contexts + 1, fold=fold)
        # The saved GCM progress is written apart (unfolded): only a commit
        # after a save (and a free) writes it, from ``saved`` alone.
        m.submodules.table = table = ContextTable(TxContext, self.contexts + 1, fold=fold,
                                                  separate=("gcm",) if fold == 1 else ())
        m.submodules.tags = tags = Memory(shape=128, depth=MAX_TAGS, init=[])
        table_rd, table_wr = table.read, table.write
        conn_wr = conns.write
        # Both halves of an entry are read together, at one address, only when
        # a command is taken (a folded table starts a read on ``en``).
        table_busy = table.busy | conns.busy
        m.d.comb += [conns.read.addr.eq(table_rd.addr), conns.read.en.eq(table_rd.en),
                     table_rd.en.eq(0)]
        tags_rd, tags_wr = tags.read_port(), tags.write_port()

        # ---- plumbing: parser, word FIFO, merge, output
        frame_error = Signal()      # some word of this descriptor's read failed
        m.d.comb += [
            parser.i.valid.eq(self.host.data.valid),
            parser.i.payload.data.eq(self.host.data.payload.data),
            parser.i.payload.keep.eq(self.host.data.payload.keep),
            parser.i.payload.last.eq(self.host.data.payload.last),
            self.host.data.ready.eq(parser.i.ready),
            word_fifo.w_data.eq(parser.o.payload),
            word_fifo.w_en.eq(parser.o.valid),
            parser.o.ready.eq(word_fifo.w_rdy),
        ]
        with m.If(self.host.data.valid & self.host.data.ready & self.host.data.payload.error):
            m.d.sync += frame_error.eq(1)

        # ---- which contexts are live (a register, so the TX engine can ask at once)
        live = Signal(self.contexts + 1)
        in_range = (self.host.lookup_tag != 0) & (self.host.lookup_tag <= self.contexts)
        m.d.comb += self.host.lookup_in_range.eq(in_range)
        m.d.comb += self.host.lookup_live.eq(in_range & live.bit_select(self.host.lookup_tag[:len(live).bit_length()], 1))

        # ---- per-command registers. The wide ones (entry, params, saved GCM
        # state) have no reset: the FSM loads them before it reads them, and
        # on a board the sync reset reached 22 k flip-flops, one net that
        # nextpnr routes through the fabric (it promotes only clocks).
        cmd = Signal(TlsTxCommand)
        # The entry as read: the tables hold it until their next read, which
        # only the next command starts (no copy: its ~1.7 k flip-flops were
        # one FSM-state enable net that the board's router found overused).
        conn = conns.read.data          # the connection
        ctx = table_rd.data             # the moving half; written back on commit
        rec = Signal(TxRecord)          # the walker's record, committed on success
        status = Signal(TxStatus)
        walk = Signal()                 # the walker follows records (else words pass as they are)
        flow_checked = Signal()         # tag and port were good: a short frame is BAD_FLOW
        is_packet = Signal()
        first_byte = Signal(range(TCP_WINDOW_WORDS * WORD_BYTES * 2))
        end_byte = Signal(17)
        pos = Signal(17)                # frame byte offset of the current word
        frame_bytes = Signal(17)
        params = Signal(PARAMS_BITS, reset_less=True)
        in_engine = Signal()            # the record's GCM state is in the engine this frame
        state_taken = Signal()          # the load state of the pending chunk was taken
        save_issued = Signal()
        saved = Signal(GcmProgress, reset_less=True)
        got_state = Signal()
        tags_expected = Signal(range(MAX_TAGS + 1))
        tags_received = Signal(range(MAX_TAGS + 1))
        skip_first_tag = Signal()       # the first o_tag closes a record whose tag began earlier
        tag_begun = Signal()            # the open record's first tag byte was in this frame
        log_count = Signal(range(MAX_TAGS + 1))
        log_first = Signal(64)          # record number of the first tag logged
        log_first_set = Signal()
        log_index = Signal(range(MAX_TAGS + 1))

        tls13 = conn.tls13

        def length_ok(length):
            return Mux(tls13,
                       (length >= 1 + TAG_LEN) & (length <= TLS_MAX_CIPHERTEXT),
                       (length >= NONCE_LEN + TAG_LEN) & (length <= TLS_MAX_CIPHERTEXT + NONCE_LEN))

        # ---- GCM outputs other than chunks: always taken
        m.d.comb += [gcm.o_state.ready.eq(1), gcm.o_tag.ready.eq(1)]
        tag_wr_log = Signal()           # write ``tag_wr_data`` as the next logged tag
        tag_wr_data = Signal(128)
        with m.If(gcm.o_state.valid):
            m.d.sync += [saved.eq(progress_of(gcm.o_state.payload)), got_state.eq(1)]
        with m.If(gcm.o_tag.valid):
            m.d.sync += tags_received.eq(tags_received + 1)
            with m.If(skip_first_tag):
                m.d.sync += skip_first_tag.eq(0)
            with m.Else():
                m.d.comb += [tag_wr_log.eq(1), tag_wr_data.eq(gcm.o_tag.payload.tag)]
        m.d.comb += [tags_wr.addr.eq(log_count), tags_wr.data.eq(tag_wr_data),
                     tags_wr.en.eq(tag_wr_log)]
        with m.If(tag_wr_log):
            m.d.sync += log_count.eq(log_count + 1)

        # ---- the walker's step (combinational; used in WALK)
        word = Signal(FrameWord)
        m.d.comb += word.eq(word_fifo.r_data)
        lanes_done = Signal(range(WORD_BYTES + 1))   # lanes of this word already walked
        lstart, lane_hi, avail, kc = word_lanes(m, word, pos, first_byte, end_byte, lanes_done)

        # The word under construction (substituted tag bytes, chunk lanes).
        touched = Signal()
        acc_data = Signal(64)
        acc_chunks = Signal(2)
        acc_lanes = Signal(9)
        cur_data = Signal(64)
        m.d.comb += cur_data.eq(Mux(touched, acc_data, word.data))
        new_data = Signal(64)
        new_chunks = Signal(2)
        new_lanes = Signal(9)
        m.d.comb += [new_data.eq(cur_data), new_chunks.eq(Mux(touched, acc_chunks, 0)),
                     new_lanes.eq(Mux(touched, acc_lanes, 0))]

        step = RecordStep(m, rec, tls13, ~rec.seek & ~rec.aad_done, word.data, lstart, avail,
                          TxRecord, hdr_known=rec.hdr_known, nonce_known=rec.nonce_known)
        o, pstart, tag_start, rec_end = step.o, step.pstart, step.tag_start, step.rec_end
        region_hdr, region_nonce, region_aad = step.hdr, step.nonce, step.aad
        region_text, region_tag = step.text, step.tag
        n, shifted, run_mask, rec_new = step.n, step.shifted, step.run_mask, step.rec_new
        new_len = record_length(rec_new)
        header_bad = step.header_done & ((rec_new.header[8:16] != 0x03)
                                         | (rec_new.header[16:24] != 0x03) | ~length_ok(new_len))

        # The chunk this step issues, if any.
        chunk = Signal(Chunk)
        chunk_valid = Signal()
        load_state = Signal(GcmState)
        aad_data, aad_count = record_aad(conn, rec)
        fresh = fresh_state(m, conn, rec)
        seek = seek_state(m, conn, rec, (o - pstart)[:15])
        resumed = resume_state(m, ctx.gcm, key=conn.key, aes256=conn.aes256,
                               iv=record_nonce(conn, rec), decrypt=0)
        seek_tag = region_tag & rec.seek
        tag_missing = seek_tag & is_packet & ~rec.tag_valid
        with m.If(region_aad):
            m.d.comb += [chunk.kind.eq(Kind.AAD), chunk.data.eq(aad_data), chunk.count.eq(aad_count),
                         chunk.load.eq(1), load_state.eq(fresh)]
        with m.Else():
            m.d.comb += [chunk.kind.eq(Mux(region_text, Kind.TEXT, Kind.TAG)),
                         chunk.data.eq(shifted & run_mask), chunk.count.eq(n),
                         chunk.load.eq(~in_engine),
                         load_state.eq(Mux(rec.gcm_saved, resumed, seek))]
        needs_chunk = region_aad | region_text | (region_tag & ~rec.seek)
        step_lanes = (region_text | (region_tag & ~rec.seek)) & (n != 0)

        # Seek record: the tag bytes come from the block the driver gave.
        sub = Signal(64)
        m.d.comb += sub.eq((rec.tag >> ((o - tag_start)[:4] * 8))[:64] & run_mask)
        with m.If(seek_tag & rec.tag_valid & is_packet):
            m.d.comb += new_data.eq((cur_data & ~(run_mask << (lstart * 8))[:64])
                                    | (sub << (lstart * 8))[:64])
        with m.If(step_lanes):
            held = Mux(touched, acc_chunks, 0)
            m.d.comb += [new_lanes.word_select(held, 3).eq(lstart), new_chunks.eq(held + 1)]

        # Record end.
        record_ends = step.record_ends
        with m.If(record_ends):
            m.d.comb += [rec_new.eq(0), rec_new.number.eq(rec.number + 1)]

        # ---- the walker's outputs
        merge_entry = Signal(MergeWord)
        push_word = Signal()
        m.d.comb += [
            merge_entry.data.eq(new_data), merge_entry.keep.eq(word.keep),
            merge_entry.last.eq(word.last), merge_entry.forward.eq(is_packet),
            merge_entry.chunks.eq(new_chunks), merge_entry.lanes.eq(new_lanes),
            merge_fifo.w_data.eq(merge_entry),
            merge_fifo.w_en.eq(push_word),
            word_fifo.r_en.eq(push_word),
        ]
        save_chunk = Signal()
        feed_gcm(m, gcm, chunk, chunk_valid, load_state, save_chunk, state_taken)
        if self.shared_gcm:
            m.d.comb += self.gcm.hold.eq(in_engine)

        # ---- verdict and events
        verdict = Signal(TlsTxVerdict)
        m.d.comb += self.host.verdict.payload.eq(verdict)

        # ---- the tag log writer
        log_write = Signal()
        log_number = Signal(64)
        log_entry = Signal(TlsTagLogEntry)
        m.d.comb += [log_number.eq(log_first + log_index),
                     log_entry.record_number.eq(log_number),
                     log_entry.tag.eq(tags_rd.data), log_entry.valid.eq(1),
                     tags_rd.addr.eq(log_index)]
        slot = log_number[:16] & ((C(1, 17) << conn.tag_log_log2) - 1)[:16]
        log_addr = conn.tag_log_addr + (slot << 5)
        log_done, log_failed = write_entry(m, self.dma_wr, log_addr, log_entry, log_write)

        static = data.View(TlsStaticParams, params)
        progress = data.View(TlsProgressParams, params[:layout_bytes(TlsProgressParams) * 8])

        # Install and free write the same entry: built from ``params``, which
        # a free clears first (and every command when it finishes, so that a
        # key does not stay in it). The table's write data then has one
        # source fewer: a free is an install from zeros, not in use.
        freeing = cmd.opcode == TxOpcode.FREE
        new_conn = Signal(TxConnection)
        new_entry = Signal(TxContext)
        static_entry(m, new_conn, new_entry, static)
        m.d.comb += [new_conn.tag_log_addr.eq(static.tag_log_addr),
                     new_conn.tag_log_log2.eq(static.tag_log_log2)]
        with m.If(freeing):
            m.d.comb += [new_conn.in_use.eq(0), new_conn.aes256.eq(0), new_conn.tls13.eq(0),
                         new_conn.ipv6.eq(0)]
        gcm_write = Signal()        # the entry's GCM progress is written (from ``saved``)

        def finish(st, drop=0, force=0):
            m.d.sync += [verdict.status.eq(st), verdict.drop.eq(drop), verdict.force_csum.eq(force),
                         params.eq(0)]
            m.next = "VERDICT"

        with m.FSM():
            with m.State("IDLE"):
                # Not while the last command's entry is still being written.
                m.d.comb += [self.host.cmd.ready.eq(~table_busy),
                             table_rd.addr.eq(self.host.cmd.payload.tag)]
                with m.If(self.host.cmd.valid & ~table_busy):
                    c = self.host.cmd.payload
                    m.d.sync += [
                        cmd.eq(c), frame_error.eq(0), pos.eq(0), lanes_done.eq(0), touched.eq(0),
                        in_engine.eq(0), state_taken.eq(0), save_issued.eq(0), got_state.eq(0),
                        tags_expected.eq(0), tags_received.eq(0), log_count.eq(0),
                        log_first_set.eq(0), tag_begun.eq(0), skip_first_tag.eq(0),
                        walk.eq(0), flow_checked.eq(0),
                        is_packet.eq(c.opcode == TxOpcode.PACKET),
                        status.eq(TxStatus.OK),
                    ]
                    # Out-of-range tags read entry 0 (never in use).
                    in_table = (c.tag != 0) & (c.tag <= self.contexts)
                    m.d.comb += [table_rd.addr.eq(Mux(in_table, c.tag, 0)), table_rd.en.eq(1)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                with m.If(~table_busy):
                    m.d.sync += rec.eq(table_rd.data.rec)
                    with m.If(freeing):
                        m.d.sync += [params.eq(0), saved.eq(0)]
                        m.next = "FREE"
                    with m.Else():
                        m.next = "INFO"
            with m.State("FREE"):
                # Tag and liveness were checked by the TX engine.
                # The entry goes with its key: all zeros (``params`` and
                # ``saved`` were cleared on the way here).
                m.d.comb += [table_wr.addr.eq(cmd.tag), table_wr.data.eq(new_entry),
                             table_wr.en.eq(1), gcm_write.eq(1),
                             conn_wr.addr.eq(cmd.tag), conn_wr.data.eq(new_conn), conn_wr.en.eq(1),
                             self.ev_ctx_freed.eq(1)]
                m.d.sync += live.bit_select(cmd.tag[:len(live).bit_length()], 1).eq(0)
                finish(TxStatus.OK)
            with m.State("INFO"):
                m.d.comb += parser.info.ready.eq(1)
                with m.If(parser.info.valid):
                    p = parser.info.payload
                    with m.If(cmd.opcode == TxOpcode.PACKET):
                        m.d.sync += [first_byte.eq(p.payload_start), end_byte.eq(p.payload_end)]
                        flow_ok = (p.is_tcp & (p.ipv6 == conn.ipv6)
                                   & (p.src_port == conn.src_port) & (p.dst_port == conn.dst_port)
                                   & Mux(conn.ipv6, (p.src_addr == conn.src_addr) & (p.dst_addr == conn.dst_addr),
                                         (p.src_addr[:32] == conn.src_addr[:32])
                                         & (p.dst_addr[:32] == conn.dst_addr[:32])))
                        with m.If(cmd.tag == 0):
                            pass        # plain frame
                        with m.Elif(~conn.in_use):
                            m.d.sync += status.eq(TxStatus.BAD_TAG)
                        with m.Elif(cmd.port != conn.port):
                            m.d.sync += status.eq(TxStatus.WRONG_PORT)
                        with m.Else():
                            m.d.sync += flow_checked.eq(1)
                            with m.If(~flow_ok):
                                m.d.sync += status.eq(TxStatus.BAD_FLOW)
                            with m.Elif(p.payload_start == p.payload_end):
                                pass    # no payload (a pure ACK): the frame goes out as it is
                            with m.Elif(ctx.failed):
                                m.d.sync += status.eq(TxStatus.CONTEXT_FAILED)
                            with m.Elif(p.seq != ctx.next_seq):
                                m.d.sync += status.eq(TxStatus.OUT_OF_SEQUENCE)
                            with m.Else():
                                m.d.sync += walk.eq(1)
                        m.next = "WALK"
                    with m.Elif(cmd.opcode == TxOpcode.DUMP):
                        m.d.sync += [first_byte.eq(0), end_byte.eq(cmd.length)]
                        with m.If(ctx.failed):
                            m.d.sync += status.eq(TxStatus.CONTEXT_FAILED)
                        with m.Else():
                            m.d.sync += walk.eq(1)
                        m.next = "WALK"
                    with m.Else():
                        m.next = "PARAMS"
                # Where the walk starts: a record already in its tag at the start
                # of the frame had its tag logged by an earlier frame.
                m.d.sync += skip_first_tag.eq(~rec.seek & (rec.offset > HEADER_LEN)
                                              & (rec.offset > tag_start))
            with m.State("PARAMS"):
                with m.If(word_fifo.r_rdy):
                    m.d.comb += word_fifo.r_en.eq(1)
                    m.d.sync += [params.word_select(pos[3:7], 64).eq(word.data), pos.eq(pos + 8)]
                    with m.If(word.last):
                        m.next = "PARAMS_CHECK"
            with m.State("PARAMS_CHECK"):
                with m.If(frame_error):
                    finish(TxStatus.DMA_ERROR)
                with m.Elif(cmd.opcode == TxOpcode.SET_STATIC):
                    ok = (static_ok(static, self.ports) & (static.tag_log_log2 <= 16)
                          & (static.tag_log_addr[:5] == 0))
                    with m.If(ok):
                        m.d.comb += [
                            table_wr.addr.eq(cmd.tag), table_wr.data.eq(new_entry), table_wr.en.eq(1),
                            conn_wr.addr.eq(cmd.tag), conn_wr.data.eq(new_conn), conn_wr.en.eq(1),
                            self.ev_ctx.eq(1),
                        ]
                        m.d.sync += live.bit_select(cmd.tag[:len(live).bit_length()], 1).eq(1)
                        finish(TxStatus.OK)
                    with m.Else():
                        finish(TxStatus.BAD_PARAMS)
                with m.Else():      # SET_PROGRESS
                    flags = progress.flags.as_value()
                    seek_flag, tag_valid = flags[0], flags[1]
                    offset = Signal(32)
                    plen = progress.record_length
                    m.d.comb += offset.eq(progress.next_seq - progress.record_seq)
                    bad = Mux(seek_flag,
                              (offset != 0) & (~length_ok(plen) | (offset >= plen + HEADER_LEN)),
                              (offset != 0) | tag_valid)
                    with m.If(bad):
                        finish(TxStatus.BAD_PARAMS)
                    with m.Else():
                        entry = Signal(TxContext)
                        known_hdr = seek_flag & (offset != 0)
                        known_nonce = seek_flag & ~tls13 & (offset > HEADER_LEN)
                        m.d.comb += [
                            entry.eq(ctx), entry.failed.eq(0),
                            entry.next_seq.eq(progress.next_seq),
                            entry.rec.eq(0),
                            entry.rec.number.eq(progress.record_number),
                            entry.rec.offset.eq(offset[:15]),
                            entry.rec.seek.eq(seek_flag),
                            entry.rec.hdr_known.eq(known_hdr),
                            entry.rec.nonce_known.eq(known_nonce),
                            entry.rec.tag_valid.eq(seek_flag & tag_valid),
                            table_wr.addr.eq(cmd.tag), table_wr.data.eq(entry), table_wr.en.eq(1),
                            self.ev_resync.eq(1),
                        ]
                        with m.If(known_hdr):
                            m.d.comb += entry.rec.header.eq(Cat(progress.content_type, C(0x03, 8),
                                                                C(0x03, 8), plen[8:16], plen[0:8]))
                        with m.If(known_nonce):
                            m.d.comb += entry.rec.nonce.eq(progress.explicit_nonce)
                        with m.If(seek_flag & tag_valid):
                            m.d.comb += entry.rec.tag.eq(progress.tag)
                        finish(TxStatus.OK)
            with m.State("WALK"):
                with m.If(word_fifo.r_rdy & merge_fifo.w_rdy):
                    with m.If(~walk | (avail == 0)):
                        m.d.comb += push_word.eq(1)
                    with m.Else():
                        m.d.comb += chunk_valid.eq(needs_chunk & ~tag_missing)
                        fire = Mux(needs_chunk & ~tag_missing, gcm.i_chunk.ready, 1)
                        with m.If(tag_missing):
                            m.d.sync += [status.eq(TxStatus.NO_TAG), walk.eq(0)]
                        with m.Elif(header_bad):
                            # The bytes of this step are not walked: the frame is dropped.
                            m.d.sync += [status.eq(TxStatus.CONTEXT_FAILED), walk.eq(0)]
                        with m.Elif(fire):
                            m.d.sync += [rec.eq(rec_new), lanes_done.eq(lstart + n)]
                            with m.If(chunk.load & needs_chunk):
                                m.d.sync += in_engine.eq(1)
                            with m.If(region_aad):
                                m.d.sync += rec.aad_done.eq(1)
                            with m.If(region_tag & ~rec.seek & (o == tag_start)):
                                m.d.sync += tag_begun.eq(1)
                                with m.If(~log_first_set):
                                    m.d.sync += [log_first.eq(rec.number), log_first_set.eq(1)]
                            with m.If(record_ends):
                                m.d.sync += [in_engine.eq(0), tag_begun.eq(0)]
                                with m.If(~rec.seek):
                                    m.d.sync += tags_expected.eq(tags_expected + 1)
                            with m.If(~region_aad & (lstart + n == lane_hi)):
                                m.d.comb += push_word.eq(1)
                            with m.Else():
                                m.d.sync += [touched.eq(1), acc_data.eq(new_data),
                                             acc_chunks.eq(new_chunks), acc_lanes.eq(new_lanes)]
                    with m.If(push_word):
                        m.d.sync += [touched.eq(0), lanes_done.eq(0), pos.eq(pos + WORD_BYTES)]
                        with m.If(word.last):
                            m.d.sync += frame_bytes.eq(pos + kc)
                            m.next = "SAVE"
            with m.State("SAVE"):
                # Leaving SAVE, the engine is done with this frame's state
                # (saved, or abandoned with a dropped frame): a shared engine
                # may go to the other direction.
                with m.If(walk & in_engine):
                    m.d.comb += save_chunk.eq(1)
                    with m.If(gcm.i_chunk.ready):
                        m.d.sync += [save_issued.eq(1), in_engine.eq(0)]
                        m.next = "DRAIN"
                with m.Else():
                    m.d.sync += in_engine.eq(0)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If((tags_received == tags_expected) & (~save_issued | got_state)):
                    short = frame_bytes < end_byte
                    with m.If(frame_error):
                        finish(TxStatus.DMA_ERROR, drop=1)
                    with m.Elif(is_packet & flow_checked & short):
                        m.d.comb += self.ev_bad_flow.eq(1)
                        finish(TxStatus.BAD_FLOW, drop=1)
                    with m.Elif(status != TxStatus.OK):
                        with m.If(status == TxStatus.CONTEXT_FAILED):
                            entry = Signal(TxContext)
                            m.d.comb += [entry.eq(ctx), entry.failed.eq(1),
                                         table_wr.addr.eq(cmd.tag), table_wr.data.eq(entry),
                                         table_wr.en.eq(1)]
                        with m.If(is_packet):
                            with m.Switch(status):
                                with m.Case(TxStatus.BAD_TAG, TxStatus.WRONG_PORT, TxStatus.BAD_FLOW):
                                    m.d.comb += self.ev_bad_flow.eq(1)
                                with m.Case(TxStatus.OUT_OF_SEQUENCE):
                                    m.d.comb += self.ev_ooo.eq(1)
                                with m.Case(TxStatus.CONTEXT_FAILED, TxStatus.NO_TAG):
                                    m.d.comb += self.ev_no_sync.eq(1)
                        finish(status, drop=1)
                    with m.Elif(walk):
                        m.next = "COMMIT"
                    with m.Else():
                        finish(TxStatus.OK)
            with m.State("COMMIT"):
                entry = Signal(TxContext)
                rec_out = Signal(TxRecord)
                m.d.comb += [rec_out.eq(rec), entry.eq(ctx), entry.rec.eq(rec_out),
                             entry.next_seq.eq(ctx.next_seq + (end_byte - first_byte)),
                             table_wr.addr.eq(cmd.tag), table_wr.data.eq(entry), table_wr.en.eq(1)]
                with m.If(save_issued):
                    m.d.comb += [gcm_write.eq(1), rec_out.gcm_saved.eq(1)]
                with m.If(tag_begun):
                    # Tag begun but not finished: GCM has had it since the first byte.
                    m.d.comb += [tags_wr.addr.eq(log_count), tags_wr.data.eq(saved.acc),
                                 tags_wr.en.eq(1)]
                    m.d.sync += log_count.eq(log_count + 1)
                with m.If(is_packet):
                    m.d.comb += [self.ev_encrypted.eq(1),
                                 self.ev_encrypted_bytes.eq(end_byte - first_byte)]
                with m.Else():
                    m.d.comb += [self.ev_dump.eq(1), self.ev_dump_bytes.eq(end_byte)]
                m.d.sync += log_index.eq(0)
                m.next = "LOG_READ"
            with m.State("LOG_READ"):
                with m.If(log_index == log_count):
                    m.d.comb += [self.ev_records.eq(log_count != 0),
                                 self.ev_records_count.eq(log_count)]
                    finish(TxStatus.OK, force=is_packet)
                with m.Else():
                    m.d.comb += tags_rd.en.eq(1)
                    m.next = "LOG_WRITE"
            with m.State("LOG_WRITE"):
                m.d.comb += log_write.eq(1)
                with m.If(log_done):
                    m.d.comb += self.ev_dma_error.eq(log_failed)
                    m.d.sync += log_index.eq(log_index + 1)
                    m.next = "LOG_READ"
            with m.State("VERDICT"):
                m.d.comb += self.host.verdict.valid.eq(1)
                with m.If(self.host.verdict.ready):
                    m.next = "IDLE"
        write_field_apart(m, table, "gcm", saved, ctx.gcm, gcm_write)
        return m
