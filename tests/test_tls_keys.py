"""cosim/tls_keys.py against published values (RFC 8448, the TLS 1.2 PRF vectors) and real captures."""

from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from tlsnic.cosim.capture import read_capture
from tlsnic.cosim.tls_keys import (CT_ALERT, CT_APPLICATION_DATA, CT_HANDSHAKE, Keylog, KeylogError,
                                   Record, TlsError, TrafficKeys, application_records, derive_keys,
                                   hkdf_expand_label, parse_handshake, prf, psk_premaster,
                                   split_records, suite)

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason="../shared/vectors absent")
PSK = bytes.fromhex("ca19e028a8a372ad2d325f950fcaceed")


# --- the key log ------------------------------------------------------------------------------

def test_keylog_lines(tmp_path):
    cr = "ab" * 32
    path = tmp_path / "keys.log"
    path.write_text(f"# comment\n\nCLIENT_RANDOM {cr} {'11' * 48}\n"
                    f"SERVER_TRAFFIC_SECRET_0 {cr} {'22' * 48}\nFUTURE_LABEL {cr} 33\n")
    log = Keylog.from_file(path)
    assert log.get(bytes.fromhex(cr), "CLIENT_RANDOM") == bytes([0x11]) * 48
    assert log.get(bytes.fromhex(cr), "SERVER_TRAFFIC_SECRET_0") == bytes([0x22]) * 48
    assert log.get(bytes.fromhex(cr), "FUTURE_LABEL") == b"\x33"
    assert log.get(bytes(32), "CLIENT_RANDOM") is None
    assert "11" * 8 not in repr(log)


@pytest.mark.parametrize("line, message", [
    ("CLIENT_RANDOM abcd", r"keys\.log:2: expected 'LABEL <hex> <hex>', got 2 field\(s\)"),
    ("CLIENT_RANDOM " + "ab" * 32 + " 12345", r"keys\.log:2: CLIENT_RANDOM: the secret is not"),
    ("CLIENT_RANDOM " + "zz" * 32 + " 12", r"keys\.log:2: CLIENT_RANDOM: the first field is not"),
    ("CLIENT_RANDOM " + "ab" * 31 + " " + "11" * 48, r"keys\.log:2: .*31 bytes, expected 32"),
    ("CLIENT_RANDOM " + "ab" * 32 + " " + "11" * 47, r"keys\.log:2: .*master secret of 47 bytes"),
    ("client_random " + "ab" * 32 + " 11", r"keys\.log:2: 'client_random' is not a key log label"),
])
def test_keylog_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "keys.log"
    path.write_text("# first line\n" + line + "\n")
    with pytest.raises(KeylogError, match=message) as error:
        Keylog.from_file(path)
    assert "11" * 40 not in str(error.value)             # never the secret


def test_keylog_missing_file(tmp_path):
    with pytest.raises(KeylogError, match="nope.log"):
        Keylog.from_file(tmp_path / "nope.log")


# --- primitives against published values -----------------------------------------------------------

