"""Inline TLS transmit on the gateware, compared with the reference model.

Every scenario of ``cosim/scenarios_tls_tx.py`` runs on the NIC's Verilog
(with the kTLS driver of ``driver/ktls.py`` on top) and on the reference
model; the observations (TX completions raw, frames on the wire per port,
driver and card counters) must be identical. The scenarios' wire output is
decrypted independently with ``cryptography`` in
``test_model_tls_tx_scenarios.py``; this file proves the gateware *is* the
model, byte for byte, including every dropped frame and every status.

Each card configuration is one simulation running its whole batch, so the
tests of a configuration share a module fixture (``--dist loadfile``).
"""

import pytest

from tlsnic.cosim import scenarios_tls_tx
from tlsnic.cosim.scenarios_tls_tx import MULTI_PORT, SCENARIOS, TX_CONTEXTS, run_on_model
from tlsnic.cosim.cocotb_scenarios import run_on_gateware

pytestmark = pytest.mark.cosim

#: Scenario runs (key -> (name, params)) on the default card (1 port, 256 contexts).
DEFAULT_CARD = {
    "stream_1.2_aes128": ("tls_tx_stream", {}),
    "stream_1.3_aes256_mss536": ("tls_tx_stream", {"version": "1.3", "cipher": "AES-256-GCM",
                                                  "mss": 536}),
    # Records of 22 bytes (TLS 1.3, empty content) after a 23-byte one: one
    # starts at lane 1, so a word holds three cipher runs (tag end, payload
    # byte, tag start).
    "stream_1.3_minimal_records": ("tls_tx_stream", {"version": "1.3", "sizes": (1,) + (0,) * 9}),
    "matrix": ("tls_tx_matrix", {}),
    "interleaved_dump": ("tls_tx_interleaved", {}),
    "interleaved_seek": ("tls_tx_interleaved", {"strategy": "seek"}),
    "retransmit_dump": ("tls_tx_retransmit", {}),
    "retransmit_seek": ("tls_tx_retransmit", {"strategy": "seek"}),
    "retransmit_1.2_dump": ("tls_tx_retransmit", {"version": "1.2", "cipher": "AES-128-GCM"}),
    "seek_retransmits": ("tls_tx_seek_retransmits", {}),
    "bad_input": ("tls_tx_bad_input", {}),
}
#: Runs repeated with random back-pressure on the wire and idle cycles (the GCM
#: pipeline and the merge stall while a frame is being encrypted).
STRESSED = ("stream_1.3_aes256_mss536", "stream_1.3_minimal_records", "retransmit_seek",
            "interleaved_dump")
STRESS = {"idle": True, "backpressure": True, "seed": 11}
OTHER_CARDS = [name for name in SCENARIOS if name in MULTI_PORT or name in TX_CONTEXTS]


def test_every_scenario_runs_on_the_gateware():
    covered = {name for name, _ in DEFAULT_CARD.values()} | set(OTHER_CARDS)
    assert covered == set(SCENARIOS)


@pytest.fixture(scope="module")
def default_card():
    batch = [(key, name, params) for key, (name, params) in DEFAULT_CARD.items()]
    return run_on_gateware(batch, tag="tls_tx")


@pytest.fixture(scope="module")
def default_card_stressed():
    batch = [(key, *DEFAULT_CARD[key]) for key in STRESSED]
    return run_on_gateware(batch, tb_options=STRESS, tag="tls_tx_stress")


def _compare(key, name, params, got):
    assert "error" not in got, got["error"]
    want = run_on_model(name, **params)
    for field in want:
        assert got[field] == want[field], f"{key}: {field} differs between gateware and model"
    assert got == want


@pytest.mark.parametrize("key", DEFAULT_CARD)
def test_gateware_matches_model(key, default_card):
    name, params = DEFAULT_CARD[key]
    _compare(key, name, params, default_card[key])


@pytest.mark.parametrize("key", STRESSED)
def test_gateware_matches_model_under_backpressure(key, default_card_stressed):
    name, params = DEFAULT_CARD[key]
    _compare(key, name, params, default_card_stressed[key])


# Each of these is a Verilator build of its own (about a minute since the
# models expose only their ports, see cosim/runner.py).
@pytest.mark.parametrize("name", OTHER_CARDS)
def test_gateware_matches_model_on_its_card(name):
    got = run_on_gateware([(name, name, {})], ports=MULTI_PORT.get(name, 1),
                          tx_contexts=TX_CONTEXTS.get(name, 256), tag=f"tls_tx_{name}")[name]
    _compare(name, name, {}, got)
