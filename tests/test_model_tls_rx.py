"""Inline TLS receive on the reference model, driven by the kTLS receive driver.

Each test runs one scenario of ``cosim/scenarios_tls_rx.py`` (the same ones
the gateware will run) on ``ReferenceNic(tls=True)`` and checks what the
issue asks of it. The scenarios themselves already hold every delivered
record against the plaintext the peer sealed with ``cryptography`` (they
raise on a mismatch) and end with no receive context left in driver or
card; here, in addition: the records each reader got (numbers, types,
digests of the plaintext recomputed from the scenario's parameters), the
path each record took (card / software / recrypt), the errors with their
errno, the resync answers, and the card's counters against the driver's.
Tests named ``test_edgeN_*`` cover RX edge case N of the driver anchors.
"""

import asyncio
import errno
import json

import pytest

from tlsnic.abi import Counter, RxCompletion, RxTlsStatus, unpack
from tlsnic.cosim.model import ReferenceNic
from tlsnic.cosim.scenarios_tls_rx import SCENARIOS, SIZES, digest, run_on_model
from tlsnic.cosim.scenarios_tls_tx import payload
from tlsnic.driver.device import Device
from tlsnic.driver.ktls_rx import KtlsRxDriver, KtlsRxSocket
from tlsnic.driver.tcp import TcpFlow

CASES = [
    ("tls_rx_stream", {}),
    ("tls_rx_stream", dict(version="1.3", cipher="AES-256-GCM", mss=8948)),
    ("tls_rx_matrix", {}),
    ("tls_rx_interleaved", {}),
    ("tls_rx_loss_no_header", {}),
    ("tls_rx_loss_header", {}),
    ("tls_rx_loss_header", dict(version="1.2", cipher="AES-128-GCM", mss=536, lost=30)),
    ("tls_rx_reorder", {}),
    ("tls_rx_duplicates", {}),
    ("tls_rx_retransmit_resegmented", {}),
    ("tls_rx_false_candidate", {}),
    ("tls_rx_candidate_evicted", {}),
    ("tls_rx_seq_wrap", {}),
    ("tls_rx_enable_mid_record", {}),
    ("tls_rx_enable_mid_record", dict(cut=2331)),
    ("tls_rx_ingress_change", {}),
    ("tls_rx_ingress_change", dict(occupied=True)),
    ("tls_rx_tls13_inner", {}),
    ("tls_rx_key_update", {}),
    ("tls_rx_bad_records", {}),
    ("tls_rx_bad_headers", {}),
    ("tls_rx_fin_rst", {}),
    ("tls_rx_bad_checksums", {}),
    ("tls_rx_untouched", {}),
    ("tls_rx_sessions", {}),
]


@pytest.fixture(scope="module")
def observe():
    """Each case run twice (it must be deterministic and JSON-clean), cached."""
    cache = {}

    def get(name, **params):
        key = (name, json.dumps(params, sort_keys=True))
        if key not in cache:
            obs = run_on_model(name, **params)
            assert run_on_model(name, **params) == obs, "not deterministic"
            assert json.loads(json.dumps(obs)) == obs, "not JSON-clean"
            cache[key] = obs
        return cache[key]
    return get


def test_every_scenario_has_a_case():
    assert {name for name, _ in CASES} == set(SCENARIOS)


