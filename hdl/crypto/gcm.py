"""AES-GCM engine: byte chunks in, byte chunks out, per-context save/restore and seek.

How a record flows
------------------
The user sends one stream of *chunks* per record segment: up to 16 bytes each,
LSB-first, with a byte count and a kind (``AAD``, then ``TEXT``, then ``TAG``),
at any alignment relative to the record's 16-byte blocks. Each chunk comes out
transformed, one output chunk per input chunk, same count and kind:

* ``AAD`` bytes pass through (and are hashed);
* ``TEXT`` bytes are XORed with the CTR keystream (encrypt or decrypt);
* ``TAG`` bytes (16 of them, in as many chunks as needed) close the record: in
  encrypt mode the engine *replaces* them with the computed tag (so a TX engine
  can send placeholder bytes, as Linux ``tls_device`` does), in decrypt mode it
  passes them through and compares them with the computed tag. When the 16th tag
  byte has gone by, one :data:`TagResult` appears on ``o_tag``: the tag,
  whether it could be computed (not after a seek), and ``ok`` (decrypt: tag
  matches; a wrong tag, or a tag after a seek, never reads as ``ok``).

Contexts: load and save ride on the chunks
------------------------------------------
The engine holds no connection state between segments. The first chunk of a
segment carries ``load``: the engine takes one :class:`GcmState` from
``i_state`` with it. The last chunk of a segment may carry ``save``: the engine
emits the updated :class:`GcmState` on ``o_state`` after it. The state is one
flat struct (1088 bits); a context table keeps only its moving part
(:class:`GcmProgress`, 605 bits) and rebuilds the rest (:func:`resume_state`). A new record
is a fresh state (:func:`state_record`); a segment that starts mid-record
without the record's earlier bytes is a *seek* state (:func:`state_seek`).

What a context switch costs: the restored GHASH state reaches the back end
through a small FIFO in step with the chunk that loaded it, so the back end
needs nothing. The AES pipeline holds one key's round keys (see :mod:`.aes`):
a ``load`` whose key is the last one loaded costs **one cycle** (the key
comparison, in a register); a new key costs **three** (compare, start the
wave of round keys, wait for its two-slot lead), and waits while the
previous key's round keys are still being made, up to 26 cycles after that
key's start (only segments shorter than that, of different keys back to
back, see it). Chunks behind the new key's first may follow back to back:
blocks of the old key are still in the pipeline ahead of them.
With ``aes_cores`` (the boards' engine) each block carries its key and a
switch costs nothing.
Cycles spent per record: one extra cycle to compute ``H`` if the state asks
for it (``hgen``), one for the keystream block under the seek point
(``prime``), and two at the first ``TAG`` chunk (``E_K(J0)`` and the length
block).

Pipeline
--------
``front end`` (one register stage: decides what enters the AES pipeline this
cycle and tracks counter and keystream position) -> :class:`~.aes.AesPipeline`
(29 cycles, the chunk travels alongside its counter block) -> back end, six
register stages: ``R`` (AES output and the restored state registered), ``A``
(keystream window, lengths, H and H^2), ``B`` (GHASH block packing), ``C1`` and
``C2`` (the GHASH multiply in two halves, two interleaved accumulators), ``D``
(tag bytes and check; the output registers). Each back-end stage owns a group
of state fields and keeps the current context's values in its own loop
register; on a ``load`` slot it takes them from the restored state, which
travels down the pipeline with the slot, and the saved state is assembled at
``D``. Latency from chunk accepted to chunk out: 35 cycles. Back-pressure on any
output stalls the whole pipeline (a global enable, a register kept in one copy
per stage so that no net spans the chip); ``valid`` of every output is a
register and never depends on ``ready``.

With ``aes_cores`` (the boards' engine), :class:`~.aes_folded.AesFolded`
replaces the pipeline (16 cycles) and the front end issues a slot only on a
core's turn, every 4 clocks for 4 cores; the GHASH multiply is then
digit-serial (:class:`~.ghash.GfMulSerial`, 32 bits of the block a clock over
4 clocks, a quarter of the multiplier), and a slot waits for its product
three more stages between ``C1`` and ``C2`` (held in ``C1``'s registers: slots
are a core's spacing apart; a marker moves). Its inputs pass a
one-entry register first, so that a user's ``ready`` is not decoded from its
own chunk (see ``_input_register``). Latency 26 cycles.

For timing, no byte shifter of the back end takes its shift amount from a
stage's own loop: the front end mirrors the keystream position, the GHASH
packing count and the tag position (it sees every chunk first) and each slot
carries their values before it. The keystream window is shifted a cycle ahead
(in ``R``, from the ``ks`` that the slot in ``A`` leaves), the multiplier's
partial sums are unreduced (``C2`` reduces), and the tag bytes are compared in
tag order against bytes shifted in ``B``, so every stage is a few LUT levels.

GHASH lanes
-----------
The multiply takes two cycles, so a block cannot use the product of the block
just before it. Blocks alternate between two accumulators (``acc``, ``acc1``,
``lane`` says which is next); each block is multiplied by ``H^2``, the length
block (always the last) by ``H``, and the length block's ``C2`` folds
``acc ^ acc1 ^ E_K(J0)`` into the tag. That is ``sum X_i H^(n-i+1)``: the lane
of the last block holds ``X_n H + X_(n-2) H^3 + ...``, the other lane
``X_(n-1) H^2 + X_(n-3) H^4 + ...``. ``H^2`` is computed from ``H`` in stage
``A`` by a linear squarer (a few XORs per bit), so the state holds only ``H``.

Keystream alignment
-------------------
The back end keeps the last keystream block ``ks`` and ``kpos``, the number of
its bytes already used (16: used up, or none yet). A TEXT chunk of ``c`` bytes
needs a new keystream block iff ``kpos + c > 16``, and then at most one, since
``kpos <= 16`` and ``c <= 16``: the chunk's bytes are the 32-byte window
``ks || new`` shifted by ``kpos``. The front end mirrors ``kpos`` to know when to
issue a new counter block with the chunk. So one chunk per clock needs at most
one AES block per clock at any alignment, and the partially used keystream
block is part of the saved state.
"""

import enum

from amaranth import *
from amaranth.lib import data, enum as aenum, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..fabric import global_line, has_global_lines
from .aes import LATENCY as AES_LATENCY, AesPipeline
from .aes_folded import FOLDED_LATENCY, AesFolded, turn_spacing
from .ghash import GfMulSerial, _xor_tree, gf_mul_wide_parts, gf_reduce, gf_square

__all__ = [
    "Kind", "Chunk", "OutChunk", "TagResult", "GcmState", "GcmProgress", "GcmEngine", "LATENCY",
    "progress_of", "resume_state",
    "state_record", "state_seek", "state_value",
]

