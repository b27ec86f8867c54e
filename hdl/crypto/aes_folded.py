"""AES-128/256 at a fraction of the rate: a few iterative cores taking blocks in turn.

The first piece of the board-rate GCM engine (``hdl/crypto/README.md``, "Next:
a board-rate engine"). :class:`~.aes.AesPipeline` unrolls all 14 rounds: one
block per clock, 114 EBR. The boards need an eighth of that, so
:class:`AesFolded` has ``cores`` iterative cores of one round per clock (16
data and 4 key S-box lookups each, 10 EBR), which take blocks in turn: one
block every ``cores`` enabled clocks, at a fixed latency, with the
pipeline's ``en`` stall and ``side`` payload, so an engine can swap one for
the other if its front end issues blocks only when ``turn`` says. Unlike the
pipeline, which holds one key's round keys, each block here carries its own
key: a core has the time to expand it.

A core's round is one clock: the S-box ROMs' registered outputs are the
round's state register, ShiftRows is wiring, and MixColumns and AddRoundKey
lead to the next round's ROM addresses. The round key is expanded on the fly
(its last word's SubWord read beside the data S-boxes), from the two previous
round keys each core keeps. Every block takes 14
rounds; an AES-128 block is done after 10 and waits, so both key sizes have
the same latency.

Timeline of one block in core ``c`` (clocks counted in enabled cycles):
clock 0 (``turn`` and core ``c``'s slot): the ROMs read ``pt ^ rk0``; clocks
1..14: round ``r`` = clock ``r`` computes ``rk_r`` and the round from the ROM
outputs and (rounds < 14) the ROMs read the next addresses; clock 15: the
result and the block's ``side`` are registered on ``ct`` / ``side_out``.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .aes import _SboxBank, round_constant, _bytes, _mix_columns, _shift_rows, _xor_words

__all__ = ["FOLDED_LATENCY", "AesFolded", "turn_spacing"]

#: Enabled clocks from a block taken to its ciphertext on ``ct``.
FOLDED_LATENCY = 16
_ROUNDS = 14


def turn_spacing(cores):
    """Clocks between turns of ``cores`` cores: each is busy for 15 clocks a block."""
    return -(-(_ROUNDS + 1) // cores)


class AesFolded(wiring.Component):
    """AES-128/256 encryption by ``cores`` iterative cores, one block every ``cores`` clocks.

    Parameters
    ----------
    cores : int
        Iterative cores (at least 1; each is busy for 15 of every
        ``cores * ceil(15 / cores)`` clocks, so any count works).
    side_width : int
        Width of the payload that travels alongside each block.

    Members
    -------
    en : In(1)
        Advance: when low, nothing moves.
    turn : Out(1)
        A block presented in this (enabled) clock is taken. Blocks presented
        in other clocks are ignored (and so is their ``side``).
    pt : In(128)
        Plaintext block (LSB-first bytes).
    key : In(256)
        The block's key, LSB-first; AES-128 uses the low 16 bytes.
    aes256 : In(1)
        The key is AES-256.
    side : In(side_width)
        Payload delayed with the block.
    ct, side_out : Out
        The block taken :data:`FOLDED_LATENCY` enabled clocks earlier, and its
        ``side``; ``side_out`` is 0 in the clocks between results.
    """

    def __init__(self, cores=4, side_width=1):
        assert cores >= 1
        self.cores = cores
        # Clocks between a core's turns: the turn order repeats every `period`
        # clocks, at least the 15 a core is busy.
        self.spacing = turn_spacing(cores)
        self.period = self.spacing * cores
        self.side_width = side_width
        super().__init__({
            "en": In(1), "turn": Out(1), "pt": In(128), "key": In(256), "aes256": In(1),
            "side": In(side_width), "ct": Out(128), "side_out": Out(side_width),
        })

    def elaborate(self, platform):
        m = Module()
        en = self.en

        # Clock within the turn period; core c loads at clock c * spacing.
        phase = Signal(range(self.period))
        with m.If(en):
            m.d.sync += phase.eq(Mux(phase == self.period - 1, 0, phase + 1))
        m.d.comb += self.turn.eq(phase % self.spacing == 0)

        # The side payload waits in a register of the core that took the
        # block and comes out with its result: ``cores`` registers, not a
        # delay line of FOLDED_LATENCY (1,500 flip-flops fewer on the
        # boards). The valid bits have a reset, as the pipeline's slots:
        # after a reset no stale slot comes out; the payload does not need
        # one (``side_out`` is 0 unless its valid bit is set).
        side_valid = Signal(name="side_valid")
        side_q = Signal(self.side_width, name="side_q", reset_less=True)
        m.d.comb += self.side_out.eq(Mux(side_valid, side_q, 0))

        results = [self._core(m, c, phase) for c in range(self.cores)]
        sides = []
        for c in range(self.cores):
            side = Signal(self.side_width, name=f"c{c}_side", reset_less=True)
            taken = Signal(name=f"c{c}_taken")
            with m.If(en & (phase == c * self.spacing)):
                m.d.sync += [side.eq(self.side), taken.eq(1)]
            sides.append((side, taken))
        # The core whose block was taken FOLDED_LATENCY - 1 clocks ago
        # finishes in this clock: its result goes to ct, its side to
        # side_out. (With a period of 15 the core takes its next block in
        # this clock too; its side register is read before it is written.)
        with m.If(en):
            m.d.sync += side_valid.eq(0)
            with m.Switch(phase):
                for p in range(self.period):
                    for c in range(self.cores):
                        if (p - (FOLDED_LATENCY - 1) - c * self.spacing) % self.period == 0:
                            with m.Case(p):
                                m.d.sync += [self.ct.eq(results[c]), side_q.eq(sides[c][0]),
                                             side_valid.eq(sides[c][1])]
        return m

    def _core(self, m, c, phase):
        en = self.en
        rnd = Signal(range(_ROUNDS + 2), name=f"c{c}_round")   # 1..14 while busy, 0 idle
        # Round keys and the result: data, loaded at the start, so no reset
        # (the control below has one).
        rkA = Signal(128, name=f"c{c}_rkA", reset_less=True)     # rk(r-2): at round 1 the key's high half
        rkB = Signal(128, name=f"c{c}_rkB", reset_less=True)     # rk(r-1)
        out = Signal(128, name=f"c{c}_out", reset_less=True)
        data_sb = m.submodules[f"c{c}_sb"] = _SboxBank(16)
        key_sb = m.submodules[f"c{c}_ksb"] = _SboxBank(4)
        m.d.comb += [data_sb.en.eq(en), key_sb.en.eq(en)]

        # What the round counter decides for the current round (the round
        # constant, SubWord without RotWord, rk1 as the key's high half, the
        # last round) is registered a round ahead, beside ``rnd``: the round's
        # path from the ROM outputs to the next addresses then has no decode
        # of ``rnd`` in it (it was the deepest path of the engine).
        rc = Signal(8, name=f"c{c}_rc")
        sub_only = Signal(name=f"c{c}_sub_only")
        # The controls that select or enable a whole block (this core's turn,
        # the key size, the first round key, the last round) are registered
        # once per 32-bit column (``keep``, see :data:`tlsnic.synth_core.KEEP_REPLICAS`):
        # each copy reaches its column's ~100 LUT and enable inputs beside
        # that column's S-boxes, not ~400 across the core, and the board's
        # router ranked the single nets among its most overused.
        def per_column(name, init=0):
            return [Signal(init=init, name=f"c{c}_{name}{j}", attrs={"keep": 1}) for j in range(4)]
        # start[j]: phase == c * spacing, registered from the phase before.
        start = per_column("start", init=int(c * self.spacing == 0))
        a256, first, final = per_column("a256"), per_column("first"), per_column("final")
        with m.If(en):
            m.d.sync += [s.eq(phase == (c * self.spacing - 1) % self.period) for s in start]

        def words(v):
            return [v[32 * j:32 * (j + 1)] for j in range(4)]

        sb_q, t = data_sb.data, key_sb.data
        t_rot = Cat(t[8:32], t[:8])
        T = Signal(32, name=f"c{c}_T")
        m.d.comb += T.eq(Mux(sub_only, t, t_rot ^ rc))
        base = Cat(*[Mux(a256[j], a, b) for j, (a, b) in enumerate(zip(words(rkA), words(rkB)))])
        w = Cat(*[T ^ _xor_words(base, j + 1) for j in range(4)])
        rk = Signal(128, name=f"c{c}_rk")
        m.d.comb += rk.eq(Cat(*[Mux(first[j], a, b) for j, (a, b) in enumerate(zip(words(rkA), words(w)))]))

        sr = _shift_rows(_bytes(sb_q, 16))
        mixed = Cat(*_mix_columns(sr)) ^ rk
        last = Cat(*sr) ^ rk

        # Round 1's ROM reads at the start: pt ^ rk0, and SubWord of rk0's
        # last word (AES-128; AES-256's rk1 is the key's high half, read
        # later). Otherwise the next round's: this round's state and rk_r's
        # last word (AES-256 reads it for every round; AES-128 too).
        load = words(self.pt ^ self.key[:128])
        m.d.comb += [data_sb.addr.eq(Cat(*[Mux(start[j], load[j], nxt)
                                           for j, nxt in enumerate(words(mixed))])),
                     key_sb.addr.eq(Mux(start[3], self.key[96:128], rk[96:128]))]
        busy = en & (rnd != 0)
        for j, (ka, kb, rk_j, last_j, out_j) in enumerate(
                zip(words(self.key[128:]), words(self.key[:128]), words(rk), words(last), words(out))):
            with m.If(en & start[j]):
                m.d.sync += [a256[j].eq(self.aes256), rkA[32 * j:32 * (j + 1)].eq(ka),
                             rkB[32 * j:32 * (j + 1)].eq(kb),
                             first[j].eq(self.aes256), final[j].eq(0)]
            with m.Elif(busy):
                m.d.sync += [rkA[32 * j:32 * (j + 1)].eq(rkB[32 * j:32 * (j + 1)]),
                             rkB[32 * j:32 * (j + 1)].eq(rk_j), first[j].eq(0),
                             final[j].eq(Mux(a256[j], rnd == 13, rnd == 9))]
                with m.If(final[j]):
                    m.d.sync += out_j.eq(last_j)
        with m.If(en & start[0]):
            m.d.sync += [rnd.eq(1),
                         rc.eq(Mux(self.aes256, round_constant(1, True), round_constant(1, False))),
                         sub_only.eq(self.aes256)]
        with m.Elif(busy):
            # The next round's decisions, by table from this one's number.
            rc_next = [Array(C(round_constant(r + 1, k), 8) for r in range(_ROUNDS + 1))[rnd]
                       for k in (False, True)]
            m.d.sync += [rnd.eq(Mux(rnd == _ROUNDS, 0, rnd + 1)),
                         rc.eq(Mux(a256[0], rc_next[1], rc_next[0])),
                         sub_only.eq(a256[0] & ~rnd[0])]
        return out
