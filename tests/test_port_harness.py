"""`PortHarness` carries every port bit of a core, in order, and nothing else.

A small core (a registered adder with a valid bit) runs inside the harness in
amaranth.sim; a Python model of the shift chain and the signature register,
fed the same ``si`` bits, must give the same ``so`` bit on every cycle. A
harness that dropped, reordered or constant-folded a port bit would part from
the model within a few dozen cycles.
"""

import random

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from tlsnic.hdl.harness import PortHarness


class RegisteredAdd(wiring.Component):
    a: In(5)
    b: In(3)
    go: In(1)
    total: Out(6)
    seen: Out(1)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.go):
            m.d.sync += self.total.eq(self.a + self.b)
        m.d.sync += self.seen.eq(self.go)
        return m


def model(bits):
    """``so`` per cycle, from the harness's description alone."""
    chain = [0] * (1 + 9)                     # reset, a (5), b (3), go
    total = seen = 0
    misr = [0] * 7                            # total (6), seen
    for si in bits:
        yield misr[-1]
        rst = chain[0]
        a = sum(bit << i for i, bit in enumerate(chain[1:6]))
        b = sum(bit << i for i, bit in enumerate(chain[6:9]))
        go = chain[9]
        outs = [(total >> i) & 1 for i in range(6)] + [seen]
        misr = [misr[-1] ^ outs[0]] + [m ^ o for m, o in zip(misr[:-1], outs[1:])]
        if rst:
            total = seen = 0
        else:
            total = (a + b) if go else total
            seen = go
        chain = [si] + chain[:-1]


def test_the_harness_is_a_lossless_wrapper():
    dut = PortHarness(RegisteredAdd())
    assert (dut.inputs, dut.outputs) == (9, 7)
    assert dut.overhead == {"ff": 9 + 1 + 7, "lut4": 7}
    rng = random.Random(7)
    # Mostly out of reset: a reset bit every ~8 cycles still tests it.
    bits = [rng.random() < 0.4 for _ in range(400)]
    expected = list(model(bits))
    got = []
    sim = Simulator(dut)

    async def bench(ctx):
        # The clock is a port the harness drives its domain from, so the
        # bench toggles it rather than adding a simulator clock.
        for si in bits:
            ctx.set(dut.si, si)
            got.append(ctx.get(dut.so))
            ctx.set(dut.clk, 1)
            await ctx.delay(1e-6)
            ctx.set(dut.clk, 0)
            await ctx.delay(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == expected
