"""The TLS transmit scenarios (``cosim/scenarios_tls_tx.py``) on the reference model.

These are the observations the gateware will have to reproduce byte for
byte, so here each must be deterministic and JSON-clean, and its wire must be
right on its own: every flow's frames (over every port) reassembled and
decrypted with an independent AESGCM (``test_model_tls_tx.oracle_records``),
every plaintext byte compared, no context or tag left at the end.
"""

import json

import pytest
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from tlsnic.cosim.scenarios_tls_tx import SCENARIOS, payload, run_on_model, session_keys

from test_model_tls_tx import TLS_CT_APPDATA, oracle_records, reassemble, record_starts

CASES = [
    ("tls_tx_stream", {}),
    ("tls_tx_stream", dict(version="1.3", cipher="AES-256-GCM", mss=8948)),
    ("tls_tx_matrix", {}),
    ("tls_tx_interleaved", {}),
    ("tls_tx_interleaved", dict(strategy="seek")),
    ("tls_tx_retransmit", {}),
    ("tls_tx_retransmit", dict(version="1.2", cipher="AES-128-GCM", strategy="seek")),
    ("tls_tx_seek_retransmits", {}),
    ("tls_tx_seek_retransmits", dict(version="1.3", cipher="AES-128-GCM")),
    ("tls_tx_bad_input", {}),
    ("tls_tx_bad_input", dict(version="1.3", cipher="AES-256-GCM")),
    ("tls_tx_exhaustion", {}),
    ("tls_tx_route_change", {}),
    ("tls_tx_route_change", dict(version="1.3", strategy="seek")),
]


def test_every_scenario_has_a_case():
    assert {name for name, _ in CASES} == set(SCENARIOS)


def _flow_streams(obs):
    """``{src_port: reassembled stream}`` over every port of the observation."""
    frames = {}
    for port_frames in obs["wire"].values():
        for hex_frame in port_frames:
            frame = bytes.fromhex(hex_frame)
            segment = Ether(frame)[TCP]
            if len(bytes(segment.payload)) and not segment.flags.F:
                frames.setdefault(segment.sport, []).append(frame)
    return {flow["src_port"]: reassemble(frames.pop(flow["src_port"], []), flow["iss"])
            for flow in obs["flows"]}


def _check_flows(obs):
    """Every flow decrypts to the records it wrote; return the streams."""
    streams = _flow_streams(obs)
    for flow in obs["flows"]:
        key, iv = session_keys(flow["cipher"], flow["version"], flow["index"])
        records = oracle_records(flow["version"], key, iv, flow["rec_seq"],
                                 streams[flow["src_port"]])
        assert records == [(TLS_CT_APPDATA, payload(size, fill))
                           for size, fill in zip(flow["sizes"], flow["fills"])], flow
    return streams


@pytest.fixture(scope="module")
def observations():
    """Each case run twice (determinism), cached for the per-scenario checks."""
    cache = {}

    def get(name, params):
        key = (name, json.dumps(params, sort_keys=True))
        if key not in cache:
            obs = run_on_model(name, **params)
            assert run_on_model(name, **params) == obs, "not deterministic"
            assert json.loads(json.dumps(obs)) == obs, "not JSON-clean"
            cache[key] = obs
        return cache[key]
    return get


@pytest.mark.parametrize("name,params", CASES)
def test_scenario_wire_decrypts_and_nothing_left(observations, name, params):
    obs = observations(name, params)
    _check_flows(obs)
    assert obs["tags_in_use"] == 0
    assert obs["counters"]["tx_tls_ctx"] == obs["counters"]["tx_tls_ctx_freed"] > 0
    if name != "tls_tx_bad_input":
        assert {c["status"] for c in obs["tx_completions"]} == {"OK"}
        assert obs["counters"]["tx_tls_ooo"] == 0


def test_matrix_covers_versions_ciphers_mss(observations):
    obs = observations("tls_tx_matrix", {})
    combos = {(f["version"], f["cipher"], f["mss"]) for f in obs["flows"]}
    assert len(combos) == 12 and all(f["mode"] == "ifnet" for f in obs["flows"])
    mss = {f["src_port"]: f["mss"] for f in obs["flows"]}
    for hex_frame in obs["wire"]["0"]:
        segment = Ether(bytes.fromhex(hex_frame))[TCP]
        assert len(bytes(segment.payload)) <= mss[segment.sport]


