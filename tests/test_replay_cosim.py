"""tlsnic replay on the gateware (Verilator): every fixture, compared with the model.

TX: the card's Verilog must put on the wire exactly the captured bytes, with
the same driver activity as the model (the results are compared whole: the
segments, frames, mismatches, resync and re-DMA counts). RX: the card with the
TLS receive engine decrypts inline; every record must reach the reader as the
independent decryption says, and each record's outcome (decrypted by the card,
finished in software, resyncs) must be the model's.

One simulation runs the whole batch (both directions of every fixture) on the
card with the TLS receive engine, the build ``test_tls_rx_cosim.py`` uses.
"""

import json
from pathlib import Path

import pytest

from tlsnic.cosim.cocotb_scenarios import run_on_gateware
from tlsnic.cosim.replay import RX_CONTEXTS, report, run

pytestmark = pytest.mark.cosim

FIXTURES = Path(__file__).resolve().parents[1] / "pcap-fixtures"
EXPECTED = {p.name.split(".")[0]: json.loads(p.read_text())
            for p in sorted(FIXTURES.glob("*.expected.json"))}


def _files(expected):
    keylog = [str(FIXTURES / expected["keylog"])] if expected["keylog"] else []
    return {"capture": str(FIXTURES / expected["capture"]), "keylogs": keylog}


@pytest.fixture(scope="module")
def gateware():
    batch = []
    for name, expected in EXPECTED.items():
        batch.append((f"{name}/tx", "tls_replay_tx", _files(expected)))
        batch.append((f"{name}/rx", "tls_replay_rx", _files(expected)))
    return run_on_gateware(batch, rx_contexts=RX_CONTEXTS, tag="replay_test")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_on_the_gateware(gateware, name):
    expected = EXPECTED[name]
    files = _files(expected)
    replay, model = run(files["capture"], files["keylogs"])
    tx, rx = gateware[f"{name}/tx"], gateware[f"{name}/rx"]
    assert "error" not in tx, tx.get("error")
    assert "error" not in rx, rx.get("error")
    assert tx["directions"] == model["tx"]["directions"]
    rep = report(replay, {"tx": tx, "rx": rx})
    assert rep["mismatches"] == 0
    for key, got in rx["directions"].items():
        assert got["mode"] == "ifnet", key
        assert got["records"] == got["expected"] == got["hw_decrypted"] + got["sw_decrypted"]
        assert got["mismatches"] == 0
        assert all("KeyUpdate" in error for error in got["errors"])       # no rekey in kTLS
    assert rx["directions"] == model["rx"]["directions"]
    server_rx = rx["directions"]["0/server"]
    if "impairments" in expected:
        assert server_rx["resyncs"] >= 1 and server_rx["hw_decrypted"] >= 1
    else:
        assert server_rx["hw_decrypted"] == server_rx["records"]
    for conn, want in zip(rep["connections"], expected["report"]["connections"]):
        assert [d["tx_exact"] for d in conn["directions"]] == [
            d["tx_exact"] for d in want["directions"]]
