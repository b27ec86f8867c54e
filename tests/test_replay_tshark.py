"""Optional: where tshark is installed, its decryption of each fixture equals the replay's plaintext."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tlsnic.cosim.replay import report, run

FIXTURES = Path(__file__).resolve().parents[1] / "pcap-fixtures"
EXPECTED = sorted(FIXTURES.glob("*.expected.json"))
pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def tshark_plaintext(capture, keylog, port, client):
    """SHA-256 of each direction's application data as tshark decrypts it.

    ``client`` is the client's ``addr:port``: tshark's "Node 0" is whoever sent
    the first data it followed (the server, in TLS 1.3, whose encrypted
    handshake comes first), and the other node's lines are indented.
    """
    command = ["tshark", "-r", str(capture), "-o", "tcp.reassemble_out_of_order:TRUE",
               "-d", f"tcp.port=={port},tls", "-q", "-z", "follow,tls,raw,0"]
    if keylog is not None:
        command[3:3] = ["-o", f"tls.keylog_file:{keylog}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    data = {"client": bytearray(), "server": bytearray()}
    first = None
    for line in out.split("=" * 67)[1].splitlines():
        if line.startswith("Node 0: "):
            first = "client" if line[len("Node 0: "):] == client else "server"
        if not line.strip() or ":" in line:
            continue                     # headers: "Follow: ...", "Node 0: ..."
        second = "server" if first == "client" else "client"
        data[second if line.startswith("\t") else first] += bytes.fromhex(line.strip())
    return {side: hashlib.sha256(b).hexdigest() for side, b in data.items()}


@pytest.mark.parametrize("path", EXPECTED, ids=[p.name.split(".")[0] for p in EXPECTED])
def test_tshark_agrees(path):
    expected = json.loads(path.read_text())
    capture = FIXTURES / expected["capture"]
    keylog = FIXTURES / expected["keylog"] if expected["keylog"] else None
    replay, results = run(capture, [keylog] if keylog else [], direction="rx")
    rep = report(replay, results)
    (conn,) = rep["connections"]
    port = int(conn["server"].rsplit(":", 1)[1])
    theirs = tshark_plaintext(capture, keylog, port, conn["client"])
    # The replay's independent decryption (every traffic secret, KeyUpdates followed) ...
    oracle = {side: plan.plaintext_sha256()
              for side, plan in replay.connections[0].directions.items()}
    assert oracle == theirs
    # ... and what the kTLS reader got, which stops at a KeyUpdate (no rekey).
    for d in conn["directions"]:
        plan = replay.connections[0].directions[d["from"]]
        if not any(app.generation for app in plan.records):
            assert d["plaintext_sha256"] == theirs[d["from"]]
