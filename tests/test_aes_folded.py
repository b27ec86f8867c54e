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
