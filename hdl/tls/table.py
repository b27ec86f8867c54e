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

Folding
-------
An entry 1,000 bits wide is 28 ``DP16KD`` side by side whatever the depth, so
a table of 16 entries uses 16 of each block RAM's 512 rows: the boards' four
tables took 90 of the ECP5-85's 208 EBR (the block-RAM rows were full, and
the one holding the AES cores' S-boxes was where the routing congestion sat).
With ``fold`` = *f* an entry is *f*
rows of ``width / f`` bits (row ``addr * f + beat``): half the EBR at *f* = 2.
The boards do not fold: their routing was worse folded (the row selects and
the write buffer's shifters fan out to every bit of the entry; README,
"Boards"). The price is time and a little logic: a read delivers the entry
*f* + 1 clocks after it starts (one row a clock into the output register, which
takes it a slice at a time), and a write stores its first row at once and the
others from a buffer over the next *f* - 1 clocks (``(f - 1) / f`` of an entry
in flip-flops, half a LUT4 a bit at *f* = 2, three quarters at 4). ``busy`` is
high while either is under way; the user starts neither while ``busy``. The
TLS engines read an entry once per command or frame and write it once, a few
states apart, so the table's time is a few clocks per segment.

``block_bits`` keeps the top of the entry in LUT RAM when the board's EBR do
not stretch to the whole table (unfolded tables only).