def test_tls12_prf_vectors():
    # The TLS 1.2 PRF test vectors circulated on the IETF TLS list (P_SHA256, P_SHA384).
    out = prf(bytes.fromhex("9bbe436ba940f017b17652849a71db35"), b"test label",
              bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c"), 100, "SHA256")
    assert out.hex().startswith("e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a")
    assert out.hex().endswith("ee42c5a72e5a5110fff70187347b66")
    out = prf(bytes.fromhex("b80b733d6ceefcdc71566ea48e5567df"), b"test label",
              bytes.fromhex("cd665cf6a8447dd6ff8b27555edb7465"), 148, "SHA384")
    assert out.hex().startswith("7b0c18e9ced410ed1804f2cfa34a336a1c14dffb4900bb5fd7942107e81c83cd")


def test_psk_premaster_rfc4279():
    assert psk_premaster(b"\x01\x02") == b"\x00\x02\x00\x00\x00\x02\x01\x02"


# RFC 8448 section 3: application traffic secrets, the keys and IVs derived from them,
# and the records of the simple 1-RTT handshake (the Botan transcript of the same values).
RFC8448_CLIENT_SECRET = bytes.fromhex(
    "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5")
RFC8448_SERVER_SECRET = bytes.fromhex(
    "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")


def test_rfc8448_traffic_keys():
    s = suite(0x1301)
    client = TrafficKeys.tls13(RFC8448_CLIENT_SECRET, s)
    server = TrafficKeys.tls13(RFC8448_SERVER_SECRET, s)
    assert client.key.hex() == "17422dda596ed5d9acd890e3c63f5051"
    assert client.iv.hex() == "5b78923dee08579033e523d9"
    assert server.key.hex() == "9f02283b6c9c07efc26bb9f2ac92e356"
    assert server.iv.hex() == "cf782b88dd83549aadf1e984"
    # RFC 8448 3: the resumption PSK from the resumption master secret and ticket nonce 0000.
    resumption = bytes.fromhex("7df235f2031d2a051287d02b0241b0bfdaf86cc856231f2d5aba46c434ec196c")
    assert hkdf_expand_label(resumption, b"resumption", b"\0\0", 32, "SHA256").hex() == (
        "4ecd0eb6ec3b4d87f5d6028f922ca4c5851a277fd41311c9e62d2c9492e1c4f3")


@needs_vectors
def test_rfc8448_records():
    vec = {}
    for line in (VECTORS / "rfc8448/botan_transcripts.vec").read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif " = " in line and section == "Simple_1RTT_Handshake":
            key, value = line.split(" = ")
            if "AppData" in key or "CloseNotify" in key:
                vec[key] = bytes.fromhex(value.strip())
    s = suite(0x1301)
    client = TrafficKeys.tls13(RFC8448_CLIENT_SECRET, s)
    server = TrafficKeys.tls13(RFC8448_SERVER_SECRET, s)
    for keys, number, name, want in ((client, 0, "Record_Client_AppData", vec["Client_AppData"]),
                                     (server, 1, "Record_Server_AppData", vec["Server_AppData"]),
                                     (client, 1, "Record_Client_CloseNotify", b"\x01\x00"),
                                     (server, 2, "Record_Server_CloseNotify", b"\x01\x00")):
        record = vec[name]
        inner, plain, padding = keys.open(number, record[:5], record[5:])
        assert (inner, plain, padding) == (CT_APPLICATION_DATA if "AppData" in name else CT_ALERT,
                                           want, 0)
        with pytest.raises(InvalidTag):
            keys.open(number + 1, record[:5], record[5:])


def test_suites():
    assert suite(0x1302).aead == "AES-256-GCM" and suite(0x1302).hash == "SHA384"
    assert suite(0x1302).tls13 and suite(0x1302).fixed_iv_len == 12
    gcm12 = suite(0xC02C)
    assert (gcm12.aead, gcm12.key_len, gcm12.fixed_iv_len, gcm12.hash, gcm12.tls13) == (
        "AES-256-GCM", 32, 4, "SHA384", False)
    assert suite(0x00A9).psk and suite(0x00A9).aead == "AES-256-GCM"
    assert suite(0xC0A8).aead == "AES-128-CCM-8" and suite(0xC0A8).tag_len == 8
    assert suite(0xCCA9).aead == "CHACHA20-POLY1305" and suite(0xCCA9).fixed_iv_len == 12
    assert suite(0x0039).aead is None and suite(0x0039).name == "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"


def test_tls13_key_update_generation():
    keys = TrafficKeys.tls13(RFC8448_CLIENT_SECRET, suite(0x1301))
    nxt = keys.next_generation()
    assert nxt.generation == 1 and nxt.secret == hkdf_expand_label(
        RFC8448_CLIENT_SECRET, b"traffic upd", b"", 32, "SHA256")
    assert nxt.key == hkdf_expand_label(nxt.secret, b"key", b"", 16, "SHA256")


# --- every capture of ../shared/vectors ----------------------------------------------------------

def _keylog(capture, *names):
    log = Keylog()
    for name in names:
        log.add_text((VECTORS / name).read_text(), name)
    for i, text in enumerate(capture.keylogs):
        log.add_text(text, f"{capture.path}#dsb{i}")
    return log


#: capture, key log, PSK, then per connection: version, suite, EMS, and per direction
#: the (record number, inner type) of each record under application keys.
AEAD_VECTORS = [
    ("illustrated-tls13/capture.pcap", ["illustrated-tls13/keylog.txt"], None, [
        ("1.3", "TLS_AES_256_GCM_SHA384", False, [(0, 23)], [(0, 22), (1, 22), (2, 23)])]),
    ("illustrated-tls13/archive-capture.pcap", ["illustrated-tls13/archive-keylog.txt"], None, [
        ("1.3", "TLS_AES_128_GCM_SHA256", False, [(0, 23)], [(0, 22), (1, 23)])]),
    ("wireshark/captures/tls13-rfc8446.pcap", ["wireshark/keys/tls13-rfc8446.keys"], None, [
        ("1.3", "TLS_AES_128_GCM_SHA256", False, [(0, 23)], [(0, 22), (1, 23)]),
        ("1.3", "TLS_AES_128_GCM_SHA256", False, [(0, 23)], [(0, 22), (1, 23), (2, 23)])]),
    ("wireshark/captures/tls13-rfc8446.pcap", ["wireshark/keys/tls13-rfc8446-noearly.keys"], None, [
        ("1.3", "TLS_AES_128_GCM_SHA256", False, [(0, 23)], [(0, 22), (1, 23)]),
        ("1.3", "TLS_AES_128_GCM_SHA256", False, [(0, 23)], [(0, 22), (1, 23), (2, 23)])]),
    ("wireshark/captures/tls12-dsb.pcapng", [], None, [
        ("1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", True, [(1, 23), (2, 21)],
         [(1, 23), (2, 21)])] * 2),
    ("wireshark/captures/tls12-aes256gcm.pcap", [], PSK, [
        ("1.2", "TLS_PSK_WITH_AES_256_GCM_SHA384", False, [(1, 23), (2, 23), (3, 23)],
         [(1, 23), (2, 21)])]),
    ("wireshark/captures/tls12-aes128ccm.pcap", [], PSK, [
        ("1.2", "TLS_PSK_WITH_AES_128_CCM", False, [(1, 23), (2, 23), (3, 23)],
         [(1, 23), (2, 21)])]),
] + [
    (f"hotplace/tls13/tls13_{name}.pcapng", ["hotplace/tls13/sslkeylog"], None, [
        ("1.3", name, False, [(0, 23), (1, 21)], [(0, 22), (1, 22), (2, 21)])])
    for name in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_AES_128_CCM_SHA256")
] + [
    (f"hotplace/tls12/tls12_{name}.pcapng", ["hotplace/tls12/sslkeylog"], None, [
        ("1.2", name, True, [(1, 23), (2, 21)], [(1, 21)])])
    for name in ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                 "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256")
]


