"""Every pcap-fixtures/ capture replays on the model with zero mismatches and its expected outcome."""

import json
from pathlib import Path

import pytest

from tlsnic.cosim.replay import report, run

FIXTURES = Path(__file__).resolve().parents[1] / "pcap-fixtures"
EXPECTED = sorted(FIXTURES.glob("*.expected.json"))


def _subset(expected, got, where="report"):
    """Every field the expectation names has the value it says (lists: item by item)."""
    if isinstance(expected, dict):
        for key, value in expected.items():
            assert key in got, f"{where}: no {key!r}"
            _subset(value, got[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), f"{where}: {len(got)} items, expected {len(expected)}"
        for i, (want, have) in enumerate(zip(expected, got)):
            _subset(want, have, f"{where}[{i}]")
    else:
        assert got == expected, f"{where}: {got!r}, expected {expected!r}"


def test_every_fixture_has_an_expectation():
    captures = sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert captures == sorted(json.loads(p.read_text())["capture"] for p in EXPECTED)
    assert len(captures) == 7
    readme = (FIXTURES / "README.md").read_text()
    assert all(f"`{name}" in readme for name in captures)


@pytest.mark.parametrize("path", EXPECTED, ids=[p.name.split(".")[0] for p in EXPECTED])
def test_fixture_replays_on_the_model(path):
    expected = json.loads(path.read_text())
    keylogs = [FIXTURES / expected["keylog"]] if expected["keylog"] else []
    replay, results = run(FIXTURES / expected["capture"], keylogs, expected["psk"])
    rep = report(replay, results)
    _subset(expected["report"], rep)
    assert rep["mismatches"] == 0
    for got in results["tx"]["directions"].values():
        assert got["mode"] == "ifnet" and got["mismatches"] == 0 and got["dropped"] == 0
    for key, got in results["rx"]["directions"].items():
        assert got["mode"] == "ifnet" and got["mismatches"] == 0, key
        # The one error a reader may see: kTLS stops at a KeyUpdate (no rekey).
        assert all("KeyUpdate" in error for error in got["errors"]), got["errors"]
        assert got["records"] == got["expected"] == got["hw_decrypted"] + got["sw_decrypted"]
    server_tx = results["tx"]["directions"]["0/server"]
    server_rx = results["rx"]["directions"]["0/server"]
    if "impairments" in expected:
        # Loss and reordering: the driver repositions the card on TX (DUMP), and on
        # RX the card loses the records' track, finds it again (a confirmed resync
        # candidate) and leaves the records it could not decrypt whole to software.
        assert server_tx["driver"]["tx_tls_ooo"] > 0 and server_tx["driver"]["redma_bytes"] > 0
        assert server_rx["resyncs"] >= 1 and server_rx["hw_decrypted"] >= 1
        assert server_rx["sw_decrypted"] >= 1
    else:
        # A clean loopback capture: every record decrypted by the card.
        assert server_tx["driver"]["tx_tls_ooo"] == 0
        assert server_rx["hw_decrypted"] == server_rx["records"]
