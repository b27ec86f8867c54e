"""A core on a real clock pin, its ports on three pins: for a placed and routed Fmax.

nextpnr's ``--out-of-context`` mode leaves a core's ports unbound, and with
them its clock: it promotes no clock to a global line (the log's "Promoting
globals" names no net and no ``DCCA`` is used), so the clock of every
flip-flop is routed through the general fabric. For the full-rate GCM engine
that is ~29 k clock pins on the wires its data needs, and router2 flattened
at thousands of overused wires; a figure so made says nothing about the
engine. :class:`PortHarness` gives nextpnr an ordinary design instead: the
clock arrives on a pin and is promoted like a board's, and the core's ports
sit between registers, as they would inside a NIC.

- Every input bit of the core is one flip-flop of a shift chain fed from the
  ``si`` pin, so the core's inputs come from registers and nothing is a
  constant Yosys could fold.
- Every output bit of the core is folded into a multiple-input signature
  register (``misr[i] <= misr[i-1] ^ out[i]``) whose last bit is the ``so``
  pin: one 2-input XOR and one flip-flop per output bit, and no output whose
  logic Yosys could drop.
- The core's reset is a chain bit too, so it is a registered net like a
  board's synchronised reset, not a pin.

The harness costs ``inputs + 1`` flip-flops, ``outputs`` flip-flops and at
most ``outputs`` LUTs (:attr:`PortHarness.overhead`; Yosys may merge an
XOR into the LUT before it); the paths it adds are one LUT deep.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, Flow

__all__ = ["PortHarness"]


class PortHarness(wiring.Component):
    """``core`` with its ports on a shift chain and a signature register.

    Parameters
    ----------
    core : wiring.Component
        Any component; its ``sync`` domain becomes the harness's ``clk``.

    Attributes
    ----------
    inputs, outputs : int
        Bits of the core's ports, by flow.
    overhead : dict
        The flip-flops the harness adds and the most LUTs it can add.
    """

    clk: In(1)
    si: In(1)
    so: Out(1)

    def __init__(self, core):
        self.core = core
        self._ins, self._outs = [], []
        for path, member, value in core.signature.flatten(core):
            (self._ins if member.flow == Flow.In else self._outs).append(Value.cast(value))
        self.inputs = sum(len(v) for v in self._ins)
        self.outputs = sum(len(v) for v in self._outs)
        self.overhead = {"ff": self.inputs + 1 + self.outputs, "lut4": self.outputs}
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = self.core
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += cd.clk.eq(self.clk)

        # Chain bit 0 is the core's reset; the rest are its inputs, in order.
        chain = Signal(1 + self.inputs, reset_less=True)
        m.d.sync += chain.eq(Cat(self.si, chain[:-1]))
        m.d.comb += cd.rst.eq(chain[0])
        pos = 1
        for value in self._ins:
            m.d.comb += value.eq(chain[pos:pos + len(value)])
            pos += len(value)

        outs = Cat(*self._outs)
        misr = Signal(max(1, self.outputs), reset_less=True)
        if self.outputs:
            m.d.sync += misr.eq(Cat(misr[-1], misr[:-1]) ^ outs)
        m.d.comb += self.so.eq(misr[-1])
        return m
