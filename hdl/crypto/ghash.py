"""GHASH arithmetic: multiplication in GF(2^128) as GCM defines it.

GCM writes a block as a polynomial whose ``x^0`` coefficient is the *most*
significant bit of the first byte (NIST SP 800-38D, 6.3). Blocks here are packed
LSB-first by byte (see :mod:`.aes`), so coefficient ``k`` is bit
``8*(k//8) + 7 - k%8`` of the signal; :func:`coeffs` and :func:`from_coeffs`
are pure wiring.

Single-cycle and two-stage use
------------------------------
The GHASH recurrence ``Y = (Y ^ X) * H`` puts the multiplier inside a feedback
loop. :func:`gf_mul` is the whole product in one cycle (~7 LUT4 levels, ~126
MHz alone on an ECP5-85F speed 8 after placement: too slow to sit in a loop
with anything else). :func:`gf_mul_wide_parts` returns the product unreduced,
as partial sums that a pipeline registers, then XORs and reduces
(:func:`gf_reduce`) one cycle later; the GCM engine uses it with two
interleaved accumulators and ``H^2`` (:func:`gf_square`, a linear map), see
:mod:`.gcm`. :func:`gf_mul_parts` is the same split with each part reduced.

Digit-serial use
----------------
The board-rate engine takes a block every 4 clocks at most, so one product
may take 4 clocks. :class:`GfMulSerial` multiplies ``a`` by ``b`` one 32-bit
digit of ``b`` per clock: ``a * b = sum_k (a * x^(32k) mod P) * b_k``, with
``a * x^(32k)`` carried from clock to clock by :func:`gf_times_xn` (a shift
and one fold: at most five bits XORed per output bit) and the partial
products (:func:`gf_mul_digit`, 128 x 32 ANDs and an XOR tree) summed
unreduced. A quarter of the ANDs and XORs of a whole product, and one
reduction at the end.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["coeffs", "from_coeffs", "gf_mul", "gf_mul_parts", "gf_mul_wide_parts", "gf_reduce",
           "gf_square", "gf_mul_digit", "gf_times_xn", "gf_mul_ref", "GfMul", "GfMulSerial"]


def coeffs(v):
    """Polynomial coefficients (bit ``k`` = coefficient of ``x^k``) of a packed block."""
    return Cat(*[v[8 * (k // 8) + 7 - (k % 8)] for k in range(128)])


def from_coeffs(c):
    """Inverse of :func:`coeffs`."""
    return Cat(*[c[8 * (b // 8) + 7 - (b % 8)] for b in range(128)])


def _xor_tree(vals):
    # Balanced XOR of a list of values (synthesis maps it in log depth).
    while len(vals) > 1:
        vals = [vals[k] ^ vals[k + 1] if k + 1 < len(vals) else vals[k]
                for k in range(0, len(vals), 2)]
    return vals[0]


def gf_mul_wide_parts(m, a, b, parts=1, name="gfw"):
    """Unreduced GHASH product of two packed blocks, as ``parts`` partial sums.

    Each returned signal holds 255 polynomial coefficients (bit ``k``: ``x^k``,
    not packed); their XOR, reduced by :func:`gf_reduce`, is ``a * b``. Bit
    ``k`` of a part is the XOR of ``a_i & b_j`` over ``i + j = k`` for the
    part's range of ``j``: two-input ANDs and an XOR tree. Forming the reduced
    multiples ``a * x^j mod P`` first (as :func:`gf_mul` did) puts an XOR of
    several bits of ``a`` in front of every AND, about two LUT levels more. A
    pipeline registers the parts and reduces their XOR in the next stage.

    ``a`` may be a list of ``parts`` copies of the operand (registers holding
    the same value), one per part: every bit of ``a`` reaches 128 AND terms,
    and a copy per part keeps each copy's fan-out inside its part.
    """
    copies = a if isinstance(a, (list, tuple)) else [a]
    assert len(copies) in (1, parts)
    cas = [Signal(128, name=f"{name}_a{p}") for p in range(len(copies))]
    cb = Signal(128, name=f"{name}_b")
    m.d.comb += [*[ca.eq(coeffs(v)) for ca, v in zip(cas, copies)], cb.eq(coeffs(b))]
    outs = []
    per = 128 // parts
    for p in range(parts):
        ca = cas[p % len(cas)]
        terms = [Cat(C(0, j), ca & cb[j].replicate(128), C(0, 127 - j))
                 for j in range(p * per, (p + 1) * per)]
        res = Signal(255, name=f"{name}_w{p}")
        m.d.comb += res.eq(_xor_tree(terms))
        outs.append(res)
    return outs


def _reduce_matrix():
    # Column k: x^k mod P for k = 0..254, GCM's P = x^128 + x^7 + x^2 + x + 1.
    cols = []
    for k in range(255):
        v = 1 << k
        for t in range(254, 127, -1):
            if v >> t & 1:
                v ^= (1 << t) | (0x87 << (t - 128))
        cols.append(v)
    return cols


def gf_reduce(w):
    """Packed block of a polynomial ``w`` of up to 255 coefficients, mod P: a linear map.

    Each output bit is the XOR of at most eight coefficients of ``w``.
    """
    w = Value.cast(w)
    assert len(w) <= 255
    pk = [8 * (k // 8) + 7 - (k % 8) for k in range(128)]   # coefficient k -> packed bit
    cols = _reduce_matrix()
    out = [None] * 128
    for k in range(128):
        out[pk[k]] = _xor_tree([w[i] for i in range(len(w)) if cols[i] >> k & 1])
    return Cat(*out)


def gf_mul_parts(m, a, b, parts=1, name="gfm"):
    """Combinational GHASH product of two packed blocks, as ``parts`` partial sums.

    The XOR of the returned packed 128-bit signals is ``a * b``: the parts of
    :func:`gf_mul_wide_parts`, each reduced on its own (reduction is linear).
    """
    outs = []
    for p, w in enumerate(gf_mul_wide_parts(m, a, b, parts, name)):
        res = Signal(128, name=f"{name}_p{p}")
        m.d.comb += res.eq(gf_reduce(w))
        outs.append(res)
    return outs


def gf_mul(m, a, b, name="gfm"):
    """Combinational GHASH product of two packed 128-bit blocks.

    Adds the logic to module ``m`` and returns a 128-bit signal.
    """
    return gf_mul_parts(m, a, b, 1, name)[0]


def gf_square(a):
    """``a * a`` in GF(2^128) of a packed block: a linear map, a few XORs per bit.

    Squaring over GF(2) only spreads the coefficients (``x^i`` to ``x^2i``), so
    output coefficient ``k`` is the XOR of the ``a_i`` whose ``x^2i mod P``
    has ``x^k``.
    """
    a = Value.cast(a)
    pk = [8 * (k // 8) + 7 - (k % 8) for k in range(128)]   # coefficient k -> packed bit
    cols = _reduce_matrix()
    out = [None] * 128
    for k in range(128):
        out[pk[k]] = _xor_tree([a[pk[i]] for i in range(128) if cols[2 * i] >> k & 1])
    return Cat(*out)


def gf_mul_digit(a, d):
    """Unreduced product of ``a`` (128 coefficients) and a digit ``d`` (``w``
    coefficients): ``127 + w`` coefficients, bit ``k`` the coefficient of ``x^k``."""
    a, d = Value.cast(a), Value.cast(d)
    w = len(d)
    return _xor_tree([Cat(C(0, j), a & d[j].replicate(128), C(0, w - 1 - j)) for j in range(w)])


def gf_times_xn(a, n):
    """``a * x^n mod P`` on 128 coefficients (``n <= 121``): the coefficients
    shifted out at the top fold back once, times ``x^7 + x^2 + x + 1``."""
    assert 0 < n <= 121
    a = Value.cast(a)
    top = a[128 - n:]
    fold = Cat(top, C(0, 7)) ^ Cat(C(0, 1), top, C(0, 6)) ^ Cat(C(0, 2), top, C(0, 5)) \
        ^ Cat(C(0, 7), top)
    return Cat(C(0, n), a[:128 - n]) ^ fold


def gf_mul_ref(x: bytes, y: bytes) -> bytes:
    """Python reference (SP 800-38D algorithm 1) on 16-byte blocks."""
    X, V = int.from_bytes(x, "big"), int.from_bytes(y, "big")
    Z = 0
    for i in range(128):
        if (X >> (127 - i)) & 1:
            Z ^= V
        V = (V >> 1) ^ (0xE1 << 120) if V & 1 else V >> 1
    return Z.to_bytes(16, "big")


class GfMul(wiring.Component):
    """Registered GHASH multiplier, for unit tests and synthesis probes.

    Inputs and output are both registered, so an out-of-context build times
    exactly one multiply from register to register.

    Members
    -------
    a, b : In(128)
        Packed blocks.
    p : Out(128)
        ``a * b`` in GF(2^128), two clocks later.
    """
    a: In(128)
    b: In(128)
    p: Out(128)

    def elaborate(self, platform):
        m = Module()
        a, b = Signal(128), Signal(128)
        m.d.sync += [a.eq(self.a), b.eq(self.b), self.p.eq(gf_mul(m, a, b))]
        return m


class GfMulSerial(wiring.Component):
    """GHASH multiplier that takes ``digits`` clocks: one digit of ``b`` a clock.

    Parameters
    ----------
    digits : int
        Clocks per product (1, 2, 4 or 8): the digit is ``128 / digits`` bits.

    Members
    -------
    en : In(1)
        Advance: when low, nothing moves.
    start : In(1)
        Take ``a`` and ``b`` in this (enabled) clock; it is the product's first.
    a, b : In(128)
        Packed blocks, read only in the ``start`` clock.
    p : Out(128)
        ``a * b`` after ``digits`` enabled clocks (the ``start`` clock counted),
        combinational from the register of unreduced sums. It stays until the
        next ``start``: the digits run out as zeros.
    """

    def __init__(self, digits=4):
        assert digits in (1, 2, 4, 8)
        self.digits = digits
        super().__init__({"en": In(1), "start": In(1), "a": In(128), "b": In(128),
                          "p": Out(128)})

    def elaborate(self, platform):
        m = Module()
        w = 128 // self.digits
        ca, cb = Signal(128), Signal(128)
        m.d.comb += [ca.eq(coeffs(self.a)), cb.eq(coeffs(self.b))]
        shifted = Signal(128)        # a * x^(w k) mod P for the next digit k
        rest = Signal(128 - w)       # the digits still to go, the next one lowest
        acc = Signal(127 + w)        # unreduced sum of the partial products so far
        cur_a = Mux(self.start, ca, shifted)
        cur_d = Mux(self.start, cb[:w], rest[:w])
        with m.If(self.en):
            m.d.sync += [acc.eq(Mux(self.start, 0, acc) ^ gf_mul_digit(cur_a, cur_d))]
            if self.digits > 1:
                m.d.sync += [shifted.eq(gf_times_xn(cur_a, w)),
                             rest.eq(Mux(self.start, cb[w:], rest >> w))]
        m.d.comb += self.p.eq(gf_reduce(acc))
        return m
