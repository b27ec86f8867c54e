"""cocotb entry point: run scenarios (``cosim/scenarios.py``, ``cosim/scenarios_tls_tx.py``,
``cosim/scenarios_tls_rx.py``, ``cosim/scenarios_tls_rx_card.py``, ``cosim/replay.py``) on
the gateware.

The pytest side (:func:`run_on_gateware`) builds the NIC once, then starts one
simulation that runs a whole batch of scenarios, each after a reset and with a
fresh host RAM, and writes their observations to a JSON file. Starting the
simulator once per batch, not per scenario, is what keeps the suite fast.
"""

import json
import os
import traceback
from pathlib import Path

import cocotb

from tlsnic.driver.hostmem import HostMemory
from tlsnic.cosim import (replay, scenarios, scenarios_tls_rx, scenarios_tls_rx_card,
                          scenarios_tls_tx)
from tlsnic.cosim.tb import TB

__all__ = ["run_batch"]


@cocotb.test()
async def run_batch(dut):
    every = {**scenarios.SCENARIOS, **scenarios_tls_tx.SCENARIOS, **replay.SCENARIOS,
             **scenarios_tls_rx.SCENARIOS, **scenarios_tls_rx_card.SCENARIOS}
    batch = json.loads(os.environ["TLSNIC_SCENARIOS"])
    options = json.loads(os.environ.get("TLSNIC_TB_OPTIONS", "{}"))
    tb = TB(dut, **options)
    results = {}
    for key, name, params in batch:
        tb.use_memory(HostMemory())
        await tb.reset()
        try:
            results[key] = await scenarios.run_scenario(every[name], tb.bus, tb.wire, **params)
        except Exception:
            # One broken scenario must not hide the others' results.
            results[key] = {"error": traceback.format_exc()}
    Path(os.environ["TLSNIC_RESULTS"]).write_text(json.dumps(results))


def run_on_gateware(batch, *, ports=1, tx_contexts=256, rx_contexts=0, shared_gcm=False,
                    gcm_aes_cores=0, table_fold=1, tb_options=None, sim=None, waves=None,
                    tag="plain"):
    """Run ``batch`` (``[(key, scenario name, params), ...]``) on the NIC gateware.

    ``ports``, ``tx_contexts``, ``rx_contexts``, ``shared_gcm``, ``gcm_aes_cores`` and
    ``table_fold`` configure the card built (see :func:`tlsnic.cosim.build.nic_design`).
    Returns ``{key: observation}``; a scenario that raised has ``{"error": traceback}``.
    """
    from tlsnic.cosim.build import nic_design
    from tlsnic.cosim.runner import CocotbRun
    run = CocotbRun(nic_design(ports=ports, tx_contexts=tx_contexts, rx_contexts=rx_contexts,
                               shared_gcm=shared_gcm, gcm_aes_cores=gcm_aes_cores,
                               table_fold=table_fold),
                    sim=sim, waves=waves)
    tb_options = dict(tb_options or {}, ports=ports)
    test_dir = run.build_dir / f"run-{tag}-{os.getpid()}"
    test_dir.mkdir(parents=True, exist_ok=True)
    out = test_dir / "results.json"
    run.test("tlsnic.cosim.cocotb_scenarios", test_dir=test_dir, extra_env={
        "TLSNIC_SCENARIOS": json.dumps(batch),
        "TLSNIC_TB_OPTIONS": json.dumps(tb_options),
        "TLSNIC_RESULTS": str(out),
    })
    return json.loads(out.read_text())
