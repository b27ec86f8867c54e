"""Inline TLS receive on the gateware, compared with the reference model.

Two sets of scenarios run on the NIC's Verilog (a card with the TLS receive
engine) and on the reference model ``ReferenceNic(tls=True, rx_contexts=N)``:

* ``cosim/scenarios_tls_rx.py``: the kTLS receive driver (``driver/ktls_rx.py``)
  on top, every edge case of the issue; the observation holds each frame's raw
  RX completion and a digest of its buffer, what each reader got, the
  driver's and the card's counters;
* ``cosim/scenarios_tls_rx_card.py``: the bare device, control descriptors
  posted by the scenario, every RX completion with the bytes of its buffer.

The observations must be identical. The model's decryption is checked
against ``cryptography`` elsewhere (``test_rx_engine_model.py``,
``test_model_tls_rx.py``); this file proves the gateware *is* the model,
byte for byte. Each card shape is one simulation running its whole batch.
"""

import pytest

from tlsnic.cosim import scenarios_tls_rx, scenarios_tls_rx_card
from tlsnic.cosim.cocotb_scenarios import run_on_gateware
from tlsnic.hdl.board.top import BOARD_NIC

pytestmark = pytest.mark.cosim

#: Runs on the default receive card (1 port, 256 receive contexts): key ->
#: (module, scenario name, params).
CARD = {
    "card_stream_1.3_aes128": (scenarios_tls_rx_card, "tls_rx_card_stream", {}),
    "card_stream_1.2_aes256_mss536": (scenarios_tls_rx_card, "tls_rx_card_stream",
                                      {"version": "1.2", "cipher": "AES-256-GCM", "mss": 536}),
    # Records of 22 bytes (TLS 1.3, empty content): a word can hold a tag's
    # end, a payload byte and a tag's start.
    "card_stream_1.3_minimal_records": (scenarios_tls_rx_card, "tls_rx_card_stream",
                                        {"sizes": (1,) + (0,) * 9, "mss": 61}),
    "card_matrix": (scenarios_tls_rx_card, "tls_rx_card_matrix", {}),
    "card_loss_1": (scenarios_tls_rx_card, "tls_rx_card_loss", {"seed": 1}),
    "card_loss_2": (scenarios_tls_rx_card, "tls_rx_card_loss", {"seed": 2}),
    "card_many_flows": (scenarios_tls_rx_card, "tls_rx_card_many_flows", {}),
    "card_bad_input": (scenarios_tls_rx_card, "tls_rx_card_bad_input", {}),
    "card_both_ways": (scenarios_tls_rx_card, "tls_both_ways", {}),
    **{name: (scenarios_tls_rx, name, {}) for name in scenarios_tls_rx.SCENARIOS
       if name not in scenarios_tls_rx.MULTI_PORT and name not in scenarios_tls_rx.RX_CONTEXTS},
}
#: Runs repeated with random idle cycles on the wire input and back-pressure.
STRESSED = ("card_stream_1.2_aes256_mss536", "card_loss_1", "tls_rx_interleaved",
            "tls_rx_loss_header")
STRESS = {"idle": True, "backpressure": True, "seed": 11}
#: Runs on the card whose directions share one GCM engine (the boards'), as
#: they are and under stress: TLS both ways at once, and receive scenarios
#: that hold the engine across many frames and records.
SHARED = ("card_both_ways", "card_stream_1.2_aes256_mss536", "card_loss_1",
          "tls_rx_interleaved", "tls_rx_loss_header")
#: Driver scenarios that need another card.
OTHER_CARDS = sorted(set(scenarios_tls_rx.MULTI_PORT) | set(scenarios_tls_rx.RX_CONTEXTS))


def test_every_scenario_runs_on_the_gateware():
    covered = {name for module, name, _ in CARD.values()} | set(OTHER_CARDS)
    assert covered == set(scenarios_tls_rx.SCENARIOS) | set(scenarios_tls_rx_card.SCENARIOS)


