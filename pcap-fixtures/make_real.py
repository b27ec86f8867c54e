#!/usr/bin/env python3
"""Real TLS captures: Python's ``ssl`` (OpenSSL) client and server on loopback, with their key log.

Writes, for TLS 1.2 (ECDHE-RSA-AES128-GCM-SHA256) and TLS 1.3 (OpenSSL's
first choice, TLS_AES_256_GCM_SHA384)::

    real-tls12.pcap  real-tls12.keys  real-tls12.expected.json
    real-tls13.pcap  real-tls13.keys  real-tls13.expected.json

Each connection: the client sends a 1 KB request, the server answers with
100 KB (16 KB records, so each spans a dozen segments) and a few small
writes (several records per segment), then both close (close_notify).

What the recipe needs: root (or CAP_NET_ADMIN + CAP_NET_RAW) and
util-linux's ``unshare``. It re-runs itself in a network namespace of its
own, so the host's loopback is left alone; there it brings ``lo`` up with a
1500-byte MTU and turns off TSO/GSO with the ethtool ioctl (no ethtool
binary needed), so that the capture holds the segments a NIC would send,
not 64 KB loopback super-segments. Scapy's ``AsyncSniffer`` captures on
``lo`` (no tcpdump: the namespace carries only this traffic, so no filter
is needed). The captures differ at every run (fresh keys and randoms); the
committed ones are what the tests replay.

Usage: ``sudo .venv/bin/python pcap-fixtures/make_real.py [--out DIR]``
"""

import argparse
import array
import datetime
import fcntl
import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PORT = 4433
REQUEST = b"GET /fixture HTTP/1.1\r\nHost: tlsnic\r\n" + b"X-Pad: " + b"r" * 960 + b"\r\n\r\n"
BULK = bytes((i * 31 + i // 4096) & 0xFF for i in range(100 * 1024))
SMALL = [b"a" * 10, b"b" * 100, b"c" * 300, b"d" * 1]
CASES = {"tls12": ssl.TLSVersion.TLSv1_2, "tls13": ssl.TLSVersion.TLSv1_3}
SUITES = {"tls12": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "tls13": "TLS_AES_256_GCM_SHA384"}

# ethtool ioctl (linux/ethtool.h): struct ethtool_value { u32 cmd; u32 data; }.
SIOCETHTOOL = 0x8946
ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO = 0x1F, 0x24, 0x2C


def _ethtool_off(ifname, command):
    value = array.array("B", struct.pack("II", command, 0))
    ifreq = struct.pack("16sP16x", ifname.encode(), value.buffer_info()[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)


def _self_signed(directory):
    """A throwaway RSA certificate for the server (made with ``cryptography``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlsnic.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = Path(directory, "cert.pem"), Path(directory, "key.pem")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _server(listener, ctx, ready):
    ready.set()
    conn, _ = listener.accept()
    with ctx.wrap_socket(conn, server_side=True) as tls:
        got = b""
        while not got.endswith(b"\r\n\r\n"):
            got += tls.recv(4096)
        for i in range(0, len(BULK), 16384):  # 16 KB records, each over a dozen segments
            tls.sendall(BULK[i:i + 16384])
            time.sleep(0.02)                  # paced, so the sniffer keeps up
        for chunk in SMALL:                 # small records: several in one segment
            tls.sendall(chunk)
        tls.unwrap()


def _exchange(name, version, out, certs):
    from scapy.arch.linux import L2Socket
    from scapy.config import conf
    from scapy.sendrecv import AsyncSniffer
    from scapy.utils import wrpcap
    keylog = out / f"real-{name}.keys"
    keylog.unlink(missing_ok=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*certs)
    server_ctx.minimum_version = server_ctx.maximum_version = version
    if version is ssl.TLSVersion.TLSv1_2:
        server_ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    server_ctx.options |= ssl.OP_NO_TICKET if version is ssl.TLSVersion.TLSv1_2 else 0
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.minimum_version = client_ctx.maximum_version = version
    client_ctx.keylog_filename = str(keylog)

    listener = socket.create_server(("127.0.0.1", PORT))
    # L2Socket (not the listen-only socket) drops the PACKET_OUTGOING copy:
    # on lo every packet is seen leaving and arriving.
    conf.bufsize = 1 << 24
    sniffer = AsyncSniffer(opened_socket=L2Socket(iface="lo"), store=True)
    sniffer.start()
    time.sleep(0.5)
    ready = threading.Event()
    thread = threading.Thread(target=_server, args=(listener, server_ctx, ready))
    thread.start()
    ready.wait()
    with socket.create_connection(("127.0.0.1", PORT)) as raw:
        with client_ctx.wrap_socket(raw) as tls:
            tls.sendall(REQUEST)
            want = len(BULK) + sum(map(len, SMALL))
            got = 0
            while got < want:
                got += len(tls.recv(65536))
            tls.unwrap()
    thread.join()
    listener.close()
    time.sleep(0.5)
    packets = sniffer.stop()
    # Linux lo frames carry a 14-byte Ethernet header (zero MACs).
    wrpcap(str(out / f"real-{name}.pcap"), [bytes(p) for p in packets], linktype=1)
    print(f"real-{name}.pcap: {len(packets)} packets; real-{name}.keys")
    # What the replay must report: what this script knows (record counts are
    # OpenSSL's business: TLS 1.3 adds its session tickets).
    sport = packets_client_port(packets)
    expected = {"capture": f"real-{name}.pcap", "keylog": keylog.name, "psk": None, "report": {
        "connections": [{
            "client": f"127.0.0.1:{sport}", "server": f"127.0.0.1:{PORT}",
            "version": "1.2" if version is ssl.TLSVersion.TLSv1_2 else "1.3",
            "suite": SUITES[name], "offloaded": True, "reason": None, "directions": [
                {"from": "client", "mismatches": 0, "tx_exact": True,
                 "plaintext_sha256": hashlib.sha256(REQUEST).hexdigest()},
                {"from": "server", "mismatches": 0, "tx_exact": True,
                 "plaintext_sha256": hashlib.sha256(BULK + b"".join(SMALL)).hexdigest()}]}],
        "mismatches": 0}}
    (out / f"real-{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n")


def packets_client_port(packets):
    """The client's port: the source port of the SYN."""
    from scapy.layers.inet import TCP
    from scapy.layers.l2 import Ether
    for p in packets:
        tcp = Ether(bytes(p)).getlayer(TCP)
        if tcp is not None and tcp.flags == "S":
            return tcp.sport
    raise RuntimeError("no SYN captured")


def inner(out):
    import logging
    # Linux lo's ARPHRD_LOOPBACK is unknown to Scapy's table: frames come as Raw, fine.
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    subprocess.run(["ip", "link", "set", "lo", "mtu", "1500", "up"], check=True)
    for command in (ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO):
        _ethtool_off("lo", command)
    with tempfile.TemporaryDirectory() as tmp:
        certs = _self_signed(tmp)
        for name, version in CASES.items():
            _exchange(name, version, out, certs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_namespace:
        inner(args.out.resolve())
        return 0
    # A network namespace of our own: its lo is ours to reconfigure and sniff.
    return subprocess.run(["unshare", "--net", sys.executable, __file__, "--in-namespace",
                           "--out", str(args.out.resolve())], env=os.environ).returncode


if __name__ == "__main__":
    sys.exit(main())
