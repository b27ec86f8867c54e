"""Fully pipelined AES-128/AES-256 forward cipher, round keys held per round.

One block enters and one block leaves per clock. Each round owns a register
with its round key; a key schedule unit expands a new key once and writes the
round keys down the pipeline as a *wave* that moves in step with the blocks,
so blocks under the old key (ahead of the wave) and under the new key (behind
it) are in flight at the same time and a key change costs two empty slots.

Why round keys are expanded once, not per block
-----------------------------------------------
The first design carried each block's 256-bit key through all 29 stages and
derived every round key again as the block moved (4 key S-boxes and ~512 XORs
per round, 28 EBR), so that a context switch cost nothing. Placed and routed
as part of the full-rate GCM engine, that schedule was 38 % of router2's
overuse (``hdl/crypto/README.md``: ``rkB*``, the previous round key, fanned
into the four prefix-XOR words and the next round, was 24 % alone) and the
engine never routed. A connection's key changes only at a segment boundary,
so here a round holds its round key in 128 flip-flops whose D input is one
write bus: nothing per block but an XOR with a local register, 28 EBR and
~5.5 k flip-flops fewer.

The schedule unit (:class:`_KeySchedule`) makes one round key per two enabled
clocks (read the key S-boxes, then the XORs) and drives a registered bus
``(round, key)``; round ``r``'s register takes the bus when it names ``r``.
It advances only with the pipeline's enable, so a stall freezes the wave and
the blocks together; the wave's ordering is exact, not a matter of margin:

* the bus names round ``r`` at edge ``E0 + 2r - 2`` (AES-256, ``r >= 2``;
  round 0 at ``E0``, 1 at ``E0 + 1``) or ``E0 + 2r`` (AES-128), where ``E0``
  is the enabled edge that takes ``key_load``, and round ``r``'s register
  loads it at the next enabled edge;
* a block taken at edge ``X`` reads round ``r``'s register in the cycle
  before edge ``X + 2r`` (round 0 before ``X``: the input XOR);
* so a block taken at ``X <= E0 - 1`` reads every round key of the old key
  before the wave overwrites it, and a block taken at ``X >= E0 + 2`` reads
  every round key of the new one after the wave has written it. The edges
  ``E0`` and ``E0 + 1`` take no block (``key_ready`` is low).

A new ``key_load`` waits until the previous wave has put its last round key
on the bus (``key_busy``: 26 enabled clocks for AES-256, 20 for AES-128), so
two waves never cross. What a key change costs the GCM engine is in
:mod:`.gcm`.

Why the S-boxes are synchronous ROM reads
-----------------------------------------
An S-box is an 8-input function per output bit: in LUT4 logic that is ~128 LUTs
and 3-4 levels of logic per S-box, ~29 k LUT4 for 228 S-boxes. A registered
256x8 ROM maps to one ECP5 EBR port instead, and each EBR has two ports, so one
:class:`~amaranth.lib.memory.Memory` serves two S-boxes: 112 EBR for the
rounds, 2 for the key schedule.

Why each round takes two cycles
-------------------------------
An EBR's clock-to-output is several times a flip-flop's, and the EBRs sit in
fixed rows across the die. With one cycle per round, one path held the EBR
read, MixColumns and AddRoundKey and the wire to the next round's EBR
address pins, and the pipeline placed at ~60 MHz with only 3.5 LUT levels
in it. So each round is two register stages: the ROM read, then a register
on the ROM's output; the EBR's clock-to-output has a cycle of its own, and
the round logic starts from flip-flops. (Yosys maps every ROM with
``REGMODE=NOREG`` and does not absorb the register into the EBR's own
output register, so it is a fabric register next to the EBR.) A round is:
ROM output register -> ShiftRows (wires) -> MixColumns and AddRoundKey (two
LUT levels, the round key a register) -> address of the next round's EBR.
Latency 29, one block per clock.

Byte order
----------
All 128-bit values are byte strings packed LSB-first: byte ``i`` of a block
(in FIPS-197 order) is bits ``8*i .. 8*i+7``. A 256-bit key holds the AES-128
key in its low 16 bytes.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SBOX", "RCON", "LATENCY", "KEY_LEAD", "AesPipeline", "aes_encrypt_ref"]


def _make_sbox():
    # Generated, not typed in: multiplicative inverse in GF(2^8) then the affine map.
    def gmul(a, b):
        p = 0
        for _ in range(8):
            if b & 1:
                p ^= a
            hi = a & 0x80
            a = (a << 1) & 0xFF
            if hi:
                a ^= 0x1B
            b >>= 1
        return p
    inv = [0] * 256
    for a in range(1, 256):
        for b in range(1, 256):
            if gmul(a, b) == 1:
                inv[a] = b
                break
    sbox = []
    for a in range(256):
        x = inv[a]
        y = x
        for i in range(1, 5):
            y ^= ((x << i) | (x >> (8 - i))) & 0xFF
        sbox.append(y ^ 0x63)
    return sbox


#: The AES S-box, FIPS-197 figure 7.
SBOX = _make_sbox()
#: Round constants, ``RCON[i]`` for key-expansion step ``i`` (1-based).
RCON = [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36, 0x6C, 0xD8, 0xAB, 0x4D]
#: Register stages: 14 rounds of two (the EBR read, its output register) plus the output register.
LATENCY = 29
#: Enabled edges from the one that takes ``key_load`` to the first that may
#: take a block under the new key (the wave's lead; see the module docstring).
KEY_LEAD = 2


def round_constant(r, aes256):
    """The round constant XORed into round key ``r`` (1..14) of either key size:
    AES-128 steps once a round, AES-256 every second round (0 for the others)."""
    if aes256:
        return RCON[r // 2] if r % 2 == 0 and r >= 2 else 0
    return RCON[r] if 1 <= r <= 10 else 0


def aes_encrypt_ref(key: bytes, block: bytes) -> bytes:
    """Python reference (through ``cryptography``), for tests."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _bytes(v, n):
    return [v[8 * i:8 * i + 8] for i in range(n)]