#: Cycles from a chunk accepted on ``i_chunk`` to the same chunk on ``o_chunk``
#: (no stall): front-end register, AES pipeline, output register.
LATENCY = 1 + AES_LATENCY + 5


class Kind(aenum.Enum, shape=2):
    """What the bytes of a chunk are."""
    AAD = 0
    TEXT = 1
    TAG = 2


class Chunk(data.Struct):
    """Input chunk: ``count`` bytes (0..16) of ``data``, LSB-first."""
    data: 128
    count: 5
    kind: Kind
    load: 1     #: take one state from ``i_state`` before this chunk
    save: 1     #: emit the state on ``o_state`` after this chunk
    user: 1     #: returned with the chunk's output and its tag (see :mod:`.share`)


class OutChunk(data.Struct):
    """Output chunk: the input chunk's bytes, transformed; bytes past ``count`` are 0."""
    data: 128
    count: 5
    kind: Kind
    user: 1     #: the input chunk's ``user``


class TagResult(data.Struct):
    """Emitted once per record, after its 16th tag byte."""
    tag: 128        #: the computed tag (LSB-first bytes)
    computed: 1     #: 0 if the record was entered by a seek: no tag possible
    ok: 1           #: computed, and (decrypt) the received tag matched
    user: 1         #: ``user`` of the chunk that completed the tag


class GcmState(data.Struct):
    """Everything the engine knows about one record of one connection.

    Static per connection: ``key``, ``aes256``, ``decrypt``, ``h`` (or
    ``hgen`` to have the engine compute ``H = E_K(0)`` at the next load). Per
    record: ``iv`` (the 96-bit nonce). The rest moves as bytes go by.
    """
    key: 256        #: AES key, LSB-first bytes; AES-128 uses the low 16 bytes
    aes256: 1
    decrypt: 1
    hgen: 1         #: compute H = E_K(0^128) before the next chunk
    h: 128          #: GHASH key H = E_K(0^128)
    iv: 96          #: nonce; counter blocks are iv || ctr (32-bit big-endian)
    ctr: 32         #: counter of the next keystream block to generate
    prime: 1        #: generate keystream block ``ctr`` into ``ks`` first (seek)
    ks: 128         #: last keystream block generated
    kpos: 5         #: bytes of ``ks`` already used (16: none left)
    acc: 128        #: GHASH accumulator, lane 0 (blocks alternate lanes); the tag once final
    pbuf: 128       #: bytes of the block being packed for GHASH (zero above pcnt)
    pcnt: 5         #: valid bytes in pbuf (a full block waits here until more bytes come)
    ptext: 1        #: pbuf holds TEXT (1) or AAD (0) bytes
    aad_len: 16     #: AAD bytes so far
    text_len: 24    #: TEXT bytes so far
    final: 1        #: GHASH finished; acc holds the tag
    tpos: 5         #: tag bytes seen so far
    bad: 1          #: a received tag byte differed (decrypt)
    seeked: 1       #: entered mid-record: the tag cannot be computed
    acc1: 128       #: GHASH accumulator, lane 1 (0 once final)
    lane: 1         #: the lane the next GHASH block joins


class GcmProgress(data.Struct):
    """What a context table keeps of a saved :class:`GcmState` between segments.

    The fields that move as the record's bytes go by (605 of the state's 1088
    bits). The rest is the connection's (key, AES-256, direction) or the
    record's (nonce), which the table holds already, or is derived from the key
    (H): :func:`resume_state` rebuilds the state with ``hgen`` set, so H is
    computed again at each resumed segment (one AES slot) and no copy of it,
    nor of the key, sits in the table. On a board this is what lets both tables
    live in block RAM and keeps their write multiplexers narrow.
    """
    ctr: 32
    prime: 1
    ks: 128
    kpos: 5
    acc: 128
    pbuf: 128
    pcnt: 5
    ptext: 1
    aad_len: 16
    text_len: 24
    final: 1
    tpos: 5
    bad: 1
    seeked: 1
    acc1: 128
    lane: 1


def progress_of(state):
    """The :class:`GcmProgress` part of ``state`` (a ``GcmState`` view): a view
    of its fields in declaration order, no logic."""
    return data.View(GcmProgress, Cat(*(state[name] for name, _ in GcmProgress.as_shape())))


def resume_state(m, progress, *, key, aes256, iv, decrypt):
    """The :class:`GcmState` that resumes a record from its ``progress``: the
    connection's key and direction, the record's nonce, H derived again."""
    state = Signal(GcmState)
    m.d.comb += [state[name].eq(progress[name]) for name, _ in GcmProgress.as_shape()]
    m.d.comb += [state.key.eq(key), state.aes256.eq(aes256), state.decrypt.eq(decrypt),
                 state.iv.eq(iv), state.hgen.eq(1)]
    return state


def _le(b: bytes) -> int:
    return int.from_bytes(b, "little")


def state_record(key: bytes, iv: bytes, *, decrypt=False, h: bytes | None = None):
    """A :class:`GcmState` (as a dict for ``GcmState.const``) starting a new record.

    Without ``h`` the engine derives H itself (one extra cycle).
    """
    assert len(key) in (16, 32) and len(iv) == 12
    return {
        "key": _le(key.ljust(32, b"\0")), "aes256": len(key) == 32, "decrypt": decrypt,
        "hgen": h is None, "h": _le(h) if h else 0, "iv": _le(iv),
        "ctr": 2, "prime": 0, "ks": 0, "kpos": 16,
        "acc": 0, "pbuf": 0, "pcnt": 0, "ptext": 0, "aad_len": 0, "text_len": 0,
        "final": 0, "tpos": 0, "bad": 0, "seeked": 0, "acc1": 0, "lane": 0,
    }


def state_seek(key: bytes, iv: bytes, offset: int, *, decrypt=False, h: bytes | None = None):
    """A state that starts the keystream at TEXT byte ``offset`` of a record.

    The engine computes the keystream block under ``offset`` first (one cycle);
    the record's tag is then not computable and ``o_tag`` says so.
    """
    st = state_record(key, iv, decrypt=decrypt, h=h)
    st.update(ctr=2 + offset // 16, prime=1, kpos=offset % 16, text_len=offset, seeked=1,
              ptext=1)
    return st


def state_value(fields: dict) -> int:
    """The integer value of a :class:`GcmState` given as a field dict."""
    return Const.cast(GcmState.const(fields)).value


class _Op(aenum.Enum, shape=3):
    NONE = 0
    CHUNK = 1   # a chunk (with a new keystream block iff newks)
    HGEN = 2    # E_K(0): the GHASH key
    KS = 3      # keystream block under a seek point
    EJ0 = 4     # E_K(J0): the tag mask; also flushes the last partial block
    LEN = 5     # the GHASH length block


