"""cocotb testbench of the shared GCM engine: two users at once, each checked
like a private engine (``tb_gcm.py``) against its own records.

``$TLSNIC_GCM_JOBS`` names a JSON list of two runs (records and driver knobs),
one per user port of :class:`tlsnic.hdl.crypto.share.GcmShare`.
"""

import json
import os

import cocotb
from cocotb.triggers import Combine

from tlsnic.bench_gcm import GcmDriver, Record, start_engine


@cocotb.test()
async def gcm_share_jobs(dut):
    await start_engine(dut)
    with open(os.environ["TLSNIC_GCM_JOBS"]) as f:
        runs = json.load(f)
    drivers = [GcmDriver.from_job(dut, run, prefix=f"users__{user}__")
               for user, run in enumerate(runs)]
    await Combine(*[cocotb.start_soon(drv.run([Record.from_json(r) for r in run["records"]]))
                    for drv, run in zip(drivers, runs)])
    for user, drv in enumerate(drivers):
        dut._log.info("user %d: %d cycles, %d saves", user, drv.cycles, drv.saves)
    # Owner changes: the drivers started in the same clock, so their accept
    # cycles interleave into the engine's input order; a change of user from
    # one taken chunk to the next is a change of owner.
    taken = sorted((c, user) for user, drv in enumerate(drivers) for c in drv.taken_at)
    changes = sum(a[1] != b[1] for a, b in zip(taken, taken[1:]))
    dut._log.info("owner changes: %d", changes)
    assert changes >= 20, "the users did not take turns: the test shows nothing"