def _xor_words(v, n):
    # XOR of the first n 32-bit words of v, as a balanced tree.
    ws = [v[32 * j:32 * j + 32] for j in range(n)]
    while len(ws) > 1:
        ws = [ws[k] ^ ws[k + 1] if k + 1 < len(ws) else ws[k] for k in range(0, len(ws), 2)]
    return ws[0]


def _xtime(a):
    # Multiply by x in GF(2^8) mod x^8+x^4+x^3+x+1, as wiring plus three XORs.
    return Cat(a[7], a[0] ^ a[7], a[1], a[2] ^ a[7], a[3] ^ a[7], a[4], a[5], a[6])


def _shift_rows(b):
    # State byte (row r, column c) is b[r + 4c]; row r rotates left by r.
    return [b[r + 4 * ((c + r) % 4)] for c in range(4) for r in range(4)]


def _mix_columns(b):
    out = []
    for c in range(4):
        a0, a1, a2, a3 = b[4 * c:4 * c + 4]
        t = a0 ^ a1 ^ a2 ^ a3
        # b_i = a_i ^ t ^ xtime(a_i ^ a_{i+1}): the usual 2,3,1,1 rows, fewer XORs.
        out += [a0 ^ t ^ _xtime(a0 ^ a1), a1 ^ t ^ _xtime(a1 ^ a2),
                a2 ^ t ^ _xtime(a2 ^ a3), a3 ^ t ^ _xtime(a3 ^ a0)]
    return out


class _SboxBank(wiring.Component):
    """``n`` S-box lookups, registered, two per ROM (one EBR each on ECP5)."""

    def __init__(self, n):
        self.n = n
        super().__init__({"addr": In(8 * n), "data": Out(8 * n), "en": In(1)})

    def elaborate(self, platform):
        m = Module()
        for i in range(0, self.n, 2):
            # ram_style: a 2 kbit ROM is below Yosys's block-RAM threshold; without the
            # hint it becomes ~260 LUT4 of logic per S-box and the cipher does not fit.
            mem = m.submodules[f"rom{i // 2}"] = Memory(shape=8, depth=256, init=SBOX,
                                                        attrs={"ram_style": "block"})
            for j in range(i, min(i + 2, self.n)):
                port = mem.read_port(domain="sync")
                m.d.comb += [
                    port.addr.eq(self.addr[8 * j:8 * j + 8]),
                    port.en.eq(self.en),
                    self.data[8 * j:8 * j + 8].eq(port.data),
                ]
        return m



#: ``_KeySchedule.bus_round`` when the bus carries no round key.
_NO_ROUND = 15