class _Slot(data.Struct):
    op: _Op
    load: 1
    newks: 1
    save: 1
    kind: Kind
    count: 5
    data: 128
    # The front end's copies of back-end positions before this slot, so the
    # back end shifts by registered amounts (see GcmEngine.elaborate):
    dec: 1      # the context decrypts
    kpos: 5     # keystream bytes used
    psh: 5      # GHASH bytes waiting in pbuf, where this chunk's bytes go (0 with pflush)
    pflush: 1   # absorb pbuf as it is (EJ0, or AAD ended inside a block), restart with this chunk
    tpos: 5     # tag bytes seen
    user: 1


class _Front(data.Struct):
    # GcmState fields the front end keeps for the current context (same names).
    key: 256
    aes256: 1
    hgen: 1
    iv: 96
    ctr: 32
    prime: 1
    kpos: 5
    final: 1
    decrypt: 1
    pcnt: 5
    ptext: 1
    tpos: 5


# Which back-end stage updates which GcmState fields (the others pass through).
_OWN_A = ("key", "aes256", "decrypt", "hgen", "h", "iv", "ctr", "prime", "ks", "kpos",
          "aad_len", "text_len", "seeked")
_OWN_B = ("pbuf", "pcnt", "ptext")
_OWN_C1 = ("lane",)
_OWN_C2 = ("acc", "acc1", "final")
_MUL_PARTS = 8        # unreduced partial sums registered between the two multiplier stages
_OWN_D = ("tpos", "bad")
_BACK_STAGES = 6      # R, A, B, C1, C2, D (D is the output register)


def _counter_block(iv, ctr):
    return Cat(iv, ctr[24:32], ctr[16:24], ctr[8:16], ctr[0:8])


def _be64(x):
    v = Value.cast(x).as_unsigned()
    v = Cat(C(0, 3), v, C(0, 61 - len(v)))        # bytes -> bits, 64 bits
    return Cat(*[v[56 - 8 * i:64 - 8 * i] for i in range(8)])


def _byte_mask(count):
    # Bytes 0..count-1 set; count is 0..16.
    return Cat(*[(count > i).replicate(8) for i in range(16)])


