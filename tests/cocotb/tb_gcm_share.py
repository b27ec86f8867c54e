"""cocotb testbench of the shared GCM engine: two users at once, each checked
like a private engine (``tb_gcm.py``) against its own records.

``$TLSNIC_GCM_JOBS`` names a JSON list of two runs (records and driver knobs),
one per user port of :class:`tlsnic.hdl.crypto.share.GcmShare`.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Combine, RisingEdge

from tlsnic.bench_gcm import GcmDriver, Record


@cocotb.test()
async def gcm_share_jobs(dut):
    cocotb.start_soon(Clock(dut.clk, 8, "ns").start())
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    with open(os.environ["TLSNIC_GCM_JOBS"]) as f:
        runs = json.load(f)
    switches = {"n": 0, "last": None}

    async def count_switches():
        # Which user's chunk the engine took, cycle by cycle: a change is a
        # change of owner (each user's chunks are checked by its driver).
        while True:
            await RisingEdge(dut.clk)
            for user in (0, 1):
                if int(getattr(dut, f"users__{user}__i_chunk__valid").value) and \
                        int(getattr(dut, f"users__{user}__i_chunk__ready").value):
                    if switches["last"] not in (None, user):
                        switches["n"] += 1
                    switches["last"] = user

    cocotb.start_soon(count_switches())
    drivers, tasks = [], []
    for user, run in enumerate(runs):
        drv = GcmDriver(dut, random.Random(run["seed"]), gap=run["gap"],
                        backpressure=run["backpressure"], chunking=run["chunking"],
                        segment=run["segment"], interleave=run["interleave"],
                        prefix=f"users__{user}__")
        drivers.append(drv)
        tasks.append(cocotb.start_soon(drv.run([Record.from_json(r) for r in run["records"]])))
    await Combine(*tasks)
    for user, drv in enumerate(drivers):
        dut._log.info("user %d: %d cycles, %d saves", user, drv.cycles, drv.saves)
    dut._log.info("owner changes: %d", switches["n"])
    assert switches["n"] >= 20, "the users did not take turns: the test shows nothing"
