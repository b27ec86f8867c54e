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
with anything else). :func:`gf_mul_parts` returns the product as partial sums
that a pipeline registers and XORs one cycle later; the GCM engine uses it with
two interleaved accumulators and ``H^2`` (:func:`gf_square`, a linear map), see
:mod:`.gcm`. The operand in the loop goes to ``b``: it only selects the
multiples ``a * x^j``, so its path is the AND-XOR tree.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["coeffs", "from_coeffs", "gf_mul", "gf_mul_parts", "gf_square", "gf_mul_ref", "GfMul"]


def coeffs(v):
    """Polynomial coefficients (bit ``k`` = coefficient of ``x^k``) of a packed block."""
    return Cat(*[v[8 * (k // 8) + 7 - (k % 8)] for k in range(128)])


def from_coeffs(c):
    """Inverse of :func:`coeffs`."""
    return Cat(*[c[8 * (b // 8) + 7 - (b % 8)] for b in range(128)])


def gf_mul_parts(m, a, b, parts=1, name="gfm"):
    """Combinational GHASH product of two packed blocks, as ``parts`` partial sums.

    The XOR of the returned packed 128-bit signals is ``a * b``; a pipelined
    multiplier registers them and XORs them in the next stage. ``a`` is the
    operand whose multiples ``a * x^j`` are formed (a shift and a conditional
    XOR each); ``b`` only selects them, so a value in a feedback loop should be
    ``b``: its path is the AND-XOR tree alone.
    """
    ca, cb = Signal(128, name=f"{name}_a"), Signal(128, name=f"{name}_b")
    m.d.comb += [ca.eq(coeffs(a)), cb.eq(coeffs(b))]
    # Horner-free form: a*b = XOR over j of b_j * (a * x^j mod P). The multiples
    # a*x^j are a shift and a conditional XOR of 0x87 (x^7+x^2+x+1) each, so
    # the whole product is 128 wide ANDs and one XOR per output bit of the
    # partial products; synthesis flattens and balances the XOR trees, and the
    # Verilog stays small (a simulator compiles it in seconds).
    terms = []
    v = ca
    for j in range(128):
        vj = Signal(128, name=f"{name}_v{j}")
        m.d.comb += vj.eq(v)
        terms.append(vj & cb[j].replicate(128))
        v = Cat(C(0, 1), vj[:127]) ^ (vj[127].replicate(128) & C(0x87, 128))
    outs = []
    per = 128 // parts
    for p in range(parts):
        group = terms[p * per:(p + 1) * per]
        level = 0
        while len(group) > 1:     # a balanced XOR tree, one named signal per node
            nxt = []
            for k in range(0, len(group), 2):
                t = Signal(128, name=f"{name}_p{p}_x{level}_{k // 2}")
                m.d.comb += t.eq(group[k] ^ group[k + 1] if k + 1 < len(group) else group[k])
                nxt.append(t)
            group, level = nxt, level + 1
        res = Signal(128, name=f"{name}_p{p}")
        m.d.comb += res.eq(from_coeffs(group[0]))
        outs.append(res)
    return outs


def gf_mul(m, a, b, name="gfm"):
    """Combinational GHASH product of two packed 128-bit blocks.

    Adds the logic to module ``m`` and returns a 128-bit signal.
    """
    return gf_mul_parts(m, a, b, 1, name)[0]


def _square_matrix():
    # Column i: x^(2i) mod P, GCM's P = x^128 + x^7 + x^2 + x + 1.
    cols = []
    for i in range(128):
        v = 1 << (2 * i)
        for k in range(254, 127, -1):
            if v >> k & 1:
                v ^= (1 << k) | (0x87 << (k - 128))
        cols.append(v)
    return cols


def gf_square(a):
    """``a * a`` in GF(2^128) of a packed block: a linear map, a few XORs per bit."""
    a = Value.cast(a)
    pk = [8 * (k // 8) + 7 - (k % 8) for k in range(128)]   # coefficient k -> packed bit
    cols = _square_matrix()
    out = [None] * 128
    for k in range(128):
        src = [a[pk[i]] for i in range(128) if cols[i] >> k & 1]
        x = src[0]
        for b in src[1:]:
            x = x ^ b
        out[pk[k]] = x
    return Cat(*out)


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
