"""The record walker's step, shared by the transmit and receive engines.

Both TLS engines follow the record structure over a TCP payload one *step*
per clock: from the current lane of the current 64-bit word, the run of bytes
up to the end of the word, of the payload, or of the record *region* (header,
TLS 1.2 explicit nonce, payload, tag), whichever comes first. Header and
nonce bytes are collected from the stream; payload and tag runs become GCM
chunks; at a record's first payload byte one extra step (no bytes) issues the
record's AAD chunk. What differs between the directions is around the step,
not in it: TX substitutes tags of seek records and drops frames on a bad
header, RX skips records it cannot decrypt and hands a bad header to the
resync search. So this module holds the step's arithmetic only:

* :func:`word_lanes`: which lanes of the word the step may take (the frame's
  byte range, the word's valid bytes, the lanes already walked);
* :class:`RecordStep`: the regions of the record at its current offset, the
  step's byte count, the record after the step (offset advanced, header and
  nonce bytes collected) and whether the header is complete or the record
  ends with it;
* :func:`cipher_path` and :func:`feed_gcm`: the GCM engine, the merge FIFO and
  :class:`~.merge.CryptoMerge` wired together, and the engine's inputs driven
  from the walker's chunk (its state riding on a ``load``) or the zero-byte
  ``save`` chunk that ends a frame inside a record.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered

from ..crypto.gcm import GcmEngine, Kind
from ..crypto.share import GcmUser, attach_engine
from ..net.frame import WORD_BYTES, keep_count
from .merge import CryptoMerge, MergeWord
from .tx_context import HEADER_LEN, NONCE_LEN, TAG_LEN, record_length

__all__ = ["min_", "clamp_lanes", "word_lanes", "RecordStep", "cipher_path", "feed_gcm"]


def min_(a, b):
    return Mux(a < b, a, b)


def clamp_lanes(m, x, name):
    """``x`` (signed) clamped to 0..8: lanes of a word below a byte offset."""
    out = Signal(range(WORD_BYTES + 1), name=name)
    m.d.comb += out.eq(Mux(x < 0, 0, Mux(x > WORD_BYTES, WORD_BYTES, x)))
    return out


def word_lanes(m, word, pos, first_byte, end_byte, lanes_done):
    """``(lstart, lane_hi, avail, kc)`` of the frame word ``word`` at frame
    offset ``pos``: the step may take lanes ``[lstart, lane_hi)`` (``avail`` of
    them), those of ``[first_byte, end_byte)`` that the word holds and that were
    not walked yet; ``kc`` is the word's valid byte count."""
    lane_lo = clamp_lanes(m, first_byte.as_signed() - pos.as_signed(), "lane_lo")
    lane_hi_frame = clamp_lanes(m, end_byte.as_signed() - pos.as_signed(), "lane_hi_frame")
    kc = keep_count(word.keep)
    lane_hi = Signal(range(WORD_BYTES + 1))
    m.d.comb += lane_hi.eq(min_(lane_hi_frame, kc))
    lstart = Signal(range(WORD_BYTES + 1))
    m.d.comb += lstart.eq(Mux(lanes_done > lane_lo, lanes_done, lane_lo))
    avail = Signal(range(WORD_BYTES + 1))
    m.d.comb += avail.eq(Mux(lane_hi > lstart, lane_hi - lstart, 0))
    return lstart, lane_hi, avail, kc


