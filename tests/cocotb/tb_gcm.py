"""cocotb testbench of the GCM engine: runs the jobs named by ``$TLSNIC_GCM_JOBS``.

The job file (JSON, written by ``tests/test_crypto_gcm.py``) is a list of runs;
each run is a list of records (:class:`tlsnic.bench_gcm.Record`) and the
driver's knobs (gaps, back-pressure, chunking, segmenting, interleaving).
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from tlsnic.bench_gcm import GcmDriver, Record


@cocotb.test()
async def gcm_jobs(dut):
    cocotb.start_soon(Clock(dut.clk, 8, "ns").start())
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    with open(os.environ["TLSNIC_GCM_JOBS"]) as f:
        runs = json.load(f)
    for n, run in enumerate(runs):
        records = [Record.from_json(r) for r in run["records"]]
        drv = GcmDriver(dut, random.Random(run["seed"]), gap=run["gap"],
                        backpressure=run["backpressure"], chunking=run["chunking"],
                        segment=run["segment"], interleave=run["interleave"])
        await drv.run(records)
        dut._log.info("run %d (%s): %d records, %d cycles", n, run.get("name", ""), len(records),
                      drv.cycles)