class _KeySchedule(wiring.Component):
    """Expands one key at a time onto the round-key bus, a round key per two enabled clocks.

    It keeps the two latest round keys (``ka`` = rk(r-2), ``kb`` = rk(r-1)).
    ``phase`` 0: the key ROMs read SubWord of ``kb``'s last word; ``phase`` 1:
    round key ``r`` is the prefix XORs of its base words (rk(r-1) for AES-128,
    rk(r-2) for AES-256) with that SubWord, rotated and with the round constant
    where FIPS-197 says, and goes on the bus. AES-256's rk1 is the key's high
    half and goes on the bus in the ROM read of rk2's SubWord.
    """

    def __init__(self):
        super().__init__({
            "en": In(1), "load": In(1), "key": In(256), "aes256": In(1),
            "busy": Out(1), "key_aes256": Out(1),
            "bus_round": Out(4, init=_NO_ROUND), "bus_key": Out(128),
        })

    def elaborate(self, platform):
        m = Module()
        ka = Signal(128, reset_less=True)
        kb = Signal(128, reset_less=True)
        rnd = Signal(4)                 # the round key made next
        phase = Signal()
        a256 = self.key_aes256
        m.submodules.sbox = sbox = _SboxBank(4)
        m.d.comb += [sbox.addr.eq(kb[96:128]), sbox.en.eq(self.en)]

        t = sbox.data
        rcon = Signal(8)
        with m.Switch(Cat(rnd, a256)):
            for r in range(1, 15):
                for big in (0, 1):
                    if round_constant(r, big):
                        with m.Case(r | big << 4):
                            m.d.comb += rcon.eq(round_constant(r, big))
        # AES-256's odd rounds take SubWord without RotWord (FIPS-197 5.2, i mod Nk = 4).
        rotate = ~a256 | ~rnd[0]
        T = Mux(rotate, Cat(t[8:32], t[:8]), t) ^ rcon
        base = Mux(a256, ka, kb)
        rk = Cat(*[T ^ _xor_words(base, j + 1) for j in range(4)])

        with m.If(self.en):
            m.d.sync += self.bus_round.eq(_NO_ROUND)
            with m.If(self.load & ~self.busy):
                m.d.sync += [
                    self.bus_round.eq(0), self.bus_key.eq(self.key[:128]),
                    ka.eq(self.key[:128]), kb.eq(Mux(self.aes256, self.key[128:], self.key[:128])),
                    a256.eq(self.aes256), rnd.eq(1), phase.eq(0), self.busy.eq(1),
                ]
            with m.Elif(self.busy & ~phase):
                m.d.sync += phase.eq(1)
                with m.If(a256 & (rnd == 1)):
                    m.d.sync += [self.bus_round.eq(1), self.bus_key.eq(kb), rnd.eq(2)]
            with m.Elif(self.busy):
                m.d.sync += [
                    self.bus_round.eq(rnd), self.bus_key.eq(rk),
                    ka.eq(kb), kb.eq(rk), rnd.eq(rnd + 1), phase.eq(0),
                ]
                with m.If(rnd == Mux(a256, 14, 10)):
                    m.d.sync += self.busy.eq(0)
        return m