Fields written apart
--------------------
An engine writes its entry from several sources (install, free, resync,
commit), and each source is a multiplexer input on every bit: the selects
of the TX and RX commits reached 1,200 to 1,600 LUT inputs each, among the
most overused nets of the board's routing. The largest field, the saved GCM
progress (605 bits), comes from one place only, the engine's saved state,
and is kept unchanged by every other write. ``separate`` names such fields:
each is a block RAM of its own, written when its bit of ``write_separate``
is high (from ``write.data``), while ``write.en`` writes the rest. Its write
data then needs no multiplexer, and its enable reaches a few block-RAM pins.
Block RAM is allocated 36 bits a ``DP16KD`` per memory, so a separate field
costs at most one EBR more (none for the boards' tables).
"""

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

__all__ = ["ContextTable", "write_field_apart"]


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
    fold : int
        Block RAM rows per entry (a power of two; see "Folding").
    separate : tuple of str
        Fields of ``shape`` (a :class:`~amaranth.lib.data.StructLayout`)
        written apart (see "Fields written apart"; unfolded, all in block RAM).

    Members
    -------
    read : Out(ReadPort.Signature)
        Unfolded: ``data`` is the entry at the ``addr`` of the previous cycle
        in which ``en`` was high (a synchronous read port's timing). Folded:
        a cycle with ``en`` high starts a read of ``addr``; ``data`` is that
        entry from the first cycle after it in which ``busy`` is low, and
        stays until the next read.
    write : Out(WritePort.Signature)
        ``data`` is written to ``addr`` when ``en``.
    busy : Out(1)
        A folded read or write is under way (always 0 unfolded).
    write_separate : In(len(separate))
        Bit ``i`` writes field ``separate[i]`` of ``write.data`` to
        ``write.addr``; ``write.en`` writes every other field.
    """
    def __init__(self, shape, depth, *, block_bits=None, fold=1, separate=()):
        self.shape = shape
        self.depth = depth
        width = Shape.cast(shape).width
        self.block_bits = width if block_bits is None else min(block_bits, width)
        assert self.block_bits > 0
        assert fold >= 1 and fold & (fold - 1) == 0, "fold is a power of two"
        assert fold == 1 or self.block_bits == width, "a folded table is all block RAM"
        self.fold = fold
        self.separate = tuple(separate)
        assert not separate or (fold == 1 and self.block_bits == width), \
            "separate fields: an unfolded table, all in block RAM"
        addr_width = max(1, (depth - 1).bit_length())
        super().__init__({
            "read": Out(ReadPort.Signature(addr_width=addr_width, shape=shape)),
            "write": Out(WritePort.Signature(addr_width=addr_width, shape=shape)),
            "busy": Out(1),
            "write_separate": In(len(self.separate)),
        })

    def peek(self, ctx, addr):
        """Entry ``addr`` as stored (an int), for testbenches that check what
        a table keeps (a freed context's zeros): from the memories of the
        last elaboration, not through a port."""
        value = 0
        for lo, stride, mem, *beat in self._stored:
            value |= ctx.get(mem[addr * stride + (beat[0] if beat else 0)]) << lo
        return value & ((1 << Shape.cast(self.shape).width) - 1)

    def _spans(self):
        """``(lo, hi, write enable)`` of each memory: the separate fields, and
        the runs of other bits between them."""
        width = Shape.cast(self.shape).width
        layout = data.Layout.cast(self.shape) if self.separate else None
        fields = sorted((layout[name].offset, Shape.cast(layout[name].shape).width, i)
                        for i, name in enumerate(self.separate))
        spans, lo = [], 0
        for offset, field_width, i in fields:
            if offset > lo:
                spans.append((lo, offset, self.write.en))
            spans.append((offset, offset + field_width, self.write_separate[i]))
            lo = offset + field_width
        if lo < width:
            spans.append((lo, width, self.write.en))
        return spans

    def elaborate(self, platform):
        if self.fold > 1:
            return self._elaborate_folded()
        m = Module()
        width = Shape.cast(self.shape).width
        block = {"ram_style": "block", "no_rw_check": 1}
        if self.block_bits < width:
            spans = [(0, self.block_bits, block, self.write.en),
                     (self.block_bits, width, {"no_rw_check": 1}, self.write.en)]
        else:
            spans = [(lo, hi, block, en) for lo, hi, en in self._spans()]
        entry = Signal(width, reset_less=True)
        self._stored = []
        for i, (lo, hi, attrs, write_en) in enumerate(spans):
            mem = m.submodules[f"mem{i}"] = Memory(shape=hi - lo, depth=self.depth, init=[],
                                                   attrs=attrs)
            self._stored.append((lo, 1, mem.data))
            rd = mem.read_port(domain="comb")
            wr = mem.write_port()
            m.d.comb += [
                rd.addr.eq(self.read.addr),
                wr.addr.eq(self.write.addr),
                wr.data.eq(Value.cast(self.write.data)[lo:hi]),
                wr.en.eq(write_en),
            ]
            with m.If(self.read.en):
                m.d.sync += entry[lo:hi].eq(rd.data)
        m.d.comb += self.read.data.eq(entry)
        return m

    def _elaborate_folded(self):
        m = Module()
        fold = self.fold
        width = Shape.cast(self.shape).width
        row = -(-width // fold)
        beat_bits = (fold - 1).bit_length()
        mem = m.submodules.mem = Memory(shape=row, depth=self.depth * fold, init=[],
                                        attrs={"ram_style": "block", "no_rw_check": 1})
        self._stored = [(k * row, fold, mem.data, k) for k in range(fold)]
        rd = mem.read_port(domain="comb")
        wr = mem.write_port()

        # Read: row ``step - 1`` is addressed while ``step`` counts 1..fold - 1
        # (row 0 in the starting cycle), lands in ``rq`` (the block RAM's own
        # output register: see above) a clock later, and in its slice of
        # ``entry`` the clock after that.
        r_addr = Signal.like(self.read.addr)
        r_step = Signal(range(fold + 1))        # 0: idle; else the slice rq holds, plus one
        rq = Signal(row, reset_less=True)
        entry = Signal(row * fold, reset_less=True)
        with m.If(self.read.en):
            m.d.comb += rd.addr.eq(Cat(C(0, beat_bits), self.read.addr))
            m.d.sync += [r_addr.eq(self.read.addr), r_step.eq(1)]
        with m.Else():
            m.d.comb += rd.addr.eq(Cat(r_step[:beat_bits], r_addr))
        m.d.sync += rq.eq(rd.data)
        with m.If(r_step != 0):
            m.d.sync += r_step.eq(Mux(r_step == fold, 0, r_step + 1))
        for k in range(fold):           # a clock enable per slice, no multiplexer
            with m.If(r_step == k + 1):
                m.d.sync += entry[k * row:(k + 1) * row].eq(rq)
        m.d.comb += self.read.data.eq(entry[:width])

        # Write: the first row goes in the starting cycle, straight from
        # ``data``; the others wait in ``w_rest``, which shifts a row down a
        # clock (a 2:1 select per bit; a select among the buffer's rows maps
        # to a LUT6 a bit for four of them).
        w_addr = Signal.like(self.write.addr)
        w_step = Signal(range(fold))            # 0: idle; else the row being written
        w_rest = Signal(row * (fold - 1), reset_less=True)
        data = Cat(self.write.data, C(0, row * fold - width))
        with m.If(self.write.en):
            m.d.comb += [wr.addr.eq(Cat(C(0, beat_bits), self.write.addr)),
                         wr.data.eq(data[:row]), wr.en.eq(1)]
            m.d.sync += [w_addr.eq(self.write.addr), w_rest.eq(data[row:]), w_step.eq(1)]
        with m.Elif(w_step != 0):
            m.d.comb += [wr.addr.eq(Cat(w_step[:beat_bits], w_addr)),
                         wr.data.eq(w_rest[:row]), wr.en.eq(1)]
            m.d.sync += [w_rest.eq(w_rest >> row),
                         w_step.eq(Mux(w_step == fold - 1, 0, w_step + 1))]

        m.d.comb += self.busy.eq((r_step != 0) | (w_step != 0))
        return m


def write_field_apart(m, table, name, new, old, en):
    """Drive field ``name`` of ``table``'s write data: ``new`` when ``en``,
    else ``old`` (the entry's value as read), for an engine whose writes of
    that field go with a write of the whole entry (``en`` implies
    ``write.en``). A table that holds the field apart (``separate``) takes
    ``new`` as it is and ``en`` as the field's write enable: no multiplexer.
    Assign it after the rest of ``write.data`` (it overrides the field)."""
    field = getattr(table.write.data, name)
    if name in table.separate:
        m.d.comb += [field.eq(new), table.write_separate[table.separate.index(name)].eq(en)]
    else:
        m.d.comb += field.eq(Mux(en, new, old))