def _batch(keys):
    return [(key, CARD[key][1], CARD[key][2]) for key in keys]


@pytest.fixture(scope="module")
def card():
    return run_on_gateware(_batch(CARD), rx_contexts=256, tag="tls_rx")


@pytest.fixture(scope="module")
def card_stressed():
    return run_on_gateware(_batch(STRESSED), rx_contexts=256, tb_options=STRESS,
                           tag="tls_rx_stress")


@pytest.fixture(scope="module")
def card_shared():
    # The boards' engine (shared by both directions, folded AES, digit-serial
    # GHASH), with the context tables folded into two block-RAM rows an
    # entry: the boards build them unfolded (the board cosim covers that),
    # folding stays an option and is covered here.
    board = {"shared_gcm": True, "gcm_aes_cores": BOARD_NIC["gcm_aes_cores"], "table_fold": 2}
    plain = run_on_gateware(_batch(SHARED), rx_contexts=256, tag="tls_shared", **board)
    stressed = run_on_gateware(_batch(SHARED), rx_contexts=256, tb_options=STRESS,
                               tag="tls_shared_stress", **board)
    return {**plain, **{f"{k} stressed": v for k, v in stressed.items()}}


def _compare(key, got, want):
    assert "error" not in got, got["error"]
    for field in want:
        if isinstance(want[field], list) and isinstance(got.get(field), list):
            for i, (g, w) in enumerate(zip(got[field], want[field])):
                assert g == w, f"{key}: {field}[{i}] differs between gateware and model"
        assert got.get(field) == want[field], f"{key}: {field} differs between gateware and model"
    assert got == want


def _model(key):
    module, name, params = CARD[key]
    return module.run_on_model(name, **params)


@pytest.mark.parametrize("key", CARD)
def test_gateware_matches_model(key, card):
    _compare(key, card[key], _model(key))


@pytest.mark.parametrize("key", STRESSED)
def test_gateware_matches_model_under_backpressure(key, card_stressed):
    _compare(key, card_stressed[key], _model(key))


@pytest.mark.parametrize("key", [k + s for k in SHARED for s in ("", " stressed")])
def test_gateware_with_a_shared_gcm_engine_matches_model(key, card_shared):
    _compare(key, card_shared[key], _model(key.removesuffix(" stressed")))


@pytest.mark.parametrize("name", OTHER_CARDS)
def test_gateware_matches_model_on_its_card(name):
    """Each of these builds a card of its own (ports, receive contexts)."""
    got = run_on_gateware([(name, name, {})], ports=scenarios_tls_rx.MULTI_PORT.get(name, 1),
                          rx_contexts=scenarios_tls_rx.RX_CONTEXTS.get(name, 256),
                          tag=f"tls_rx_{name}")[name]
    _compare(name, got, scenarios_tls_rx.run_on_model(name))


def test_bench_loss_run_matches_model():
    """``tlsnic bench rx`` on the gateware: a short lossy run gives the model's
    figures exactly (same seeded losses, same resyncs, same records by card and
    software); the in-order runs decrypt with a context and pass without one."""
    from tlsnic.cosim import bench_tls_rx
    kwargs = {"records": 12, "seed": 7, "mss": 1448, "loss_rates": (0.05,)}   # seed 7 loses a header
    got = bench_tls_rx.run_gateware(in_order_records=2, **kwargs)
    want = bench_tls_rx.run(**kwargs)
    for loss, figures in got["loss"].items():
        assert figures.pop("cycles") > 0
        assert figures == want["loss"][loss]
    assert figures["card"]["rx_tls_resync_ok"] > 0 and figures["records_to_resume"]["header"]["losses"]
    for suite, f in got["in_order"].items():
        assert f["tls"]["decrypted_bytes"] > 0 and f["plain"]["decrypted_bytes"] == 0, suite