class GcmEngine(wiring.Component):
    """Streaming AES-GCM (AES-128/256, 96-bit IV, 128-bit tag) at one chunk per clock.

    Members
    -------
    i_chunk : In(stream.Signature(Chunk))
        Record bytes, AAD then TEXT then TAG, up to 16 per beat, any alignment.
    i_state : In(stream.Signature(GcmState))
        One state per chunk that has ``load`` set, taken together with it.
    o_chunk : Out(stream.Signature(OutChunk))
        One beat per input chunk, in order.
    o_state : Out(stream.Signature(GcmState))
        One beat per input chunk that has ``save`` set, after that chunk's output.
    o_tag : Out(stream.Signature(TagResult))
        One beat per record, when its 16th tag byte has gone by.
    """
    i_chunk: In(stream.Signature(Chunk))
    i_state: In(stream.Signature(GcmState))
    o_chunk: Out(stream.Signature(OutChunk))
    o_state: Out(stream.Signature(GcmState))
    o_tag: Out(stream.Signature(TagResult))

    def __init__(self, fifo_depth=None, aes_cores=0):
        # Loads in flight between the front end and the AES output (where the
        # FIFO is read): the AES pipeline holds at most AES_LATENCY (29) slots,
        # and a full FIFO refuses a write even in the cycle it is read, so 30
        # never stalls, even for one-chunk segments; 32 keeps the pointers
        # plain binary counters. Folded AES holds at most 16 / spacing slots:
        # 16 entries, the depth of one LUT RAM (the FIFO is 1088 bits wide:
        # each 16 entries are 272 DPR16X4, ~1.9 k logic cells).
        self.fifo_depth = fifo_depth or (16 if aes_cores else 32)
        if aes_cores:
            assert self.fifo_depth > -(-FOLDED_LATENCY // turn_spacing(aes_cores)) + 1
        else:
            assert self.fifo_depth > AES_LATENCY
        #: 0: the unrolled AES pipeline, one slot per clock. n: n iterative
        #: AES cores (:class:`~.aes_folded.AesFolded`), a slot every
        #: ceil(15 / n) clocks at most: the boards' rate, 40 EBR instead of 140.
        self.aes_cores = aes_cores
        #: The boards' engine trades LUT levels for wires: its clock is slow
        #: (25 MHz on the boards) and its turn four clocks, and what kept its
        #: build from routing were the byte shifters spread over its region
        #: (README, "Boards"). It forms a chunk's keystream with one byte
        #: rotator, not four shifters, and checks a received tag with the
        #: shifter that also emits a computed one.
        self.compact = bool(aes_cores)
        #: Clocks of one GHASH product: 1 for the unrolled pipeline (two
        #: pipelined stages, a block every clock); with folded AES the slots are
        #: a core's spacing apart, so a digit-serial multiply may take as many
        #: clocks (up to 4: a quarter of the multiplier), and the slot waits for
        #: it in ``digits - 1`` more stages between C1 and C2.
        self.mul_digits = 1
        if aes_cores:
            self.mul_digits = max(d for d in (1, 2, 4) if d <= turn_spacing(aes_cores))
        self.latency = (1 + (FOLDED_LATENCY if aes_cores else AES_LATENCY) + 5 + self.mul_digits - 1
                        + bool(aes_cores))      # the boards' engine: its input register
        super().__init__()

    @staticmethod
    def _key_change(m, aes, i_state, need_load, adv):
        """Whether a state being loaded may go: its key is the pipeline's.

        The AES pipeline holds one key's round keys (:mod:`.aes`). A loading
        state's key is compared with the key loaded last, in a register (the
        comparator stays off the front end's path): one cycle per segment.
        On a mismatch the front end loads the key once the schedule is free,
        compares again and waits for the wave's lead: three cycles in all, more
        if the previous key's wave is still being made (segments shorter than
        ~26 slots of different keys back to back). The state's payload is
        stable while it waits (stream rules), so the registered comparison is
        the payload's."""
        ist = i_state.payload
        last = Signal(data.StructLayout({"key": 256, "aes256": 1}), reset_less=True)
        last_valid = Signal()       # no key loaded since reset
        checked = Signal()          # ``match`` is about the waiting state and ``last``
        match = Signal()
        load = Signal()
        m.d.comb += load.eq(need_load & checked & ~match & ~aes.key_busy & adv)
        m.d.sync += [
            match.eq(last_valid & (ist.key == last.key) & (ist.aes256 == last.aes256)),
            checked.eq(need_load & i_state.valid & ~i_state.ready & ~load),
        ]
        with m.If(load):
            m.d.sync += [last.key.eq(ist.key), last.aes256.eq(ist.aes256), last_valid.eq(1)]
        m.d.comb += [aes.key.eq(ist.key), aes.key_aes256.eq(ist.aes256), aes.key_load.eq(load)]
        return checked & match & aes.key_ready

    def elaborate(self, platform):
        m = Module()
        slot_width = _Slot.as_shape().size
        if self.aes_cores:
            m.submodules.aes = aes = AesFolded(cores=self.aes_cores, side_width=slot_width)
            aes_stages = 1
            # Slots enter only when a core takes them; the other clocks are
            # empty slots down the back end.
            turn = aes.turn
        else:
            m.submodules.aes = aes = AesPipeline(side_width=slot_width, en_width=AES_LATENCY)
            aes_stages = AES_LATENCY
            turn = C(1)
        m.submodules.rfifo = rfifo = SyncFIFO(width=GcmState.as_shape().size, depth=self.fifo_depth)

        o_chunk, o_state, o_tag = self.o_chunk, self.o_state, self.o_tag
        # Global enable, a register: every output has a two-entry buffer, and
        # the pipeline moves in the next cycle only if each buffer will then
        # hold at most one beat (so the beat that cycle may deliver fits).
        # ``ready`` thus reaches a few flip-flops, not the ~18 k enables. The
        # register is replicated, one copy per pipeline stage (``keep``: Yosys
        # would merge identical flip-flops; ``tlsnic synth`` marks the cells),
        # so each enable net stays within its stage.
        # On an ECP5 (the boards) one register drives a global line for the
        # front and back end instead, which reaches every slice's clock enable
        # (:mod:`tlsnic.hdl.fabric`): even a stage's copy fanned out to ~1.4 k
        # enables over the engine's region and was among the most overused
        # nets of the board's routing. The AES keeps its copies (they also
        # enable its S-boxes' block RAM).
        waits = [f"c1w{i}" for i in range(self.mul_digits - 1)]
        stages = ("front", "r", "a", "b", "c1", *waits, "c2", "d")
        adv_aes = [Signal(init=1, name=f"adv_aes{i}", attrs={"keep": 1})
                   for i in range(aes_stages)]
        if has_global_lines(platform):
            adv_line = Signal(init=1, name="adv")
            adv = dict.fromkeys(stages, global_line(m, platform, "gcm_adv", adv_line))
            adv_regs = [adv_line, *adv_aes]
        else:
            adv = {k: Signal(init=1, name=f"adv_{k}", attrs={"keep": 1}) for k in stages}
            adv_regs = [*adv.values(), *adv_aes]
        m.d.comb += aes.en.eq(Cat(*adv_aes))

        # ---------------------------------------------------------------- front end
        if self.aes_cores:
            i_chunk, i_state = self._input_register(m)
        else:
            i_chunk, i_state = self.i_chunk, self.i_state
        ch = i_chunk.payload
        ist = i_state.payload
        front = Signal(_Front)
        loaded = Signal()      # this chunk's load already happened (it waits on hgen/prime/tag slots)
        lenpend = Signal()     # EJ0 issued, LEN next
        need_load = Signal()
        m.d.comb += need_load.eq(i_chunk.valid & ch.load & ~loaded)
        cur = Signal(_Front)
        with m.If(need_load):
            m.d.comb += [getattr(cur, f).eq(getattr(ist, f)) for f, _ in data.Layout.cast(_Front)]
        with m.Else():
            m.d.comb += cur.eq(front)
        go = Signal()
        can_load = i_state.valid & rfifo.w_rdy
        if not self.aes_cores:      # (folded AES: each block carries its key)
            can_load &= self._key_change(m, aes, i_state, need_load, adv["front"])
        m.d.comb += go.eq(adv["front"] & turn & i_chunk.valid & (~need_load | can_load))

        # The front end mirrors the back end's byte positions (keystream, GHASH
        # packing, tag) and hands each slot the values before it: the back-end
        # stages then shift by registered amounts instead of by values from
        # their own one-cycle loops.
        slot = Signal(_Slot)
        pt = Signal(128)
        nxt = Signal(_Front)
        consume = Signal()
        is_text = ch.kind == Kind.TEXT
        m.d.comb += [nxt.eq(cur), slot.load.eq(need_load), slot.dec.eq(cur.decrypt),
                     slot.user.eq(ch.user),
                     slot.kpos.eq(cur.kpos), slot.tpos.eq(cur.tpos)]
        with m.If(cur.hgen):
            m.d.comb += [slot.op.eq(_Op.HGEN), pt.eq(0), nxt.hgen.eq(0)]
        with m.Elif(cur.prime):
            m.d.comb += [slot.op.eq(_Op.KS), pt.eq(_counter_block(cur.iv, cur.ctr)),
                         nxt.ctr.eq(cur.ctr + 1), nxt.prime.eq(0)]
        with m.Elif((ch.kind == Kind.TAG) & ~cur.final & ~lenpend):
            m.d.comb += [slot.op.eq(_Op.EJ0), pt.eq(_counter_block(cur.iv, C(1, 32))),
                         slot.pflush.eq(cur.pcnt != 0), nxt.pcnt.eq(0)]
        with m.Elif(lenpend):
            m.d.comb += [slot.op.eq(_Op.LEN), nxt.final.eq(1), nxt.tpos.eq(0)]
        with m.Else():
            newks = is_text & (cur.kpos + ch.count > 16)
            m.d.comb += [
                slot.op.eq(_Op.CHUNK), consume.eq(1), slot.newks.eq(newks),
                slot.save.eq(ch.save), slot.kind.eq(ch.kind), slot.count.eq(ch.count),
                slot.data.eq(ch.data), pt.eq(_counter_block(cur.iv, cur.ctr)),
            ]
            with m.If(is_text):
                with m.If(newks):
                    m.d.comb += [nxt.ctr.eq(cur.ctr + 1), nxt.kpos.eq(cur.kpos + ch.count - 16)]
                with m.Else():
                    m.d.comb += nxt.kpos.eq(cur.kpos + ch.count)
            with m.If(ch.kind == Kind.TAG):
                m.d.comb += nxt.tpos.eq(cur.tpos + ch.count)
            with m.Elif((cur.pcnt != 0) & (cur.ptext != is_text)):
                # AAD ended inside a block: stage B absorbs it zero-padded.
                m.d.comb += [slot.pflush.eq(1), nxt.pcnt.eq(ch.count), nxt.ptext.eq(is_text)]
            with m.Else():
                total = cur.pcnt + ch.count
                m.d.comb += [slot.psh.eq(cur.pcnt), nxt.pcnt.eq(Mux(total > 16, total - 16, total))]
                with m.If(ch.count != 0):
                    m.d.comb += nxt.ptext.eq(is_text)

        m.d.comb += [
            i_chunk.ready.eq(go & consume),
            i_state.ready.eq(go & need_load),
            rfifo.w_en.eq(go & need_load),
            rfifo.w_data.eq(ist.as_value()),
            aes.pt.eq(pt),
            *([aes.key.eq(cur.key), aes.aes256.eq(cur.aes256)] if self.aes_cores else []),
            aes.side.eq(slot.as_value()),
        ]
        # A slot that does not go is an empty one: only its op and load are
        # cleared, the fields the back end acts on without looking at op
        # (every other use is behind op). Clearing all 159 bits put ``go``,
        # the front end's last decision, on that many LUTs in the AES's first
        # stage; it was the routed critical path (5f15d5d: 10.5 ns, 9.3 of
        # them wire, from the restore FIFO's level through ``go``).
        side = data.View(_Slot, aes.side)
        with m.If(~go):
            m.d.comb += [side.op.eq(_Op.NONE), side.load.eq(0)]
        with m.If(go):
            m.d.sync += [front.eq(nxt), loaded.eq(~consume & (loaded | need_load))]
            with m.If(slot.op == _Op.EJ0):
                m.d.sync += lenpend.eq(1)
            with m.If(slot.op == _Op.LEN):
                m.d.sync += lenpend.eq(0)

        # ----------------------------------------------------------------- back end
        # Data registers are reset_less: only slots (their op), valid bits and
        # control state need the reset, and a reset on all ~20 k flip-flops is
        # a 20 k-load net. A context's fields are taken from its state at load.
        # Six register stages, each owning a group of state fields (see _OWN):
        # R registers the AES output and the restored state; A applies the
        # keystream; B packs GHASH blocks; C1 and C2 run the GHASH multiply; D
        # handles the tag and drives the outputs. Each stage keeps its own
        # fields of the current context in a loop register (its last result)
        # and takes them from the pipeline (the restored state travels along)
        # on a load slot.
        def restore(bc, src, own, load, fields):
            # bc = src, except this stage's fields come from its loop register
            # unless the slot loads a state.
            m.d.comb += bc.eq(src)
            with m.If(~load):
                m.d.comb += [getattr(bc, f).eq(getattr(own, f)) for f in fields]

        def is_chunk(s, kind):
            return (s.op == _Op.CHUNK) & (s.kind == kind)

        # ---- stage R: AES output, restored state, and what stage A can know early
        s_out = data.View(_Slot, aes.side_out)
        m.d.comb += rfifo.r_en.eq(adv["r"] & (s_out.op != _Op.NONE) & s_out.load)
        r_s = Signal(_Slot)
        r_blk = Signal(128, reset_less=True)
        r_rs = Signal(GcmState, reset_less=True)
        # The chunk's keystream bytes are ``(ks || blk) >> 8*kpos``: ``lo``, the
        # bytes still in ``ks``, and ``hi``, those of the new block. ``lo``
        # depends on the ``ks`` that the slot now in A leaves (or the restored
        # one), all known here, a cycle early.
        mask_o = _byte_mask(s_out.count)
        tmask_o = Mux(is_chunk(s_out, Kind.TEXT), mask_o, 0)
        a_ks = Signal(128)         # stage A's ks before the slot it holds (driven below)
        a_ks_blk = Signal()        # ... which that slot replaces by its AES block
        r_lo = Signal(128, reset_less=True)  # ks bytes from kpos on, for the slot in R
        r_din = Signal(128, reset_less=True)  # chunk bytes, zero past count
        r_tm = Signal(16, reset_less=True)  # TEXT byte mask
        r_gm = Signal(16, reset_less=True)  # TEXT byte mask, 0 when decrypting
        rs_ks = data.View(GcmState, rfifo.r_data).ks
        if self.compact:
            # One byte rotator: byte j of ``ks`` (from kpos on) or of the new
            # block (below kpos), rotated down by kpos, is byte j - kpos of
            # ``(ks || blk) >> 8*kpos``: ``r_lo`` holds all of it.
            src = Mux(s_out.load, rs_ks, Mux(a_ks_blk, r_blk, a_ks))
            merged = Cat(*[Mux(s_out.kpos > j, aes.ct.word_select(j, 8), src.word_select(j, 8))
                           for j in range(16)])
            lo_o = (Cat(merged, merged) >> (s_out.kpos * 8))[:128]
        else:
            # Four shifters, one LUT level less: ``hi`` alone, ``lo``'s three
            # sources shifted apart and chosen after the shift.
            r_hi = Signal(128, reset_less=True)  # new keystream bytes, masked to TEXT bytes
            r_hig = Signal(128, reset_less=True)  # the same, 0 when decrypting (GHASH takes the input)
            hi_o = (Cat(C(0, 128), aes.ct) >> (s_out.kpos * 8))[:128] & tmask_o
            lo_o = Mux(s_out.load, rs_ks >> (s_out.kpos * 8),
                       Mux(a_ks_blk, r_blk >> (s_out.kpos * 8), a_ks >> (s_out.kpos * 8)))
            with m.If(adv["r"]):
                m.d.sync += [r_hi.eq(hi_o), r_hig.eq(Mux(s_out.dec, 0, hi_o))]
        with m.If(adv["r"]):
            m.d.sync += [r_s.eq(aes.side_out), r_blk.eq(aes.ct),
                         r_lo.eq(lo_o),
                         r_din.eq(s_out.data & mask_o),
                         r_tm.eq(Cat(*[tmask_o[8 * i] for i in range(16)])),
                         r_gm.eq(Mux(s_out.dec, 0, Cat(*[tmask_o[8 * i] for i in range(16)])))]
            with m.If(s_out.load):
                m.d.sync += r_rs.eq(rfifo.r_data)

        # ---- stage A: keystream, lengths, H and H^2, seek
        s = r_s
        blk = r_blk
        live_a = s.op != _Op.NONE
        own_a = Signal(GcmState, reset_less=True)
        bc = Signal(GcmState)
        restore(bc, r_rs, own_a, s.load, _OWN_A)
        bn = Signal(GcmState)
        m.d.comb += bn.eq(bc)
        cnt = s.count

        def bytes_and(v, bmask):
            return v & Cat(*[b.replicate(8) for b in bmask])
        # dout: the output bytes (TEXT XORed with the keystream); g: the
        # GHASH bytes (the ciphertext: dout when encrypting, the input when
        # decrypting). One LUT level from registers.
        dout = Signal(128)
        g = Signal(128)
        ks_out, ks_ghash = bytes_and(r_lo, r_tm), bytes_and(r_lo, r_gm)
        if not self.compact:
            ks_out, ks_ghash = ks_out ^ r_hi, ks_ghash ^ r_hig
        m.d.comb += [dout.eq(r_din ^ ks_out), g.eq(r_din ^ ks_ghash)]
        with m.Switch(s.op):
            with m.Case(_Op.HGEN):
                m.d.comb += [bn.h.eq(blk), bn.hgen.eq(0)]
            with m.Case(_Op.KS):
                m.d.comb += [bn.ks.eq(blk), bn.ctr.eq(bc.ctr + 1), bn.prime.eq(0)]
            with m.Case(_Op.CHUNK):
                with m.If(s.kind == Kind.TEXT):
                    m.d.comb += bn.text_len.eq(bc.text_len + cnt)
                    with m.If(s.newks):
                        m.d.comb += [bn.ks.eq(blk), bn.ctr.eq(bc.ctr + 1),
                                     bn.kpos.eq(bc.kpos + cnt - 16)]
                    with m.Else():
                        m.d.comb += bn.kpos.eq(bc.kpos + cnt)
                with m.Elif(s.kind == Kind.AAD):
                    m.d.comb += bn.aad_len.eq(bc.aad_len + cnt)
        m.d.comb += [a_ks.eq(bc.ks),
                     a_ks_blk.eq((s.op == _Op.KS) | is_chunk(s, Kind.TEXT) & s.newks)]
        # Stage B's controls, decoded here from the slot (see _Slot.psh).
        nontag = is_chunk(s, Kind.AAD) | is_chunk(s, Kind.TEXT)
        over = ~s.pflush & (s.psh + cnt > 16)
        absorb = (s.op == _Op.EJ0) & s.pflush | nontag & (s.pflush | over)
        a_s = Signal(_Slot)
        a_gs = Signal(256, reset_less=True)  # GHASH bytes shifted to their place in the partial block
        a_ej0 = Signal(128, reset_less=True)
        a_st = Signal(GcmState, reset_less=True)
        a_h2 = Signal(128, reset_less=True)
        a_ctl = Signal(data.StructLayout({
            "gh": 1,     # a GHASH block goes to the multiplier
            "xp": 1,     # ... made of the partial block (pbuf)
            "xg": 1,     # ... and/or the low half of the shifted bytes
            "xlen": 1,   # ... or it is the length block
            "pkeep": 1,  # pbuf keeps its bytes
            "plo": 1,    # pbuf takes the low half of the shifted bytes
            "phi": 1,    # pbuf takes the high half
        }))
        with m.If(adv["a"]):
            m.d.sync += [a_s.eq(s), a_s.data.eq(dout), a_ej0.eq(blk), a_st.eq(bn),
                         a_gs.eq(Cat(g, C(0, 128)) << (s.psh * 8)),
                         a_h2.eq(gf_square(bn.h)),
                         a_ctl.gh.eq(absorb | (s.op == _Op.LEN)),
                         a_ctl.xp.eq(absorb),
                         a_ctl.xg.eq(nontag & over),
                         a_ctl.xlen.eq(s.op == _Op.LEN),
                         a_ctl.pkeep.eq(~absorb),
                         a_ctl.plo.eq(nontag & (s.pflush | ~over)),
                         a_ctl.phi.eq(nontag & over)]
            with m.If(live_a):
                m.d.sync += own_a.eq(bn)

        # ---- stage B: pack bytes into GHASH blocks
        # A full block stays in pbuf until a byte of the next one arrives, so
        # the last block is always still there for EJ0 to flush, and at most
        # one block is absorbed per cycle. AAD that ends inside a block is
        # absorbed zero-padded and TEXT starts afresh (``pflush``).
        s = a_s
        live_b = s.op != _Op.NONE
        own_b = Signal(GcmState, reset_less=True)
        bc = Signal(GcmState)
        restore(bc, a_st, own_b, s.load, _OWN_B)
        bn = Signal(GcmState)
        m.d.comb += bn.eq(bc)
        cnt = s.count
        ctl = a_ctl
        gs_lo, gs_hi = a_gs[:128], a_gs[128:]
        lenblk = Cat(_be64(bc.aad_len), _be64(bc.text_len))
        gh_x = Signal(128)
        m.d.comb += [
            gh_x.eq(Mux(ctl.xp, bc.pbuf, 0) | Mux(ctl.xg, gs_lo, 0) | Mux(ctl.xlen, lenblk, 0)),
            bn.pbuf.eq(Mux(ctl.pkeep, bc.pbuf, 0) | Mux(ctl.plo, gs_lo, 0) | Mux(ctl.phi, gs_hi, 0)),
        ]
        with m.Switch(s.op):
            with m.Case(_Op.EJ0):
                m.d.comb += bn.pcnt.eq(0)
            with m.Case(_Op.CHUNK):
                with m.If(s.kind != Kind.TAG):
                    total = bc.pcnt + cnt
                    with m.If(s.pflush):
                        m.d.comb += [bn.pcnt.eq(cnt), bn.ptext.eq(s.kind == Kind.TEXT)]
                    with m.Else():
                        m.d.comb += bn.pcnt.eq(Mux(total > 16, total - 16, total))
                        with m.If(cnt != 0):
                            m.d.comb += bn.ptext.eq(s.kind == Kind.TEXT)
        b_s = Signal(_Slot)
        b_ej0 = Signal(128, reset_less=True)
        b_st = Signal(GcmState, reset_less=True)
        b_en = Signal()
        b_x = Signal(128, reset_less=True)
        # The multiplier's constant operand: H for the length block, else H^2.
        # The full-rate multiply takes one register copy per partial product
        # (``keep``: Yosys would merge them): each bit reaches 128 AND terms,
        # and with one copy those wires spanned the whole multiplier (14 % of
        # router2's overuse at iteration 5 on 0dbf69f, the largest net group).
        # A copy feeds the 16 x 128 terms of its own part; the copies' D net
        # fans out 8 ways.
        b_k = [Signal(128, name=f"b_k{p}", reset_less=True, attrs={"keep": 1})
               for p in range(_MUL_PARTS)] if self.mul_digits == 1 else [Signal(128, name="b_k", reset_less=True)]
        b_lacc = Signal(128, reset_less=True)  # a loading slot's accumulator of its lane (for C1)
        b_tm = Signal(16, reset_less=True)  # TAG bytes to check (decrypt only; see C2)
        tmask = Signal(16)
        if self.compact:
            # C2 compares in chunk order (see there): b_tm marks chunk bytes
            # that are tag bytes, and the chunk's data is the slot's own.
            m.d.comb += tmask.eq(Cat(*[(cnt > i) & (s.tpos + i < 16) for i in range(16)]))
        else:
            # b_tdata: the TAG bytes at their place in the tag, b_tm which of
            # the 16 places they fill.
            m.d.comb += tmask.eq(Cat(*[(s.tpos <= i) & (s.tpos + cnt > i) for i in range(16)]))
            b_tdata = Signal(128, reset_less=True)
            with m.If(adv["b"]):
                m.d.sync += b_tdata.eq((s.data << (s.tpos * 8))[:128])
        with m.If(adv["b"]):
            m.d.sync += [b_s.eq(s), b_ej0.eq(a_ej0), b_st.eq(bn), b_en.eq(ctl.gh), b_x.eq(gh_x),
                         *[k.eq(Mux(ctl.xlen, bn.h, a_h2)) for k in b_k],
                         b_lacc.eq(Mux(bn.lane, bn.acc1, bn.acc)),
                         b_tm.eq(Mux(is_chunk(s, Kind.TAG) & s.dec, tmask, 0))]
            with m.If(live_b):
                m.d.sync += own_b.eq(bn)

        # ---- stages C1, C2: GHASH with a two-stage multiplier and two lanes.
        # Blocks alternate between two accumulators (``lane``: the next one);
        # each is multiplied by H^2, except the length block by H, and the
        # length block's stage folds acc ^ acc1 ^ E_K(J0) into the tag:
        # sum X_i H^(n-i+1) as GCM defines it. A lane's value is needed again
        # two blocks (so at least two cycles) later: the multiply has two
        # cycles. C1 owns ``lane`` and starts the multiply (unreduced partial
        # sums registered); C2 owns the accumulators, reduces and finishes it.
        s = b_s
        live_c1 = s.op != _Op.NONE
        own_c1 = Signal(GcmState, reset_less=True)
        own_c2 = Signal(GcmState, reset_less=True)
        c1_s = Signal(_Slot)
        c1_st = Signal(GcmState, reset_less=True)
        bc = Signal(GcmState)
        restore(bc, b_st, own_c1, s.load, _OWN_C1)
        bn = Signal(GcmState)
        m.d.comb += bn.eq(bc)
        # The lane this block joins: last written by a block at least two
        # cycles back (the block one cycle back went to the other lane), so its
        # value is a register: the restored one (b_lacc), the one restored by
        # the slot now in C2 (same context; c1_lacc, chosen by its next lane),
        # or C2's own. Every select is a register bit (NONE slots never load).
        # (With a digit-serial multiply the blocks are further apart, and the
        # lane's last block has passed C2 too.)
        prev = Signal(128)
        c1_lacc = Signal(128, reset_less=True)
        c2_load = Signal()               # the slot now in C2 loads (driven below)
        c2_lacc = Signal(128)            # ... and its c1_lacc
        with m.If(s.load):
            m.d.comb += prev.eq(b_lacc)
        with m.Elif(c2_load):
            m.d.comb += prev.eq(c2_lacc)
        with m.Else():
            m.d.comb += prev.eq(Mux(own_c1.lane, own_c2.acc1, own_c2.acc))
        mul_b = Signal(128)
        m.d.comb += mul_b.eq(prev ^ b_x)
        if self.mul_digits == 1:
            parts = gf_mul_wide_parts(m, b_k, mul_b, _MUL_PARTS, name="ghash")
        else:
            # Every live slot starts a product (slots are at least
            # mul_digits clocks apart); C2 reads it when the slot gets there.
            m.submodules.ghash = ghash = GfMulSerial(self.mul_digits)
            m.d.comb += [ghash.en.eq(adv["c1"]), ghash.start.eq(live_c1),
                         ghash.a.eq(b_k[0]), ghash.b.eq(mul_b)]
            parts = []
        with m.If(b_en):
            m.d.comb += bn.lane.eq(~bc.lane)
        with m.If(s.op == _Op.LEN):
            m.d.comb += bn.lane.eq(0)
        c1_parts = [Signal(255, name=f"c1_part{i}", reset_less=True) for i in range(len(parts))]
        c1_en = Signal()
        c1_lane = Signal()
        c1_ej0 = Signal(128, reset_less=True)
        c1_tm = Signal(16, reset_less=True)
        c1_enc_tag = Signal()      # the output bytes are the computed tag's
        # With the digit-serial multiply, C1's registers take only live slots
        # and hold them while the product is made (see below).
        with m.If(adv["c1"] & (live_c1 if waits else 1)):
            m.d.sync += [c1_s.eq(s), c1_st.eq(bn), c1_en.eq(b_en), c1_lane.eq(bc.lane),
                         c1_lacc.eq(Mux(bn.lane, bc.acc1, bc.acc)),
                         c1_ej0.eq(b_ej0), c1_tm.eq(b_tm),
                         c1_enc_tag.eq(is_chunk(s, Kind.TAG) & ~s.dec)]
            m.d.sync += [r.eq(p) for r, p in zip(c1_parts, parts)]
            if not self.compact:
                c1_tdata = Signal(128, reset_less=True)
                m.d.sync += c1_tdata.eq(b_tdata)
        with m.If(adv["c1"] & live_c1):
            m.d.sync += own_c1.eq(bn)

        # The digit-serial multiply's wait: mul_digits - 1 more stages between
        # C1 and C2. Live slots are at least mul_digits advances apart (a
        # core's turn, ``mul_digits`` <= its spacing), so while one waits no
        # other enters C1: the slot and all C2 takes with it stay in C1's
        # registers, and only a one-bit marker travels the wait stages (it
        # was ~2.7 k flip-flops of copies). C2 sees the held slot when the
        # marker arrives, an empty slot otherwise.
        if waits:
            marker = Signal(name="c1_live")
            with m.If(adv["c1"]):
                m.d.sync += marker.eq(live_c1)
            for w in waits:
                later = Signal(name=f"{w}_live")
                with m.If(adv[w]):
                    m.d.sync += later.eq(marker)
                marker = later
            arrived = marker
            held = Signal(_Slot)
            m.d.comb += held.eq(c1_s)
            with m.If(~arrived):
                m.d.comb += [held.op.eq(_Op.NONE), held.load.eq(0)]   # as an empty slot
            c1_s, c1_en = held, c1_en & arrived

        m.d.comb += [c2_load.eq(c1_s.load), c2_lacc.eq(c1_lacc)]
        s = c1_s
        live_c2 = s.op != _Op.NONE
        bc = Signal(GcmState)
        restore(bc, c1_st, own_c2, s.load, _OWN_C2)
        bn = Signal(GcmState)
        m.d.comb += bn.eq(bc)
        ej0 = Signal(128, reset_less=True)
        prod = Signal(128)
        m.d.comb += prod.eq(gf_reduce(_xor_tree(c1_parts)) if c1_parts else ghash.p)
        with m.If(s.op == _Op.LEN):
            m.d.comb += [bn.acc.eq(prod ^ Mux(c1_lane, bc.acc, bc.acc1) ^ ej0), bn.acc1.eq(0),
                         bn.final.eq(1)]
        with m.Elif(c1_en):
            with m.If(c1_lane):
                m.d.comb += bn.acc1.eq(prod)
            with m.Else():
                m.d.comb += bn.acc.eq(prod)
        # Tag bytes for D, from the tag as it stands (a TAG chunk follows its
        # LEN block by at least a cycle): the bytes for the output (encrypt)
        # and whether a received byte differs (decrypt). The full-rate engine
        # compares in tag order, the received bytes shifted there by B, so
        # that no shift precedes the comparison; the boards' engine compares
        # the output's shifted tag with the chunk, one shifter fewer.
        tag_here = (bc.acc >> (s.tpos * 8))[:128]
        computed, received = (tag_here, s.data) if self.compact else (bc.acc, c1_tdata)
        mism = Cat(*[(computed.word_select(i, 8) != received.word_select(i, 8)) & c1_tm[i]
                     for i in range(16)])
        c_s = Signal(_Slot)
        c_st = Signal(GcmState, reset_less=True)
        c_bad = Signal()
        c_tdone = Signal()
        with m.If(adv["c2"]):
            m.d.sync += [c_s.eq(s), c_st.eq(bn),
                         c_s.data.eq(Mux(c1_enc_tag, tag_here & _byte_mask(s.count), s.data)),
                         c_bad.eq(mism.any()),
                         c_tdone.eq(is_chunk(s, Kind.TAG) & (s.tpos < 16)
                                    & (s.tpos + s.count >= 16))]
            with m.If(live_c2):
                m.d.sync += own_c2.eq(bn)
            with m.If(s.op == _Op.EJ0):
                m.d.sync += ej0.eq(c1_ej0)

        # ---- stage D: tag check, outputs
        s = c_s
        live_d = s.op != _Op.NONE
        own_d = Signal(GcmState, reset_less=True)
        bc = Signal(GcmState)
        restore(bc, c_st, own_d, s.load, _OWN_D)
        bn = Signal(GcmState)
        m.d.comb += bn.eq(bc)
        cnt = s.count
        with m.If(s.op == _Op.LEN):
            m.d.comb += [bn.tpos.eq(0), bn.bad.eq(0)]
        with m.If(is_chunk(s, Kind.TAG)):
            m.d.comb += [bn.tpos.eq(bc.tpos + cnt), bn.bad.eq(bc.bad | c_bad)]

        # Outputs: two-entry buffers (b0 drives the port, b1 is the skid slot).
        push_c, push_s, push_t = Signal(), Signal(), Signal()
        beat_c = Signal(OutChunk)
        beat_t = Signal(TagResult)
        m.d.comb += [
            beat_c.data.eq(s.data), beat_c.count.eq(cnt), beat_c.kind.eq(s.kind),
            beat_c.user.eq(s.user), beat_t.user.eq(s.user),
            beat_t.tag.eq(bc.acc), beat_t.computed.eq(~bc.seeked),
            beat_t.ok.eq(~bc.seeked & ~bn.bad),
        ]
        with m.If(adv["d"] & live_d):
            m.d.sync += own_d.eq(bn)
            with m.If(s.op == _Op.CHUNK):
                m.d.comb += [push_c.eq(1), push_s.eq(s.save), push_t.eq(c_tdone)]
        room = []
        for name, port, push, beat in (("oc", o_chunk, push_c, beat_c),
                                       ("os", o_state, push_s, bn),
                                       ("ot", o_tag, push_t, beat_t)):
            b0 = Signal.like(port.payload, name=f"{name}_out", reset_less=True)
            b1 = Signal.like(port.payload, name=f"{name}_skid", reset_less=True)
            v1 = Signal(name=f"{name}_v1")
            m.d.comb += port.payload.eq(b0)
            pop = port.valid & port.ready
            with m.If(pop):
                with m.If(v1):
                    m.d.sync += b0.eq(b1)
                    with m.If(push):
                        m.d.sync += b1.eq(beat)
                    with m.Else():
                        m.d.sync += v1.eq(0)
                with m.Elif(push):
                    m.d.sync += b0.eq(beat)
                with m.Else():
                    m.d.sync += port.valid.eq(0)
            with m.Elif(push):
                with m.If(port.valid):
                    m.d.sync += [b1.eq(beat), v1.eq(1)]
                with m.Else():
                    m.d.sync += [b0.eq(beat), port.valid.eq(1)]
            # Beats held after this cycle: at most one, or the next one may not fit.
            n = port.valid.as_unsigned() + v1 + push - pop
            room.append(n <= 1)
        m.d.sync += [a.eq(Cat(*room).all()) for a in adv_regs]
        return m

    def _input_register(self, m):
        """The boards' engine takes its inputs through a one-entry register.

        Why: the front end's ``i_chunk.ready`` (``go & consume``) is decoded
        from the chunk itself, so a user whose next state depends on
        ``ready`` waited for its own chunk's decode: on the board that round
        trip was half of the core clock's critical path (the TLS walker,
        ``hdl/tls/README.md``, "Timing"). A register in between gives the user
        a ``ready`` that depends only on this register and the chunk's
        ``load`` and ``i_state.valid``. One entry is enough: the front end
        takes a chunk every 4 clocks at most, the register refills in 2.
        Returns the front end's view of the two streams.
        """
        i_chunk, i_state = self.i_chunk, self.i_state
        in_chunk = stream.Signature(Chunk).create(path=("in_chunk",))
        in_state = stream.Signature(GcmState).create(path=("in_state",))
        full = Signal()
        chunk_q = Signal(Chunk, reset_less=True)
        state_q = Signal(GcmState, reset_less=True)
        load = i_chunk.payload.load
        # A load chunk is taken with its state, as the front end would.
        m.d.comb += [i_chunk.ready.eq(~full & (~load | i_state.valid)),
                     i_state.ready.eq(~full & load & i_chunk.valid)]
        with m.If(i_chunk.valid & i_chunk.ready):
            m.d.sync += [chunk_q.eq(i_chunk.payload), state_q.eq(i_state.payload), full.eq(1)]
        with m.Elif(in_chunk.valid & in_chunk.ready):
            m.d.sync += full.eq(0)
        m.d.comb += [in_chunk.valid.eq(full), in_chunk.payload.eq(chunk_q),
                     in_state.valid.eq(full & chunk_q.load), in_state.payload.eq(state_q)]
        return in_chunk, in_state


def make_engine(**kw):
    """Factory for :class:`cosim.build.Design` (``"tlsnic.hdl.crypto.gcm:make_engine"``)."""
    return GcmEngine(**kw)
