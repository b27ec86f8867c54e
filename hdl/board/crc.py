"""Byte-parallel CRCs as XOR matrices, built in Python at elaboration time.

A CRC register advanced by one byte is a linear function (over GF(2)) of the
old register and the byte. Rather than unrolling eight conditional shifts
(nested ``Mux`` trees that Yosys has to flatten back into XORs), the matrix is
computed here once, symbolically: every register bit is a set of input bits,
and a shift-and-XOR step is a symmetric difference of sets. Each output bit is
then a plain XOR of at most a few dozen wires, which maps to two or three LUT4
levels on ECP5.

Two CRCs are used on the board:

* :data:`CRC32_ETH`: the Ethernet FCS (reflected polynomial ``0xEDB88320``,
  register preset to ones, FCS = complement, sent least significant byte
  first). Python's oracle is :func:`zlib.crc32`.
* :data:`CRC16_CCITT`: the UART bridge's frame check (polynomial ``0x1021``, not
  reflected, preset ``0xFFFF``, no final XOR: "CRC-16/CCITT-FALSE"). Python's
  oracle is :func:`binascii.crc_hqx` with ``0xFFFF``.
"""

from dataclasses import dataclass

from amaranth import *

__all__ = ["CrcSpec", "CRC32_ETH", "CRC16_CCITT", "crc_byte", "crc_byte_model",
           "CRC32_RESIDUE"]


@dataclass(frozen=True)
class CrcSpec:
    width: int
    poly: int        #: normal (MSB-first) form, without the top bit
    reflected: bool  #: shift right, data LSB first (Ethernet), else shift left, MSB first
    init: int


CRC32_ETH = CrcSpec(width=32, poly=0x04C11DB7, reflected=True, init=0xFFFF_FFFF)
CRC16_CCITT = CrcSpec(width=16, poly=0x1021, reflected=False, init=0xFFFF)

#: The Ethernet register after a frame *and its FCS* went through it, when the
#: FCS is right (the register is not complemented here): a receiver needs no
#: byte alignment of the FCS to check it.
CRC32_RESIDUE = 0xDEBB20E3


def _reflect(value, width):
    return int(f"{value:0{width}b}"[::-1], 2)


def _matrix(spec):
    """For each output bit, the input bits it XORs: ``("c", i)`` register, ``("d", j)`` data."""
    reg = [{("c", i)} for i in range(spec.width)]
    if spec.reflected:
        poly = _reflect(spec.poly, spec.width)
        for j in range(8):                     # data LSB first
            fb = reg[0] ^ {("d", j)}
            reg = [reg[i + 1] if i + 1 < spec.width else set() for i in range(spec.width)]
            for i in range(spec.width):
                if poly >> i & 1:
                    reg[i] = reg[i] ^ fb
    else:
        for j in reversed(range(8)):           # data MSB first
            fb = reg[spec.width - 1] ^ {("d", j)}
            reg = [reg[i - 1] if i > 0 else set() for i in range(spec.width)]
            for i in range(spec.width):
                if spec.poly >> i & 1:
                    reg[i] = reg[i] ^ fb
    return reg


_MATRICES = {}


def crc_byte(spec, crc, byte):
    """The register after ``byte`` (an 8-bit value), as an Amaranth expression."""
    if spec not in _MATRICES:
        _MATRICES[spec] = _matrix(spec)
    # Zero-extend: a constant byte (padding) casts to fewer than 8 bits.
    crc = Cat(crc, C(0, spec.width))[:spec.width]
    byte = Cat(byte, C(0, 8))[:8]
    bits = []
    for terms in _MATRICES[spec]:
        wires = [crc[i] if kind == "c" else byte[i] for kind, i in sorted(terms)]
        bits.append(Cat(*wires).xor() if wires else C(0, 1))
    return Cat(*bits)


def crc_byte_model(spec, crc, byte):
    """The same step in plain Python (for tests that look inside the matrix)."""
    if spec not in _MATRICES:
        _MATRICES[spec] = _matrix(spec)
    out = 0
    for i, terms in enumerate(_MATRICES[spec]):
        bit = 0
        for kind, j in terms:
            bit ^= (crc >> j if kind == "c" else byte >> j) & 1
        out |= bit << i
    return out