@needs_vectors
@pytest.mark.parametrize("name, keylogs, psk, expected", AEAD_VECTORS,
                         ids=[f"{v[0].split('/')[-1]}-{v[1][0].split('/')[-1] if v[1] else 'dsb/psk'}"
                              for v in AEAD_VECTORS])
def test_vector_records_open(name, keylogs, psk, expected):
    """Every record under application keys opens with its tag, numbered as the RFCs say."""
    capture = read_capture(VECTORS / name)
    log = _keylog(capture, *keylogs)
    assert len(capture.connections) == len(expected)
    for conn, (version, suite_name, ems, client_want, server_want) in zip(capture.connections,
                                                                         expected):
        cr, sr = split_records(conn.client), split_records(conn.server)
        info = parse_handshake(cr, sr)
        assert (info.version, info.suite.name, info.extended_master_secret) == (
            version, suite_name, ems)
        keys = derive_keys(info, log, psk)
        for records, side, want in ((cr, "client", client_want), (sr, "server", server_want)):
            app, _ = application_records(records, info, keys[side])
            assert [(a.number, a.inner_type) for a in app] == want
            assert all(a.plaintext is not None for a in app)


@needs_vectors
def test_early_data_left_alone_without_its_secret():
    """0-RTT records do not open with application keys; without the early secret they stay
    outside the application records (not mis-decrypted), and the rest is unchanged."""
    capture = read_capture(VECTORS / "wireshark/captures/tls13-rfc8446.pcap")
    conn = capture.connections[1]
    cr = split_records(conn.client)
    info = parse_handshake(cr, split_records(conn.server))
    keys = derive_keys(info, _keylog(capture, "wireshark/keys/tls13-rfc8446-noearly.keys"))
    app, before = application_records(cr, info, keys["client"])
    early = [r for r in cr[:before] if r.content_type == CT_APPLICATION_DATA]
    assert len(early) >= 2 and app[0].plaintext.startswith(b"GET")
    for record in early:
        with pytest.raises(InvalidTag):
            keys["client"].open(0, record.header, record.body)