@pytest.mark.parametrize("strategy", ("dump", "seek"))
def test_interleaved_flows_really_interleave(observations, strategy):
    obs = observations("tls_tx_interleaved", {} if strategy == "dump" else dict(strategy=strategy))
    assert len(obs["flows"]) == 64
    packets = [c["tag"] for c in obs["tx_completions"] if c["opcode"] == "PACKET"]
    assert sum(a != b for a, b in zip(packets, packets[1:])) >= len(packets) // 2
    driver = obs["driver"]
    # 16 flows retransmit mid record, then go on from where they were.
    if strategy == "dump":
        # Back to the record start and a dump; forward again: a dump of the gap only.
        assert driver["resync_params"] == 16 and driver["dump_descriptors"] == 32
        assert obs["counters"]["tx_tls_dump_bytes"] == driver["redma_bytes"] > 0
    else:
        assert driver["resync_seek"] == 32 and "redma_bytes" not in driver


@pytest.mark.parametrize("params", ({}, dict(version="1.3", cipher="AES-128-GCM")))
def test_seek_retransmits_tag_log(observations, params):
    """The card's tag log holds each record's tag as it is on the wire (record
    4's entry evicted by record 0's, recomputed); the driver took tags from
    it (TAG_VALID), seeked without one into records sent whole, and dumped
    where the tag had to be computed."""
    obs = observations("tls_tx_seek_retransmits", params)
    stream = _check_flows(obs)[obs["flows"][0]["src_port"]]
    starts = record_starts(stream) + [len(stream)]
    wire_tags = [stream[end - 16:end].hex() for end in starts[1:]]
    assert obs["tag_log"] == wire_tags[:4] + [None]
    driver = obs["driver"]
    assert driver["resync_seek"] == 6 and driver["resync_seek_tag"] == 3
    assert driver["seek_fallback_dump"] == 2 and driver["resync_params"] == 2
    assert obs["counters"]["tx_tls_dump_bytes"] == driver["redma_bytes"] > 0


@pytest.mark.parametrize("params", ({}, dict(version="1.3", cipher="AES-256-GCM")))
def test_bad_input_dropped_never_clear(observations, params):
    obs = observations("tls_tx_bad_input", params)
    assert obs["statuses"] == (["OUT_OF_SEQUENCE", "BAD_FLOW"] + ["BAD_TAG"] * 6
                               + ["CONTEXT_FAILED"] * 2 + ["OK", "CONTEXT_FAILED", "OK"])
    assert not any(b"cleartext".hex() in f for f in obs["wire"]["0"])
    counters = obs["counters"]
    assert counters["tx_tls_ooo"] == 1 and counters["tx_tls_drop_bad_flow"] == 7
    assert counters["tx_tls_drop_no_sync_data"] == 3


def test_exhaustion_software_past_the_last_context(observations):
    obs = observations("tls_tx_exhaustion", {})
    assert [f["mode"] for f in obs["flows"]] == ["ifnet", "ifnet", "sw", "sw", "ifnet"]
    assert obs["driver"]["enomem"] == 2
    by_tag = {}
    for c in obs["tx_completions"]:
        if c["opcode"] == "PACKET":
            by_tag[c["tag"]] = by_tag.get(c["tag"], 0) + 1
    assert 0 in by_tag and len(by_tag) >= 3                 # plain frames and two contexts


@pytest.mark.parametrize("params", ({}, dict(version="1.3", strategy="seek")))
def test_route_change_resets_twice(observations, params):
    obs = observations("tls_tx_route_change", params)
    assert obs["wire"]["0"] and obs["wire"]["1"]
    assert obs["sent_on_eagain"] == 0 == obs["sent_on_second_eagain"]
    assert obs["unacked_at_second_change"] > 0
    assert obs["driver"]["ifnet_reset"] == 2 == obs["driver"]["reset_tasks"]
    assert obs["modes"] == ["sw"]
    assert obs["counters"]["tx_tls_ctx"] == 3                # port 0, port 1, port 0 again
