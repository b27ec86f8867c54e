"""Fully pipelined AES-128/AES-256 forward cipher with an on-the-fly key schedule.

One block enters and one block leaves per clock, whatever mix of keys and key
sizes is in flight: every block travels with its own key, and each pipeline
stage derives the next round key from the previous ones as the block moves.

Why the key schedule runs in the pipeline
-----------------------------------------
The NIC keeps 256+ TLS contexts per direction. Storing expanded round keys per
context costs 176 B (AES-128) to 240 B (AES-256) each, and loading them into
per-round registers at a context switch would either cost ~15 cycles or a
240-byte-wide context port. Expanding on the fly costs 4 S-box lookups per round
(56 in all, against 224 for the data path: +25 %) and 256 flip-flops per stage,
but a context stores only its 32-byte key, a context switch costs no cycle
here, and blocks of different connections may follow each other back to back.

Why the S-boxes are synchronous ROM reads
-----------------------------------------
An S-box is an 8-input function per output bit: in LUT4 logic that is ~128 LUTs
and 3-4 levels of logic per S-box, ~36 k LUT4 for 280 S-boxes. A registered
256x8 ROM maps to one ECP5 EBR port instead, and each EBR has two ports, so one
:class:`~amaranth.lib.memory.Memory` serves two S-boxes: 140 EBR for the whole
cipher.

Why each round takes two cycles
-------------------------------
An EBR's clock-to-output is several times a flip-flop's, and the 140 EBRs
sit in fixed rows across the die. With one cycle per round, one path held
the EBR read, MixColumns and AddRoundKey and the wire to the next round's
EBR address pins, and the pipeline placed at ~60 MHz with only 3.5 LUT
levels in it. So each round is two register stages: the ROM read, then a
register on the ROM's output; the EBR's clock-to-output has a cycle of its
own, and the round logic starts from flip-flops. (Yosys maps every ROM with
``REGMODE=NOREG`` and does not absorb the register into the EBR's own
output register, so it is a fabric register next to the EBR.) The same
cycle lets the key schedule's XORs of the earlier round keys be registered,
so a round is: ROM output register -> ShiftRows (wires) -> MixColumns and
AddRoundKey (two LUT levels) -> address of the next round's EBR. Latency
29 instead of 15, still one block per clock.

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

__all__ = ["SBOX", "RCON", "LATENCY", "AesPipeline", "aes_encrypt_ref"]


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


class AesPipeline(wiring.Component):
    """AES-128/256 encryption, 14 rounds of two register stages plus an output register.

    A block presented with ``en`` high appears on ``ct`` :data:`LATENCY` enabled
    cycles later, together with the ``side`` value given with it. ``en`` is a
    global stall: when low, nothing moves (the ROM ports hold their outputs).
    AES-128 blocks finish at round 10 and ride an 8-register delay line so both
    key sizes have the same latency and can be mixed freely.

    Parameters
    ----------
    side_width : int
        Width of the payload that travels alongside each block.
    en_width : int
        Copies of the enable: register stage ``k`` (1..:data:`LATENCY`; round
        ``r`` is stages ``2r - 1``, its ROM read, and ``2r``, the ROM output
        register) uses ``en[(k - 1) * en_width // LATENCY]``. All copies must
        carry the same value; a user with ~10 k flip-flops on the enable gives
        each stage its own register copy so no single net has to reach the
        whole pipeline.

    Members
    -------
    en : In(en_width)
        Advance the pipeline.
    pt : In(128)
        Plaintext block (LSB-first bytes).
    key : In(256)
        Key bytes, LSB-first; AES-128 uses the low 16 bytes.
    aes256 : In(1)
        Select AES-256 (14 rounds) instead of AES-128 (10 rounds).
    side : In(side_width)
        Payload delayed with the block.
    ct : Out(128)
        Ciphertext, registered.
    side_out : Out(side_width)
        The payload given with the block now on ``ct``.
    """

    def __init__(self, side_width=1, en_width=1):
        self.side_width = side_width
        self.en_width = en_width
        super().__init__({
            "en": In(en_width), "pt": In(128), "key": In(256), "aes256": In(1),
            "side": In(side_width), "ct": Out(128), "side_out": Out(side_width),
        })

    def elaborate(self, platform):
        m = Module()

        def stage_en(k):
            return self.en[(k - 1) * self.en_width // LATENCY]

        # Inputs to round 1: what its ROMs read and what its registers hold.
        addr = self.pt ^ self.key[:128]          # AddRoundKey with rk0
        kaddr = self.key[96:128]                 # last word of rk0: SubWord for rk1 (AES-128)
        rkA_in, rkB_in = self.key[128:], self.key[:128]
        a256_in, side_in = self.aes256, self.side
        d128 = []                                # AES-128 results waiting for round 14

        def delay(name, value, k, reset_less=True):
            reg = Signal(len(Value.cast(value)), name=name, reset_less=reset_less)
            with m.If(stage_en(k)):
                m.d.sync += reg.eq(value)
            return reg

        for r in range(1, 15):
            k_rd, k_hold = 2 * r - 1, 2 * r
            # Stage k_rd: the ROM reads; the registers beside them hold rkA =
            # rk(r-2) and rkB = rk(r-1) (at round 1: key high half, rk0).
            data_sb = m.submodules[f"sb{r}"] = _SboxBank(16)
            key_sb = m.submodules[f"ksb{r}"] = _SboxBank(4)
            m.d.comb += [data_sb.addr.eq(addr), data_sb.en.eq(stage_en(k_rd)),
                         key_sb.addr.eq(kaddr), key_sb.en.eq(stage_en(k_rd))]
            rkA = delay(f"rkA{r}", rkA_in, k_rd)
            rkB = delay(f"rkB{r}", rkB_in, k_rd)
            a256 = delay(f"a256_{r}", a256_in, k_rd)
            side = delay(f"side{r}", side_in, k_rd, reset_less=False)

            # Stage k_hold: the ROM outputs registered, and the prefix XORs of
            # the base words of the key expansion (w_j = T ^ b_0 ^ ... ^ b_j,
            # base rk(r-1) for AES-128, rk(r-2) for AES-256), which depend on
            # registers only and so are computed during the ROM read.
            sb_q = delay(f"sbq{r}", data_sb.data, k_hold)
            t = delay(f"ksbq{r}", key_sb.data, k_hold)
            base = Mux(a256, rkA, rkB)
            pre = delay(f"rkpre{r}", Cat(*[_xor_words(base, j + 1) for j in range(4)]), k_hold)
            rkB_h = delay(f"rkBh{r}", rkB, k_hold)
            a256_h = delay(f"a256h{r}", a256, k_hold)
            side_h = delay(f"sideh{r}", side, k_hold, reset_less=False)

            # Round key r, from the prefix XORs and SubWord of rk(r-1)'s last
            # word: one LUT4 per bit (two key ROM bits, the key size, the prefix).
            t_rot = Cat(t[8:32], t[:8])
            rc128, rc256 = round_constant(r, False), round_constant(r, True)
            if r % 2 == 0:
                T = Mux(a256_h, t_rot ^ rc256, t_rot ^ rc128)
            else:
                T = Mux(a256_h, t, t_rot ^ rc128)
            w = [T ^ pre[32 * j:32 * j + 32] for j in range(4)]
            rk = Signal(128, name=f"rk{r}")
            if r == 1:
                # AES-256: rk1 is the key's high half.
                rkA_h = delay(f"rkAh{r}", rkA, k_hold)
                m.d.comb += rk.eq(Mux(a256_h, rkA_h, Cat(*w)))
            else:
                m.d.comb += rk.eq(Cat(*w))

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

            addr, kaddr = s, rk[96:128]
            rkA_in, rkB_in, a256_in, side_in = rkB_h, rk, a256_h, side_h

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
