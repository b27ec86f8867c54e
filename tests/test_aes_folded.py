"""The folded AES (iterative cores taking blocks in turn) against ``cryptography``,
on amaranth.sim: mixed key sizes, random stalls, blocks at every turn or some."""

import random

import pytest
from amaranth.sim import Simulator

from tlsnic.hdl.crypto.aes import aes_encrypt_ref
from tlsnic.hdl.crypto.aes_folded import FOLDED_LATENCY, AesFolded


@pytest.mark.parametrize("cores,stall,fill", [(4, 0.0, 1.0), (4, 0.3, 0.7), (1, 0.2, 1.0),
                                             (3, 0.1, 0.9)])
def test_folded_aes_matches_cryptography(cores, stall, fill):
    rng = random.Random(cores * 100 + int(stall * 10))
    dut = AesFolded(cores=cores, side_width=16)
    blocks = []
    for i in range(40):
        key = rng.randbytes(rng.choice((16, 32)))
        pt = rng.randbytes(16)
        blocks.append((key, pt, aes_encrypt_ref(key, pt), i + 1))
    got, taken_at = [], []

    async def bench(ctx):
        pending = list(blocks)
        cycle = 0
        issued = {}
        while len(got) < len(blocks):
            en = rng.random() >= stall
            ctx.set(dut.en, en)
            present = pending and rng.random() < fill
            if present:
                key, pt, _, tag = pending[0]
                ctx.set(dut.pt, int.from_bytes(pt, "little"))
                ctx.set(dut.key, int.from_bytes(key.ljust(32, b"\0"), "little"))
                ctx.set(dut.aes256, len(key) == 32)
                ctx.set(dut.side, tag)
            else:
                ctx.set(dut.side, 0)
            turn = ctx.get(dut.turn)
            side, ct = ctx.get(dut.side_out), ctx.get(dut.ct)
            if side and en:     # an output is taken in an enabled clock, once
                got.append((side, ct, cycle - issued[side]))
            await ctx.tick()
            if en:
                cycle += 1
                if present and turn:
                    issued[pending.pop(0)[3]] = cycle - 1
            assert cycle < 5000

    sim = Simulator(dut)
    sim.add_clock(8e-9)
    sim.add_testbench(bench)
    sim.run()
    assert [g[0] for g in got] == [b[3] for b in blocks]
    for (tag, ct, latency), (key, pt, want, _) in zip(got, blocks):
        assert ct.to_bytes(16, "little") == want, f"block {tag}, {8 * len(key)}-bit key"
        assert latency == FOLDED_LATENCY


def test_no_stale_block_comes_out_after_a_reset():
    """Blocks in flight when the domain resets never come out (the payload
    registers have no reset; the taken bits do). Blocks after the reset do."""
    from amaranth import Module, ResetInserter, Signal
    rst = Signal()
    dut = AesFolded(cores=4, side_width=16)
    top = Module()
    top.submodules.dut = ResetInserter(rst)(dut)
    key, pt = bytes(range(16)), bytes(16)

    async def bench(ctx):
        ctx.set(dut.en, 1)
        ctx.set(dut.key, int.from_bytes(key.ljust(32, b"\0"), "little"))
        ctx.set(dut.pt, int.from_bytes(pt, "little"))
        ctx.set(dut.side, 0xABC)                # presented at every turn
        for _ in range(FOLDED_LATENCY - 2):     # several in flight, none out yet
            assert ctx.get(dut.side_out) == 0
            await ctx.tick()
        ctx.set(dut.side, 0)
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        for _ in range(3 * FOLDED_LATENCY):
            assert ctx.get(dut.side_out) == 0
            await ctx.tick()
        ctx.set(dut.side, 0x123)
        outs = []
        for _ in range(2 * FOLDED_LATENCY):
            if ctx.get(dut.side_out):
                outs.append((ctx.get(dut.side_out), ctx.get(dut.ct)))
            await ctx.tick()
        assert outs and all(s == 0x123 for s, _ in outs)
        assert outs[0][1].to_bytes(16, "little") == aes_encrypt_ref(key, pt)

    sim = Simulator(top)
    sim.add_clock(8e-9)
    sim.add_testbench(bench)
    sim.run()
