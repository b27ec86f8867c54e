"""Inline TLS receive on the gateware, compared with the reference model.

Every card-level scenario of ``cosim/scenarios_tls_rx_card.py`` runs on the
NIC's Verilog (a card with the TLS receive engine, ``RX_CONTEXTS`` receive
contexts) and on the reference model; the observations (TX completions of
the control descriptors, RX completions raw with the bytes placed in each
buffer, the card's counters) must be identical. The model's decryption is
checked against ``cryptography`` in ``test_rx_engine_model.py``; this file
proves the gateware *is* the model, byte for byte.
"""

import pytest

from tlsnic.cosim.cocotb_scenarios import run_on_gateware
from tlsnic.cosim.scenarios_tls_rx_card import RX_CONTEXTS, SCENARIOS, run_on_model

pytestmark = pytest.mark.cosim

CARD = {
    "stream_1.3_aes128": ("tls_rx_card_stream", {}),
    "stream_1.2_aes256_mss536": ("tls_rx_card_stream", {"version": "1.2", "cipher": "AES-256-GCM",
                                                       "mss": 536}),
    "stream_1.3_minimal_records": ("tls_rx_card_stream", {"sizes": (1,) + (0,) * 9, "mss": 61}),
    "matrix": ("tls_rx_card_matrix", {}),
    "loss_1": ("tls_rx_card_loss", {"seed": 1}),
    "loss_2": ("tls_rx_card_loss", {"seed": 2}),
    "many_flows": ("tls_rx_card_many_flows", {}),
    "bad_input": ("tls_rx_card_bad_input", {}),
}
STRESSED = ("stream_1.2_aes256_mss536", "loss_1")
STRESS = {"idle": True, "backpressure": True, "seed": 11}


def test_every_scenario_runs_on_the_gateware():
    assert {name for name, _ in CARD.values()} == set(SCENARIOS)


@pytest.fixture(scope="module")
def card():
    batch = [(key, name, params) for key, (name, params) in CARD.items()]
    return run_on_gateware(batch, rx_contexts=RX_CONTEXTS, tag="tls_rx")


@pytest.fixture(scope="module")
def card_stressed():
    batch = [(key, *CARD[key]) for key in STRESSED]
    return run_on_gateware(batch, rx_contexts=RX_CONTEXTS, tb_options=STRESS, tag="tls_rx_stress")


def _compare(key, got):
    assert "error" not in got, got["error"]
    name, params = CARD[key]
    want = run_on_model(name, **params)
    for field in want:
        if field == "rx":
            for i, (g, w) in enumerate(zip(got["rx"], want["rx"])):
                assert g == w, f"{key}: RX completion {i} differs"
        assert got[field] == want[field], f"{key}: {field} differs between gateware and model"
    assert got == want


@pytest.mark.parametrize("key", CARD)
def test_gateware_matches_model(key, card):
    _compare(key, card[key])


@pytest.mark.parametrize("key", STRESSED)
def test_gateware_matches_model_under_backpressure(key, card_stressed):
    _compare(key, card_stressed[key])
