"""The per-connection context table: wide entries, few of them, in block RAM.

A context entry is many hundred bits wide (key and addresses in one table,
record and saved GCM progress in another) and a board has a handful of them.
Left to itself Yosys puts such a memory in LUT RAM, which is 16 entries deep
anyway: when an entry was 2,153 bits, it cost 539
``DPR16X4`` and each of those takes three slices, so the TX and RX tables
alone were 12 % of an LFE5UM5G-85F's logic cells and a good part of what
kept its routing from converging. In block RAM (512 x 36 a ``DP16KD``) the
same table is 60 EBR and no logic.

Two things make that mapping free of glue logic:

* The read port is asynchronous in the netlist and followed by a register,
  so Yosys's ``memory_dff`` folds the register into the block RAM's read
  port; a synchronous Amaranth read port would instead be mapped with a
  collision bypass (a word-wide register and mux, ~1 LUT4 per bit) to keep
  read-old-data semantics that ``DP16KD`` does not have across ports.
* ``no_rw_check`` tells Yosys that a read of the entry being written in the
  same cycle may return anything. The engines never use such a read: an
  entry is read in the state that accepts a command or a frame and written
  only in later states of the same FSM, so a read that is used never meets a
  write. (The simulators return the old entry there; hardware may not.)

``block_bits`` keeps the top of the entry in LUT RAM when the board's EBR do
not stretch to the whole table.
"""

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import Out

__all__ = ["ContextTable"]


class ContextTable(wiring.Component):
    """Parameters
    ----------
    shape : shape-like
        One entry.
    depth : int
        Entries.
    block_bits : int or None
        Low bits of each entry held in block RAM; the rest in LUT RAM.
        ``None``: all of it.

    Members
    -------
    read : Out(ReadPort.Signature)
        ``data`` is the entry at the ``addr`` of the previous cycle in which
        ``en`` was high (a synchronous read port's timing).
    write : Out(WritePort.Signature)
        ``data`` is written to ``addr`` when ``en``.
    """
    def __init__(self, shape, depth, *, block_bits=None):
        self.shape = shape
        self.depth = depth
        width = Shape.cast(shape).width
        self.block_bits = width if block_bits is None else min(block_bits, width)
        assert self.block_bits > 0
        addr_width = max(1, (depth - 1).bit_length())
        super().__init__({
            "read": Out(ReadPort.Signature(addr_width=addr_width, shape=shape)),
            "write": Out(WritePort.Signature(addr_width=addr_width, shape=shape)),
        })

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self.shape).width
        spans = [(0, self.block_bits, {"ram_style": "block", "no_rw_check": 1})]
        if self.block_bits < width:
            spans.append((self.block_bits, width, {"no_rw_check": 1}))
        entry = Signal(width, reset_less=True)
        for i, (lo, hi, attrs) in enumerate(spans):
            mem = m.submodules[f"mem{i}"] = Memory(shape=hi - lo, depth=self.depth, init=[],
                                                   attrs=attrs)
            rd = mem.read_port(domain="comb")
            wr = mem.write_port()
            m.d.comb += [
                rd.addr.eq(self.read.addr),
                wr.addr.eq(self.write.addr),
                wr.data.eq(Value.cast(self.write.data)[lo:hi]),
                wr.en.eq(self.write.en),
            ]
            with m.If(self.read.en):
                m.d.sync += entry[lo:hi].eq(rd.data)
        m.d.comb += self.read.data.eq(entry)
        return m
