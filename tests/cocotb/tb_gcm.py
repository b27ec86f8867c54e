"""cocotb testbench of the GCM engine: runs the jobs named by ``$TLSNIC_GCM_JOBS``.

The job file (JSON, written by ``tests/test_crypto_gcm.py``) is a list of runs;
each run is a list of records (:class:`tlsnic.bench_gcm.Record`) and the
driver's knobs (gaps, back-pressure, chunking, segmenting, interleaving).
"""

import json
import os

import cocotb

from tlsnic.bench_gcm import GcmDriver, Record, start_engine


@cocotb.test()
async def gcm_jobs(dut):
    await start_engine(dut)
    with open(os.environ["TLSNIC_GCM_JOBS"]) as f:
        runs = json.load(f)
    for n, run in enumerate(runs):
        records = [Record.from_json(r) for r in run["records"]]
        drv = GcmDriver.from_job(dut, run)
        await drv.run(records)
        dut._log.info("run %d (%s): %d records, %d cycles", n, run.get("name", ""), len(records),
                      drv.cycles)
