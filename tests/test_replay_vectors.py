"""tlsnic replay on the model over every capture of ../shared/vectors: the outcome its README states.

Offloaded connections must come out of the card byte for byte as captured
(TX replay); the rest must be passed through with the reason, never
mis-decrypted. Skipped when ../shared/vectors is absent (a user's clone).
"""

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from tlsnic.cli import main as cli_main
from tlsnic.cosim.model import ReferenceNic
from tlsnic.cosim.replay import load, replay_rx, replay_tx, report, run
from tlsnic.driver.device import Device

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason="../shared/vectors absent")
PSK = "ca19e028a8a372ad2d325f950fcaceed"

#: capture, key logs, PSK, and per connection: (offloaded, what the reason says).
OUTCOMES = [
    ("illustrated-tls13/capture.pcap", ["illustrated-tls13/keylog.txt"], None, [(True, None)]),
    ("illustrated-tls13/archive-capture.pcap", ["illustrated-tls13/archive-keylog.txt"], None,
     [(True, None)]),
    ("wireshark/captures/tls13-rfc8446.pcap", ["wireshark/keys/tls13-rfc8446.keys"], None,
     [(True, None)] * 2),
    ("wireshark/captures/tls13-rfc8446.pcap", ["wireshark/keys/tls13-rfc8446-noearly.keys"], None,
     [(True, None)] * 2),
    ("wireshark/captures/tls12-dsb.pcapng", [], None, [(True, None)] * 2),
    ("wireshark/captures/tls12-aes256gcm.pcap", [], PSK, [(True, None)]),
    ("wireshark/captures/tls12-aes256gcm.pcap", [], None,
     [(False, "missing keys: PSK suite: no CLIENT_RANDOM in the key log and no --psk given")]),
    ("hotplace/tls13/tls13_TLS_AES_128_GCM_SHA256.pcapng", ["hotplace/tls13/sslkeylog"], None,
     [(True, None)]),
    ("hotplace/tls13/tls13_TLS_AES_256_GCM_SHA384.pcapng", ["hotplace/tls13/sslkeylog"], None,
     [(True, None)]),
    ("hotplace/tls13/tls13_TLS_AES_128_CCM_SHA256.pcapng", ["hotplace/tls13/sslkeylog"], None,
     [(False, "AES-128-CCM is not offloaded")]),
    ("hotplace/tls12/tls12_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.pcapng",
     ["hotplace/tls12/sslkeylog"], None, [(True, None)]),
    ("hotplace/tls12/tls12_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384.pcapng",
     ["hotplace/tls12/sslkeylog"], None, [(True, None)]),
    ("hotplace/tls12/tls12_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256.pcapng",
     ["hotplace/tls12/sslkeylog"], None, [(False, "ChaCha20-Poly1305 is not offloaded")]),
    ("wireshark/captures/tls12-aes128ccm.pcap", [], PSK, [(False, "AES-128-CCM is not offloaded")]),
    ("wireshark/captures/dhe1.pcapng.gz", ["wireshark/keys/dhe1_keylog.dat"], None,
     [(False, "TLS 1.0: the NIC offloads TLS 1.2 and 1.3 only")]),
    ("wireshark/captures/retrans-tls.pcap", [], None, [(False, "not TLS: no ClientHello")]),
]


@pytest.mark.parametrize("name, keylogs, psk, expected", OUTCOMES,
                         ids=[f"{o[0].split('/')[-1]}-{len(o[1])}{'-psk' if o[2] else ''}"
                              for o in OUTCOMES])
def test_vector_outcome(name, keylogs, psk, expected):
    replay, results = run(VECTORS / name, [VECTORS / k for k in keylogs], psk)
    rep = report(replay, results)
    assert rep["mismatches"] == 0
    assert len(rep["connections"]) == len(expected)
    for entry, (offloaded, reason) in zip(rep["connections"], expected):
        assert entry["offloaded"] is offloaded
        for direction in entry["directions"]:
            if offloaded:
                assert entry["reason"] is None
                assert direction["tx_exact"] is True and direction["records"] >= 1
                assert len(direction["plaintext_sha256"]) == 64
            else:
                assert reason in entry["reason"]
                assert direction["tx_exact"] is None and direction["plaintext_sha256"] is None
    # Every offloaded direction went through the card's TLS contexts, not software:
    # TX byte for byte, RX every record delivered as the independent decryption says.
    for got in results["tx"]["directions"].values():
        assert got["mode"] == "ifnet" and got["frames"] == got["segments"]
    for got in results["rx"]["directions"].values():
        assert got["mode"] == "ifnet" and got["mismatches"] == 0 and not got["errors"]
        assert got["records"] == got["expected"] == got["hw_decrypted"] + got["sw_decrypted"]
    for entry in rep["connections"]:
        for d in entry["directions"]:
            assert d["hw_decrypted"] + d["sw_decrypted"] == (d["records"] if offloaded else 0)