@pytest.mark.parametrize("name, params", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_card_and_driver_agree(observe, name, params):
    """The card's counters against the driver's, frame by frame fields against totals."""
    obs = observe(name, **params)
    driver, card = obs["driver"], obs["counters"]
    for counter in ("rx_tls_decrypted_packets", "rx_tls_decrypted_bytes", "rx_tls_resync_req"):
        assert driver.get(counter, 0) == card.get(counter, 0), counter
    # The driver counts completions with auth_fail, the card failed tags (one
    # frame may end two records).
    assert 0 < driver.get("rx_tls_auth_fail", 0) <= card.get("rx_tls_auth_fail", 0) or \
        driver.get("rx_tls_auth_fail", 0) == card.get("rx_tls_auth_fail", 0) == 0
    assert card.get("rx_tls_resync_ok", 0) == driver.get("rx_tls_resync_ok", 0)
    assert card.get("rx_tls_resync_fail", 0) == driver.get("rx_tls_resync_fail", 0) + \
        driver.get("rx_tls_resync_stale", 0)
    answered = driver.get("rx_tls_resync_ok", 0) + driver.get("rx_tls_resync_fail", 0)
    assert answered <= driver.get("rx_tls_resync_req", 0)
    # Every record the driver took as the card's had its tag checked there.
    assert card.get("rx_tls_records", 0) >= driver.get("records_nic", 0)
    statuses = [unpack(RxCompletion, bytes.fromhex(f["raw"])).tls for f in obs["frames"]]
    assert sum(s is RxTlsStatus.OUT_OF_ORDER for s in statuses) == card.get("rx_tls_ooo", 0)


def paths(obs, flow=0):
    return "".join({"nic": "N", "sw": "S", "recrypt": "R"}[p] for p in obs["flows"][flow]["paths"])


def numbers(obs, flow=0):
    return [r[0] for r in obs["flows"][flow]["records"]]


# --- in order ----------------------------------------------------------------------------

@pytest.mark.parametrize("params", [{}, dict(version="1.3", cipher="AES-256-GCM", mss=8948)])
def test_stream_every_record_by_the_card(observe, params):
    obs = observe("tls_rx_stream", **params)
    flow = obs["flows"][0]
    assert paths(obs) == "N" * len(SIZES)
    assert [r[3] for r in flow["records"]] == [digest(payload(size, i))
                                              for i, size in enumerate(SIZES)]
    assert numbers(obs) == list(range(3, 3 + len(SIZES)))
    assert flow["errors"] == [] and obs["counters"]["rx_tls_records"] == len(SIZES)


def test_matrix_versions_ciphers_random_mss(observe):
    obs = observe("tls_rx_matrix")
    assert {(f["version"], f["cipher"], f["ip_version"]) for f in obs["flows"]} == {
        ("1.2", "AES-128-GCM", 4), ("1.2", "AES-256-GCM", 6),
        ("1.3", "AES-128-GCM", 4), ("1.3", "AES-256-GCM", 6)}
    for i, flow in enumerate(obs["flows"]):
        assert paths(obs, i) == "N" * len(SIZES)
        assert [r[3] for r in flow["records"]] == [digest(payload(s, n))
                                                  for n, s in enumerate(SIZES)]
    assert len(set(obs["mss"])) == 4


def test_64_interleaved_flows(observe):
    obs = observe("tls_rx_interleaved")
    assert len(obs["flows"]) == 64
    assert obs["counters"]["rx_tls_ctx"] == 64
    for i, flow in enumerate(obs["flows"]):
        assert numbers(obs, i) == list(range(7 * i, 7 * i + 4))
        # A flow that lost a segment inside its 2000-byte record finishes that one in software.
        assert paths(obs, i) == ("NNNR" if i % 8 == 0 else "NNNN"), i


# --- RX edge cases -------------------------------------------------------------------------

def test_edge14_loss_without_header_keeps_sync(observe):
    obs = observe("tls_rx_loss_no_header")
    assert paths(obs) == "RNNN"
    assert "rx_tls_lost_sync" not in obs["counters"] and "rx_tls_resync_req" not in obs["driver"]
    assert obs["driver"]["rx_tls_back_in_sync"] == 1


@pytest.mark.parametrize("params", [{}, dict(version="1.2", cipher="AES-128-GCM", mss=536,
                                             lost=30)])
def test_edge15_loss_with_header_resyncs(observe, params):
    obs = observe("tls_rx_loss_header", **params)
    d = obs["driver"]
    assert obs["counters"]["rx_tls_lost_sync"] == 1
    assert d["rx_tls_resync_req"] == d["rx_tls_resync_ok"] == 1
    assert d["rx_tls_back_in_sync"] == 1
    # The record hit, the one the candidate's frame entered, then the card again.
    assert paths(obs).endswith("N") and paths(obs)[0] == "R"
    assert numbers(obs) == list(range(5))


def test_edge15_false_candidate_rejected(observe):
    obs = observe("tls_rx_false_candidate")
    first = next(unpack(RxCompletion, bytes.fromhex(f["raw"])) for f in obs["frames"]
                 if unpack(RxCompletion, bytes.fromhex(f["raw"])).resync)
    assert first.resync_offset == 0, "the fake header is the first thing the card meets"
    d = obs["driver"]
    assert d["rx_tls_resync_req"] == 2 and d["rx_tls_resync_fail"] == 1
    assert d["rx_tls_resync_ok"] == 1
    assert paths(obs) == "RSSN" and numbers(obs) == [0, 1, 2, 3]


def test_edge15_candidate_older_than_the_table_rejected(observe):
    obs = observe("tls_rx_candidate_evicted")
    d = obs["driver"]
    assert d["rx_tls_resync_fail"] >= 1 and d["rx_tls_resync_ok"] == 1
    assert obs["table_evictions"] > 32
    assert paths(obs).endswith("N")
    assert numbers(obs) == list(range(len(obs["flows"][0]["paths"])))


def test_edge16_reorder(observe):
    obs = observe("tls_rx_reorder")
    assert numbers(obs) == [0, 1, 2, 3, 4]
    assert "S" not in paths(obs) and "R" in paths(obs)
    assert obs["counters"]["rx_tls_ooo"] == 3


def test_edge16_duplicates(observe):
    obs = observe("tls_rx_duplicates")
    assert paths(obs) == "NNN"
    assert obs["counters"]["rx_tls_ooo"] == len(obs["frames"]) - 8


def test_edge16_retransmission_resegmented(observe):
    obs = observe("tls_rx_retransmit_resegmented")
    assert paths(obs) == "RRN" and numbers(obs) == [0, 1, 2]


def test_edge18_seq_wrap_inside_the_table(observe):
    obs = observe("tls_rx_seq_wrap")
    flow = obs["flows"][0]
    assert flow["irs"] + 6 * 9022 > 2**32, "the stream wraps"
    assert obs["driver"]["rx_tls_resync_ok"] == 1 and obs["driver"]["rx_tls_back_in_sync"] == 1
    assert numbers(obs) == list(range(6)) and paths(obs).endswith("NN")


@pytest.mark.parametrize("cut, tag_start", [(2429, 300 + 2029 + 5029), (2331, 300 + 2029 + 5029)])
def test_edge17_enable_in_the_middle_of_a_record(observe, cut, tag_start):
    obs = observe("tls_rx_enable_mid_record", **({} if cut == 2429 else {"cut": cut}))
    assert paths(obs) == "SSNN"
    # With the header of record 1 already there the tag is set up at once;
    # with two bytes of it, once the rest of the header came.
    assert obs["tag_start"] == (tag_start if cut == 2429 else None)


def test_edge21_ingress_change_new_tag(observe):
    obs = observe("tls_rx_ingress_change")
    assert obs["driver"]["ifnet_reset"] == 1 and obs["tag_port"] == 1
    assert paths(obs) == "NNNRNNNN"
    assert obs["counters"]["rx_tls_ctx"] == 2


def test_edge21_ingress_change_software_keeps_the_connection(observe):
    obs = observe("tls_rx_ingress_change", occupied=True)
    flow = obs["flows"][0]
    assert obs["driver"]["ifnet_reset_failed"] == 1 and obs["tag_port"] is None
    assert flow["mode_at_end"] == "sw" and flow["so_error"] == 0
    assert paths(obs) == "NNNRSSSS" and numbers(obs) == list(range(8))


# --- TLS 1.3, bad input, end of stream ---------------------------------------------------

def test_tls13_padding_and_inner_types(observe):
    obs = observe("tls_rx_tls13_inner")
    for i, expected in enumerate(("NNNNNNN", "SSSSSSS", "NNRNNNN")):
        flow = obs["flows"][i]
        assert paths(obs, i) == expected
        assert [(r[0], r[1], r[2]) for r in flow["records"]] == [
            (0, 23, 500), (1, 23, 500), (2, 23, 100), (3, 23, 0), (4, 22, 16), (6, 21, 2)]
        assert flow["errors"] == [["EBADMSG", 5]], "a record of padding only has no type"


def test_edge19_key_update_stops_decryption(observe):
    obs = observe("tls_rx_key_update")
    flow = obs["flows"][0]
    assert [(r[0], r[1]) for r in flow["records"]] == [(0, 23), (1, 23), (2, 22)]
    assert flow["errors"] == [["EKEYEXPIRED", None]] and flow["so_error"] == "EKEYEXPIRED"
    assert "failed_crypto" not in obs["driver"], "nothing is tried under the old key"


def test_recrypt_restores_the_ciphertext():
    """``fallback.recrypt`` against the sealed record, for random decrypted masks."""
    import random
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from tlsnic.abi import TlsVersion
    from tlsnic.driver.fallback import recrypt, split_inner, unseal_record
    from tlsnic.driver.tls_record import TlsSessionParams
    rng = random.Random(3)
    for version, iv in ((TlsVersion.TLS_1_2, bytes(range(4))), (TlsVersion.TLS_1_3, bytes(12))):
        params = TlsSessionParams(version, "AES-256-GCM", bytes(range(32)), iv)
        for size in (0, 1, 15, 16, 17, 1000):
            plaintext = bytes(rng.getrandbits(8) for _ in range(size))
            explicit = b"\1" * 8 if version is TlsVersion.TLS_1_2 else b""
            inner = plaintext + (b"\x17" if version is TlsVersion.TLS_1_3 else b"")
            length = len(explicit) + len(inner) + 16
            header = bytes([23, 3, 3]) + length.to_bytes(2, "big")
            nonce = (iv + explicit if explicit else
                     bytes(a ^ b for a, b in zip(iv, (9).to_bytes(12, "big"))))
            aad = ((9).to_bytes(8, "big") + header[:3] + size.to_bytes(2, "big")
                   if explicit else header)
            body = explicit + AESGCM(params.key).encrypt(nonce, inner, aad)
            mask = bytes(rng.randrange(2) if len(explicit) <= i < len(body) - 16 else 0
                         for i in range(len(body)))
            seen = bytearray(body)
            n = len(explicit)
            for i, flag in enumerate(mask):
                if flag:
                    seen[i] = inner[i - n]
            assert recrypt(params, 9, bytes(seen), mask) == body
            assert split_inner(params, header, unseal_record(params, 9, header, body)) == (
                23, plaintext)
    with pytest.raises(ValueError):
        split_inner(TlsSessionParams(TlsVersion.TLS_1_3, "AES-128-GCM", bytes(16), bytes(12)),
                    bytes(5), bytes(10))


def test_bad_records_ebadmsg_nothing_delivered(observe):
    obs = observe("tls_rx_bad_records")
    for i, flow in enumerate(obs["flows"]):
        bad = 3 if flow["version"] == "1.2" else 2
        assert [e for e in flow["errors"]] == [["EBADMSG", 2 * k + 1] for k in range(bad)]
        assert numbers(obs, i) == [2 * k for k in range(bad + 1)]
        assert flow["so_error"] == 0
        if flow["mode"] == "ifnet":
            assert paths(obs, i) == "N" + "RN" * bad, "card-failed records verified in software"
    assert obs["counters"]["rx_tls_auth_fail"] == 5


def test_bad_headers_drop_the_connection(observe):
    obs = observe("tls_rx_bad_headers")
    assert [f["errors"] for f in obs["flows"]] == [[["EMSGSIZE", 1]]] * 4 + [[["EINVAL", 1]]] * 2
    assert [f["so_error"] for f in obs["flows"]] == ["EMSGSIZE"] * 4 + ["EINVAL"] * 2
    assert all(numbers(obs, i) == [0] for i in range(6))
    assert obs["driver"]["corrupted_records"] == 6


def test_fin_and_rst_never_leave_the_reader_waiting(observe):
    obs = observe("tls_rx_fin_rst")
    errors = [f["errors"] for f in obs["flows"]]
    assert errors == [[], [["EMSGSIZE", 1]], [["EBADMSG", 1], ["ECONNRESET", None]],
                      [["EMSGSIZE", 1], ["ECONNRESET", None]]]
    assert [numbers(obs, i) for i in range(4)] == [[0, 1, 2], [0], [0], [0]]
    assert obs["driver"]["tag_reclaimed"] == 4


def test_bad_checksums_not_decrypted_not_delivered(observe):
    obs = observe("tls_rx_bad_checksums")
    statuses = [unpack(RxCompletion, bytes.fromhex(f["raw"])).tls for f in obs["frames"]]
    assert statuses.count(RxTlsStatus.NOT_CHECKED) == 3
    assert obs["driver"]["csum_dropped"] == 3 and obs["counters"]["rx_csum_bad"] == 3
    assert paths(obs) == "NNN"


def test_flows_without_context_pass_untouched(observe):
    obs = observe("tls_rx_untouched")
    assert obs["unclaimed"] == 10 and obs["plain_ok"]
    assert paths(obs) == "NN"


def test_session_parameters_and_fallbacks(observe):
    obs = observe("tls_rx_sessions")
    assert obs["refused"] == ["EINVAL"] * 7 + ["EPROTONOSUPPORT"] * 2 + ["EALREADY"]
    modes = [(f["cipher"], f["mode_at_end"]) for f in obs["flows"]]
    assert modes[:2] == [("CHACHA20-POLY1305", "sw")] * 2
    contexts = 4
    ifnet = [m for _, m in modes[2:2 + contexts + 2]]
    assert ifnet == ["ifnet"] * contexts + ["sw"] * 2, "ENOMEM past the last context"
    assert modes[-2][1] == "ifnet", "a context freed by a close is used again"
    assert modes[-1][1] == "sw" and obs["driver"]["rx_alloc_failed"] == 1
    for i, flow in enumerate(obs["flows"]):
        if i not in (2, 3, 4):                       # closed before any data
            assert numbers(obs, i) == [0, 1, 2], i


# --- the driver, directly ------------------------------------------------------------------

def test_key_never_left_in_host_memory(monkeypatch):
    """Every buffer the driver frees after RX_SET_STATIC holds no byte of the key."""
    from tlsnic.driver.hostmem import HostMemory
    key = bytes(range(0xA0, 0xC0))
    seen = []
    original = HostMemory.free

    def free(self, addr):
        _, region = self._regions[addr]
        seen.append(bytes(region.mem))
        original(self, addr)
    monkeypatch.setattr(HostMemory, "free", free)

    async def go():
        nic = ReferenceNic(tls=True, rx_contexts=8)
        dev = Device(nic)
        await dev.open(tx_log=4, rx_log=2)
        rx = KtlsRxDriver(dev)
        sock = KtlsRxSocket(rx, TcpFlow(), irs=1)
        assert await sock.enable_rx("1.2", "AES-256-GCM", key, bytes(4)) == "ifnet"
        await sock.close()
        assert nic.tls_rx.in_use == 0
        assert all(bytes(ctx.key) == bytes(32) for ctx in nic.tls_rx.contexts)
        await dev.close()
    asyncio.run(go())
    assert seen and not any(key[:16] in blob or key[16:] in blob for blob in seen)


def test_rekey_refused_and_no_tag_for_an_unpermitted_driver():
    async def go():
        nic = ReferenceNic(tls=True, rx_contexts=8)
        dev = Device(nic)
        await dev.open(tx_log=4, rx_log=2)
        rx = KtlsRxDriver(dev, permitted=False)
        sock = KtlsRxSocket(rx, TcpFlow(), irs=1)
        assert await sock.enable_rx("1.3", "AES-128-GCM", bytes(16), bytes(12)) == "sw"
        with pytest.raises(OSError) as caught:
            await sock.enable_rx("1.3", "AES-128-GCM", bytes(16), bytes(12))
        assert caught.value.errno == errno.EALREADY
        assert rx.tags_in_use == 0 and nic.counters[Counter.RX_TLS_CTX] == 0
        await sock.close()
        await dev.close()
    asyncio.run(go())


def test_card_without_rx_contexts_gives_software_sessions():
    async def go():
        nic = ReferenceNic(tls=True)            # TLS transmit only
        dev = Device(nic)
        await dev.open(tx_log=4, rx_log=2)
        rx = KtlsRxDriver(dev)
        sock = KtlsRxSocket(rx, TcpFlow(), irs=1)
        assert await sock.enable_rx("1.2", "AES-128-GCM", bytes(16), bytes(4)) == "sw"
        await sock.close()
        await dev.close()
    asyncio.run(go())


def test_rx_control_beside_tls_transmit():
    """RX control descriptors share the TX queue with a transmit session: their
    completions go through the transmit driver, which keeps its bookkeeping."""
    from tlsnic.driver.ktls import KtlsDriver, KtlsSocket

    async def go():
        nic = ReferenceNic(tls=True, rx_contexts=8)
        dev = Device(nic)
        await dev.open(tx_log=4, rx_log=2)
        tx = KtlsDriver(dev, seed=1)
        rx = KtlsRxDriver(dev, tx=tx)
        out = KtlsSocket(tx, TcpFlow(), iss=1)
        await out.enable_tx("1.2", "AES-128-GCM", bytes(16), bytes(4))
        out.write(bytes(5000), record_size=1000)
        sock = KtlsRxSocket(rx, TcpFlow(), irs=1)
        assert await sock.enable_rx("1.3", "AES-128-GCM", bytes(16), bytes(12)) == "ifnet"
        await out.output()
        assert nic.wire.pending() > 0
        await sock.close()
        await out.close()
        await tx.flush()
        assert tx.tags_in_use == 0 and not tx._posted and rx.tags_in_use == 0
        assert nic.tls_rx.in_use == 0 and nic.tls_tx.in_use == 0
        await dev.close()
    asyncio.run(go())
