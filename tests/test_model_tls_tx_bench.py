"""``tlsnic bench tx`` on the reference model: the DMA counts are real counts.

The bench must not compute re-DMA from formulas; here its counts are checked
against the card's own counters: a software run's DMA reads are exactly its
descriptors and frames, an offloaded run's extra reads exactly its control
descriptors, parameter blocks and DUMP bytes. The wire check of every run must
hold, and both strategies must see the same loss pattern.
"""

import pytest

from tlsnic.abi import DESC_BYTES, TlsProgressParams, TlsStaticParams, layout_bytes
from tlsnic.cosim import bench_tls_tx


@pytest.fixture(scope="module")
def figures():
    # Four 16 KB records, 20% loss: a handful of losses, a couple of seconds.
    return bench_tls_tx.run("model", records=4, seed=3, loss_rates=(0.2,))


def test_every_run_puts_the_right_bytes_on_the_wire(figures):
    assert all(run["wire_ok"] for run in figures["runs"].values())
    assert figures["runs"]["20%/dump"]["mode"] == "ifnet" == figures["runs"]["20%/seek"]["mode"]
    assert figures["runs"]["20%/sw"]["mode"] == "sw"


def test_same_loss_pattern_for_every_mode(figures):
    runs = [figures["runs"][f"20%/{name}"] for name in ("sw", "dump", "seek")]
    assert len({(r["lost"], r["retransmits"], r["rexmit_payload_bytes"]) for r in runs}) == 1
    assert runs[0]["retransmits"] > 0


def test_dma_reads_are_counted_not_computed(figures):
    for loss in ("0%", "20%"):
        sw = figures["runs"][f"{loss}/sw"]
        card = sw["card"]
        assert sw["dma_read_bytes"] == DESC_BYTES * card["tx_packets"] + card["tx_bytes"]
        for name in ("dump", "seek"):
            run = figures["runs"][f"{loss}/{name}"]
            card = run["card"]
            assert card["tx_bytes"] == sw["card"]["tx_bytes"]
            control = 2 + card["tx_tls_resync"] + card["tx_tls_dump_packets"]   # + STATIC, FREE
            blocks = (layout_bytes(TlsStaticParams)
                      + layout_bytes(TlsProgressParams) * card["tx_tls_resync"])
            assert run["dma_read_bytes"] - sw["dma_read_bytes"] == (
                DESC_BYTES * control + blocks + card["tx_tls_dump_bytes"])


def test_summary_per_retransmitted_byte(figures):
    row = figures["summary"]["20%"]
    for name in ("dump", "seek"):
        f = row[name]
        assert f["dump_bytes"] <= f["extra_dma_read_bytes"]
        assert f["extra_dma_read_per_rexmit_byte"] == round(
            f["extra_dma_read_bytes"] / f["rexmit_payload_bytes"], 3)
    assert row["dump"]["tx_tls_ooo"] == row["seek"]["tx_tls_ooo"] > 0
