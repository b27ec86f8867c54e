"""Put the cipher's output bytes back into the frame words they came from.

The TLS walker (:mod:`.tx`) sends every frame word down a FIFO and, for the
word's record bytes that need the cipher (TLS payload and tag), one GCM chunk
per contiguous run of lanes. The GCM engine returns the chunks 20-odd clocks
later, in order, one output chunk per input chunk. A word holds at most three
such runs (the end of one record's tag, the one payload byte and the first tag
byte of a minimal 22-byte TLS 1.3 record), so each FIFO entry says how many
chunks belong to it and at which lane each starts; the merger waits for them
and writes their bytes over those lanes.

Chunks the walker issues for its own purposes are recognised and dropped: the
AAD of a record (kind ``AAD``) and the zero-byte chunk that carries ``save``
at the end of a frame.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..crypto.gcm import Kind, OutChunk
from ..net.frame import FrameWord

__all__ = ["MergeWord", "CryptoMerge"]


class MergeWord(data.Struct):
    """A frame word waiting for its cipher bytes."""
    data: 64        #: the word as it goes out, except the lanes of its chunks
    keep: 8
    last: 1
    forward: 1      #: 0: consume the word and its chunks, emit nothing (DUMP)
    chunks: 2       #: GCM chunks whose bytes go into this word (0..3), in lane order
    lanes: 9        #: first lane of chunk ``k`` in bits ``3k..3k+2``


class CryptoMerge(wiring.Component):
    """Joins :class:`MergeWord` with the GCM engine's output chunks.

    Members
    -------
    words : In(stream.Signature(MergeWord))
    chunks : In(stream.Signature(OutChunk))
        The GCM engine's ``o_chunk``.
    o : Out(stream.Signature(FrameWord))
    """
    words: In(stream.Signature(MergeWord))
    chunks: In(stream.Signature(OutChunk))
    o: Out(stream.Signature(FrameWord))

    def elaborate(self, platform):
        m = Module()
        word = self.words.payload
        chunk = self.chunks.payload
        ours = self.chunks.valid & (chunk.kind != Kind.AAD) & (chunk.count != 0)
        # Walker-internal chunks never wait for a word.
        with m.If(self.chunks.valid & ~ours):
            m.d.comb += self.chunks.ready.eq(1)

        placed = Signal(2)              # chunks of this word already merged into ``partial``
        partial = Signal(64)
        base = Mux(placed != 0, partial, word.data)
        lane = word.lanes.word_select(placed, 3)
        lanes = Cat((chunk.count > i).replicate(8) for i in range(8))
        merged = Signal(64)
        m.d.comb += merged.eq((base & ~(lanes << (lane * 8))[:64])
                              | (chunk.data[:64] << (lane * 8))[:64])

        out_word = Signal(FrameWord)
        m.d.comb += [out_word.keep.eq(word.keep), out_word.last.eq(word.last),
                     self.o.payload.eq(out_word)]
        remaining = word.chunks - placed
        with m.If(self.words.valid):
            with m.If(remaining == 0):
                m.d.comb += [out_word.data.eq(base), self.o.valid.eq(word.forward)]
                m.d.comb += self.words.ready.eq(self.o.ready | ~word.forward)
            with m.Elif(ours):
                with m.If(remaining == 1):
                    m.d.comb += [out_word.data.eq(merged), self.o.valid.eq(word.forward)]
                    with m.If(self.o.ready | ~word.forward):
                        m.d.comb += [self.words.ready.eq(1), self.chunks.ready.eq(1)]
                        m.d.sync += placed.eq(0)
                with m.Else():
                    m.d.comb += self.chunks.ready.eq(1)
                    m.d.sync += [partial.eq(merged), placed.eq(placed + 1)]
        return m