def test_plaintext_is_the_applications():
    replay, results = run(VECTORS / "illustrated-tls13/capture.pcap",
                          [VECTORS / "illustrated-tls13/keylog.txt"])
    client, server = report(replay, results)["connections"][0]["directions"]
    assert client["plaintext_sha256"] == hashlib.sha256(b"ping").hexdigest()
    assert server["plaintext_sha256"] == hashlib.sha256(b"pong").hexdigest()
    assert server["records"] == 3          # two NewSessionTickets, then "pong"


def test_a_wrong_byte_is_a_mismatch():
    """The comparison can fail: one plaintext bit flipped before the card encrypts it."""
    replay = load(VECTORS / "wireshark/captures/tls12-dsb.pcapng")
    app = replay.connections[1].directions["server"].records[0]
    app.plaintext = bytes([app.plaintext[0] ^ 1]) + app.plaintext[1:]
    nic = ReferenceNic(tls=True)
    results = {"tx": asyncio.run(replay_tx(Device(nic), nic.wire, replay))}
    rep = report(replay, results)
    assert rep["mismatches"] == 1
    bad = rep["connections"][1]["directions"][1]
    assert bad["tx_exact"] is False and bad["mismatches"] == 1
    assert all(d["tx_exact"] for d in rep["connections"][0]["directions"])
    first = results["tx"]["directions"]["1/server"]["first_mismatch"]
    assert first["byte"] == 5 + 8              # right after the header and explicit nonce


def test_a_wrong_record_is_an_rx_mismatch():
    """The receive check can fail: the oracle's plaintext of one record altered."""
    replay = load(VECTORS / "wireshark/captures/tls12-dsb.pcapng")
    app = replay.connections[0].directions["client"].records[0]
    app.plaintext = app.plaintext[:-1] + bytes([app.plaintext[-1] ^ 0x80])
    nic = ReferenceNic(tls=True, rx_contexts=8)
    results = {"rx": asyncio.run(replay_rx(Device(nic), nic.wire, replay))}
    rep = report(replay, results)
    assert rep["mismatches"] == 1
    assert [d["mismatches"] for c in rep["connections"] for d in c["directions"]] == [1, 0, 0, 0]
    # The delivered plaintext is the capture's, not the altered oracle's.
    assert rep["connections"][0]["directions"][0]["plaintext_sha256"] != \
        replay.connections[0].directions["client"].plaintext_sha256()


def test_cli_json_shape_and_exit_status(tmp_path, capsys):
    out = tmp_path / "report.json"
    status = cli_main(["replay", str(VECTORS / "wireshark/captures/tls13-rfc8446.pcap"),
                       "--keylog", str(VECTORS / "wireshark/keys/tls13-rfc8446.keys"),
                       "--json", str(out)])
    assert status == 0
    rep = json.loads(out.read_text())
    assert set(rep) == {"connections", "mismatches"}
    for entry in rep["connections"]:
        assert set(entry) == {"client", "server", "version", "suite", "offloaded", "reason",
                              "directions"}
        assert [d["from"] for d in entry["directions"]] == ["client", "server"]
        for d in entry["directions"]:
            assert set(d) == {"from", "records", "hw_decrypted", "sw_decrypted", "resyncs",
                              "mismatches", "tx_exact", "plaintext_sha256"}
    assert rep["connections"][0]["client"] == "10.9.0.1:38288"
    text = capsys.readouterr().out
    assert "TLS 1.3 TLS_AES_128_GCM_SHA256  offloaded" in text and "mismatches: 0" in text


def test_cli_ipv6_endpoints_and_unreadable_input(tmp_path, capsys):
    status = cli_main(["replay", str(VECTORS / "hotplace/tls13/tls13_TLS_AES_128_GCM_SHA256.pcapng"),
                       "--keylog", str(VECTORS / "hotplace/tls13/sslkeylog"), "--json", "-"])
    rep = json.loads(capsys.readouterr().out)
    assert status == 0 and rep["connections"][0]["server"] == "[::1]:9000"
    bad = tmp_path / "bad.keys"
    bad.write_text("CLIENT_RANDOM 00\n")
    status = cli_main(["replay", str(VECTORS / "illustrated-tls13/capture.pcap"),
                       "--keylog", str(bad)])
    assert status == 2 and f"{bad}:1:" in capsys.readouterr().err
