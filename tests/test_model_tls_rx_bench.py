"""``tlsnic bench rx`` on the model: its figures hang together and meet the issue's goal.

The bench itself checks every delivered record against what the peer
sealed; here the figures are held against each other and against the
card's own counters, on runs short enough for the default test run.
"""

import asyncio

import pytest

from tlsnic.cosim.bench_tls_rx import loss_run, main
from tlsnic.cosim.model import ReferenceNic


def figures(loss, records, seed=1):
    nic = ReferenceNic(tls=True, rx_contexts=256)
    return asyncio.run(loss_run(nic, nic.wire, loss=loss, records=records, seed=seed))


def test_no_loss_every_record_by_the_card():
    f = figures(0.0, 12)
    assert f["records_nic"] == f["records_in_order"] == f["hw_in_order"] == 12
    assert f["hw_over_in_order"] == 1.0 and f["lost_segments"] == 0
    assert f["card"]["rx_tls_records"] == 12 and f["card"]["rx_tls_lost_sync"] == 0


@pytest.mark.parametrize("loss, records", [(0.01, 120), (0.05, 40)])
def test_figures_hang_together(loss, records):
    f = figures(loss, records)
    assert f["records_nic"] + f["records_sw"] + f["records_recrypt"] == records
    assert f["hw_in_order"] <= min(f["records_in_order"], f["records_nic"])
    assert f["lost_segments"] > 0
    # Every record the driver took as decrypted had its tag checked on the card.
    assert f["card"]["rx_tls_records"] >= f["records_nic"]
    assert f["card"]["rx_tls_resync_ok"] == f["driver"].get("rx_tls_resync_ok", 0)
    resumed = f["records_to_resume"]
    assert sum(kind["losses"] for kind in resumed.values()) <= f["lost_segments"]
    for kind in resumed.values():
        assert kind["mean"] is None or 1 <= kind["mean"] <= kind["max"]
    if loss == 0.01:
        assert f["hw_over_in_order"] >= 0.97, "the issue's goal at 1% loss"


def test_cli_json(capsys):
    import json
    assert main(["--sim", "model", "--records", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["loss"]) == {"0.001", "0.01", "0.05"}
    assert report["bits_per_clock_in_order"] is None