class AesPipeline(wiring.Component):
    """AES-128/256 encryption, 14 rounds of two register stages plus an output register.

    A block presented with ``en`` high appears on ``ct`` :data:`LATENCY` enabled
    cycles later, together with the ``side`` value given with it, encrypted
    under the key loaded last before it. ``en`` is a global stall: when low,
    nothing moves, the key schedule included (the ROM ports hold their
    outputs). AES-128 blocks finish at round 10 and ride an 8-register delay
    line so both key sizes have the same latency and can be mixed freely.

    Keys: ``key_load`` with ``en`` (and ``key_busy`` low) starts the wave of
    round keys for ``key``. The block presented in that cycle and in the next
    :data:`KEY_LEAD` ``- 1`` enabled cycles is not encrypted under either key
    (``key_ready`` is low in the latter: give empty slots); blocks before it
    are under the previous key, blocks after it under the new one.

    Parameters
    ----------
    side_width : int
        Width of the payload that travels alongside each block.
    en_width : int
        Copies of the enable: register stage ``k`` (1..:data:`LATENCY`; round
        ``r`` is stages ``2r - 1``, its ROM read, and ``2r``, the ROM output
        register) uses ``en[(k - 1) * en_width // LATENCY]``, the key schedule
        ``en[0]``. All copies must carry the same value; a user with ~10 k
        flip-flops on the enable gives each stage its own register copy so no
        single net has to reach the whole pipeline.

    Members
    -------
    en : In(en_width)
        Advance the pipeline.
    pt : In(128)
        Plaintext block (LSB-first bytes).
    side : In(side_width)
        Payload delayed with the block.
    ct : Out(128)
        Ciphertext, registered.
    side_out : Out(side_width)
        The payload given with the block now on ``ct``.
    key : In(256)
        Key bytes, LSB-first; AES-128 uses the low 16 bytes.
    key_aes256 : In(1)
        The key is AES-256 (14 rounds), not AES-128 (10).
    key_load : In(1)
        Start expanding ``key`` (taken at an edge with ``en`` and not ``key_busy``).
    key_busy : Out(1)
        The previous key's wave is still being made: ``key_load`` waits.
    key_ready : Out(1)
        A block presented now is under the key loaded last.
    """

    def __init__(self, side_width=1, en_width=1):
        self.side_width = side_width
        self.en_width = en_width
        super().__init__({
            "en": In(en_width), "pt": In(128), "side": In(side_width),
            "ct": Out(128), "side_out": Out(side_width),
            "key": In(256), "key_aes256": In(1), "key_load": In(1),
            "key_busy": Out(1), "key_ready": Out(1),
        })

    def elaborate(self, platform):
        m = Module()

        def stage_en(k):
            return self.en[(k - 1) * self.en_width // LATENCY]

        m.submodules.schedule = ks = _KeySchedule()
        m.d.comb += [ks.en.eq(stage_en(1)), ks.load.eq(self.key_load), ks.key.eq(self.key),
                     ks.aes256.eq(self.key_aes256), self.key_busy.eq(ks.busy)]
        lead = Signal(range(KEY_LEAD))
        with m.If(stage_en(1)):
            with m.If(self.key_load & ~ks.busy):
                m.d.sync += lead.eq(KEY_LEAD - 1)
            with m.Elif(lead != 0):
                m.d.sync += lead.eq(lead - 1)
        m.d.comb += self.key_ready.eq(lead == 0)

        # Round r's key, where round r uses it: the register takes the bus
        # when the bus names r (round 0's is the input AddRoundKey's).
        def round_key(r, k):
            rk = Signal(128, name=f"rk{r}", reset_less=True)
            with m.If(stage_en(k) & (ks.bus_round == r)):
                m.d.sync += rk.eq(ks.bus_key)
            return rk

        def delay(name, value, k, reset_less=True):
            reg = Signal(len(Value.cast(value)), name=name, reset_less=reset_less)
            with m.If(stage_en(k)):
                m.d.sync += reg.eq(value)
            return reg

        # The key size of the block, as of its entry (the schedule's register
        # changes at the edge that takes key_load, which takes no block).
        addr = self.pt ^ round_key(0, 1)
        a256_in, side_in = ks.key_aes256, self.side
        d128 = []                                # AES-128 results waiting for round 14

        for r in range(1, 15):
            k_rd, k_hold = 2 * r - 1, 2 * r
            # Stage k_rd: the ROMs read; stage k_hold: their outputs registered.
            data_sb = m.submodules[f"sb{r}"] = _SboxBank(16)
            m.d.comb += [data_sb.addr.eq(addr), data_sb.en.eq(stage_en(k_rd))]
            a256 = delay(f"a256_{r}", a256_in, k_rd)
            side = delay(f"side{r}", side_in, k_rd, reset_less=False)
            sb_q = delay(f"sbq{r}", data_sb.data, k_hold)
            a256_h = delay(f"a256h{r}", a256, k_hold)
            side_h = delay(f"sideh{r}", side, k_hold, reset_less=False)
            rk = round_key(r, k_hold)

            sr = _shift_rows(_bytes(sb_q, 16))
            mixed = Cat(*_mix_columns(sr)) ^ rk
            last = Cat(*sr) ^ rk
            s = Signal(128, name=f"s{r}")
            if r < 10:
                m.d.comb += s.eq(mixed)
            elif r == 10:
                m.d.comb += s.eq(Mux(a256_h, mixed, last))
                d128.append(s)
            elif r < 14:
                m.d.comb += s.eq(mixed)
            else:
                m.d.comb += s.eq(last)
            if 10 <= r < 14:
                # Carry the finished AES-128 block towards the common output
                # stage, beside round r + 1's two stages.
                d128.append(delay(f"d128_{r}a", d128[-1], k_hold + 1))
                d128.append(delay(f"d128_{r}b", d128[-1], k_hold + 2))

            addr = s
            a256_in, side_in = a256_h, side_h

        # Only the side payload has a reset (it tells empty slots apart): a reset
        # on every key and data register would be a net to ~10 k flip-flops.
        ct = Signal(128, reset_less=True)
        m.d.comb += self.ct.eq(ct)
        with m.If(stage_en(LATENCY)):
            m.d.sync += [
                ct.eq(Mux(a256_in, addr, d128[-1])),
                self.side_out.eq(side_in),
            ]
        return m