class RecordStep:
    """One step of the walker through the record ``rec`` (combinational).

    Parameters
    ----------
    m : Module
    rec : View
        The record as it stands: ``offset``, ``header``, ``nonce`` (the fields
        of :class:`~.tx_context.TxRecord` the step uses; RX records have them too).
    tls13 : Value
    aad_pending : Value
        The step at the first payload byte is the AAD step (the record is
        hashed and its AAD has not gone to the cipher yet).
    data : Value
        The word's data.
    lstart, avail : Value
        From :func:`word_lanes`.
    rec_layout : Layout
        Layout of ``rec``, for ``rec_new``.
    hdr_known, nonce_known : Value
        Header / nonce came from elsewhere: the stream's bytes there are not collected.

    Attributes
    ----------
    o, pstart, tag_start, rec_end : Value
        Offset in the record; where its payload, tag and end are (header included).
    hdr, nonce, aad, text, tag : Value
        The region the step is in (exactly one is set).
    n : Signal
        Bytes the step takes (0 for the AAD step).
    shifted : Signal
        The word shifted so that lane ``lstart`` is byte 0.
    run_mask : Value
        Byte mask of the step's ``n`` bytes in ``shifted``.
    rec_new : Signal
        ``rec`` after the step, offset advanced, bytes collected (the caller
        handles the record's end).
    header_done : Value
        The step completes the header (``rec_new.header`` holds it).
    record_ends : Value
        The step takes the record's last byte.
    """
    def __init__(self, m, rec, tls13, aad_pending, data, lstart, avail, rec_layout,
                 hdr_known=C(0, 1), nonce_known=C(0, 1)):
        self.o = o = rec.offset
        self.pstart = pstart = Mux(tls13, HEADER_LEN, HEADER_LEN + NONCE_LEN)
        rec_len = record_length(rec)
        self.tag_start = tag_start = Signal(17)
        self.rec_end = rec_end = Signal(17)
        m.d.comb += [tag_start.eq(rec_len + HEADER_LEN - TAG_LEN), rec_end.eq(rec_len + HEADER_LEN)]

        self.hdr = hdr = o < HEADER_LEN
        self.nonce = nonce = ~hdr & (o < pstart)
        self.aad = aad = ~hdr & ~nonce & aad_pending
        self.text = text = ~hdr & ~nonce & ~aad & (o < tag_start)
        self.tag = ~hdr & ~nonce & ~aad & ~text
        region_end = Signal(17)
        with m.If(hdr):
            m.d.comb += region_end.eq(HEADER_LEN)
        with m.Elif(nonce):
            m.d.comb += region_end.eq(pstart)
        with m.Elif(text):
            m.d.comb += region_end.eq(tag_start)
        with m.Else():
            m.d.comb += region_end.eq(rec_end)

        self.n = n = Signal(range(WORD_BYTES + 1))
        m.d.comb += n.eq(Mux(aad, 0, min_(region_end - o, avail)))
        self.shifted = shifted = Signal(64)
        m.d.comb += shifted.eq(data >> (lstart * 8))
        self.run_mask = Cat((n > i).replicate(8) for i in range(WORD_BYTES))

        self.rec_new = rec_new = Signal(rec_layout)
        m.d.comb += rec_new.eq(rec)
        for j in range(HEADER_LEN):
            with m.If(hdr & ~hdr_known & (o <= j) & (j < o + n)):
                m.d.comb += rec_new.header.word_select(j, 8).eq(shifted.word_select((j - o)[:3], 8))
        for j in range(NONCE_LEN):
            k = HEADER_LEN + j
            with m.If(nonce & ~nonce_known & (o <= k) & (k < o + n)):
                m.d.comb += rec_new.nonce.word_select(j, 8).eq(shifted.word_select((k - o)[:3], 8))
        m.d.comb += rec_new.offset.eq(o + n)
        self.header_done = hdr & ~hdr_known & (o + n == HEADER_LEN)
        self.record_ends = self.tag & (o + n == rec_end)


def cipher_path(m, out, merge_depth, shared=None, aes_cores=0):
    """Add the GCM engine, the merge FIFO (``merge_depth`` words: more than the
    engine's latency, so the walker does not wait on the merge) and the merge,
    with the merged frames on ``out`` (a flipped ``stream.Signature(FrameWord)``).
    With ``shared`` (the engine's :class:`~..crypto.share.GcmUser` port), the
    engine is outside and reached through it instead; else ``aes_cores`` picks
    the engine's AES (see :class:`~..crypto.gcm.GcmEngine`).
    Returns ``(gcm, merge_fifo)``: the walker writes :class:`~.merge.MergeWord`
    entries into the FIFO and chunks into ``gcm`` (the engine's streams, as a
    user drives them)."""
    if shared is None:
        m.submodules.gcm = engine = GcmEngine(aes_cores=aes_cores)
        gcm = GcmUser().create(path=("gcm",))
        attach_engine(m, engine, gcm)
    else:
        gcm = shared
    m.submodules.merge_fifo = merge_fifo = SyncFIFOBuffered(
        width=MergeWord.as_shape().size, depth=merge_depth)
    m.submodules.merge = merge = CryptoMerge()
    m.d.comb += [merge.words.valid.eq(merge_fifo.r_rdy),
                 merge.words.payload.eq(merge_fifo.r_data),
                 merge_fifo.r_en.eq(merge.words.ready)]
    wiring.connect(m, wiring.flipped(gcm.o_chunk), merge.chunks)
    wiring.connect(m, merge.o, out)
    return gcm, merge_fifo


def feed_gcm(m, gcm, chunk, chunk_valid, load_state, save_chunk, state_taken):
    """Drive ``gcm``'s inputs: ``chunk`` while ``chunk_valid`` (with
    ``load_state`` on ``i_state`` when the chunk loads), or, while
    ``save_chunk``, the zero-byte chunk that returns the state on ``o_state``.
    ``state_taken`` (a register the caller clears at a frame's start) remembers
    that the state of a chunk still waiting for ``i_chunk`` was taken."""
    with m.If(save_chunk):
        m.d.comb += [gcm.i_chunk.valid.eq(1), gcm.i_chunk.payload.kind.eq(Kind.TEXT),
                     gcm.i_chunk.payload.save.eq(1)]
    with m.Else():
        m.d.comb += [gcm.i_chunk.valid.eq(chunk_valid), gcm.i_chunk.payload.eq(chunk)]
    m.d.comb += [gcm.i_state.valid.eq(chunk_valid & chunk.load & ~state_taken),
                 gcm.i_state.payload.eq(load_state)]
    with m.If(gcm.i_state.valid & gcm.i_state.ready):
        m.d.sync += state_taken.eq(1)
    with m.If(gcm.i_chunk.valid & gcm.i_chunk.ready):
        m.d.sync += state_taken.eq(0)
