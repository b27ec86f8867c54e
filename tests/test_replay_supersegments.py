"""Captures whose segments are not the wire's: GRO/TSO super-segments, handshake and data together.

A capture taken above the NIC (GRO on receive, TSO on send, or a loopback
at 64 KB MTU) holds segments longer than any frame. Rebuilt here from a
real fixture: the server's stream from its Finished on, cut into 20000-byte
segments. The first carries the end of the handshake and the first
application records (the TX replay sends only the part under application
keys: "clipped"); every one is longer than a frame (TX sends it as frames
of MAX_PAYLOAD bytes, RX receives it so: "split"). Both must still be exact.
"""

from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from tlsnic.cosim.capture import read_capture
from tlsnic.cosim.replay import MAX_PAYLOAD, report, run
from tlsnic.cosim.tls_keys import CT_CHANGE_CIPHER_SPEC, split_records

FIXTURES = Path(__file__).resolve().parents[1] / "pcap-fixtures"
SUPER = 20000


def _super_segmented(tmp_path):
    source = FIXTURES / "real-tls12.pcap"
    (conn,) = read_capture(source).connections
    server = conn.server
    ccs = next(r for r in split_records(server) if r.content_type == CT_CHANGE_CIPHER_SPEC)
    frames = []
    for side, seg in conn.order:
        if side == "server" and seg.payload and seg.end > ccs.offset:
            continue                  # replaced below
        frames.append(Ether() / IP(seg.ip))
    (addr, port), (peer, peer_port) = server.src, server.dst
    for offset in range(ccs.offset, len(server.stream), SUPER):
        frames.append(Ether() / IP(src=addr, dst=peer) / TCP(
            sport=port, dport=peer_port, flags="PA", seq=server.seq_of(offset))
            / Raw(server.stream[offset:offset + SUPER]))
    path = tmp_path / "gro.pcap"
    wrpcap(str(path), frames)
    return path, ccs


def test_super_segments_replay_exactly(tmp_path):
    path, ccs = _super_segmented(tmp_path)
    keys = [FIXTURES / "real-tls12.keys"]
    assert max(len(s.payload) for s in read_capture(path).connections[0].server.segments) == SUPER
    replay, results = run(path, keys)
    rep = report(replay, results)
    assert rep["mismatches"] == 0
    server = rep["connections"][0]["directions"][1]
    assert server["tx_exact"] is True and server["records"] == 12
    conn = replay.connections[0].conn
    plan = replay.connections[0].directions["server"]
    spans = [min(s.end, plan.tx_end) - max(s.offset, plan.start)
             for s in conn.server.data_segments if s.end > plan.start]
    tx = results["tx"]["directions"]["0/server"]
    assert tx["segments"] == len(spans) and tx["clipped"] == 1
    assert tx["split"] == sum(n > MAX_PAYLOAD for n in spans) >= 5
    assert tx["frames"] == sum(-(-n // MAX_PAYLOAD) for n in spans)
    rx = results["rx"]["directions"]["0/server"]
    assert rx["records"] == 12 and rx["mismatches"] == 0
    assert rx["frames"] > len(conn.server.segments)
    # The same plaintext as the original capture.
    original = report(*run(FIXTURES / "real-tls12.pcap", keys, direction="tx"))
    assert server["plaintext_sha256"] == original["connections"][0]["directions"][1][
        "plaintext_sha256"]
    # The first application record shares its segment with the Finished.
    assert plan.start > ccs.offset and plan.start - ccs.offset < SUPER