@needs_vectors
def test_psk_needs_the_psk_and_the_right_one():
    capture = read_capture(VECTORS / "wireshark/captures/tls12-aes256gcm.pcap")
    (conn,) = capture.connections
    cr, sr = split_records(conn.client), split_records(conn.server)
    info = parse_handshake(cr, sr)
    with pytest.raises(TlsError, match="no CLIENT_RANDOM in the key log and no --psk"):
        derive_keys(info, Keylog())
    wrong = derive_keys(info, Keylog(), bytes(16))
    with pytest.raises(TlsError, match="do not open the encrypted Finished"):
        application_records(cr, info, wrong["client"])


@needs_vectors
def test_missing_tls13_secret_is_named():
    capture = read_capture(VECTORS / "illustrated-tls13/capture.pcap")
    (conn,) = capture.connections
    info = parse_handshake(split_records(conn.client), split_records(conn.server))
    log = Keylog()
    log.add_text("\n".join(line for line in (VECTORS / "illustrated-tls13/keylog.txt").read_text()
                           .splitlines() if not line.startswith("SERVER_TRAFFIC")), "partial")
    with pytest.raises(TlsError, match="no SERVER_TRAFFIC_SECRET_0"):
        derive_keys(info, log)


@needs_vectors
def test_cbc_and_old_versions_are_named():
    capture = read_capture(VECTORS / "wireshark/captures/dhe1.pcapng.gz")
    (conn,) = capture.connections
    info = parse_handshake(split_records(conn.client), split_records(conn.server))
    assert info.version == "1.0" and info.suite.aead is None and info.compression == 0
    with pytest.raises(TlsError, match="not an AEAD suite"):
        derive_keys(info, Keylog())


def test_not_tls():
    record = Record(0, b"\x17\x03\x03\x00\x01", b"x")
    with pytest.raises(TlsError, match="no ClientHello"):
        parse_handshake([record], [])


def test_tls13_padding_and_inner_type():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    keys = TrafficKeys.tls13(RFC8448_CLIENT_SECRET, suite(0x1301))
    header = b"\x17\x03\x03\x00" + bytes([3 + 1 + 5 + 16])
    nonce = bytes(a ^ b for a, b in zip(keys.iv, (7).to_bytes(12, "big")))
    body = AESGCM(keys.key).encrypt(nonce, b"abc" + bytes([CT_HANDSHAKE]) + bytes(5), header)
    assert keys.open(7, header, body) == (CT_HANDSHAKE, b"abc", 5)
