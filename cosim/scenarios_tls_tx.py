"""Backend-agnostic scenarios of inline TLS transmit (same shape as :mod:`.scenarios`).

Each scenario is ``async def name(dev, wire, **params) -> dict`` on a
:class:`~tlsnic.driver.device.Device` not yet opened, driving the kTLS driver
(:mod:`tlsnic.driver.ktls`). The observation holds only timing-independent
data: the TX completions (raw), the frames on the wire per port, the driver's
resync counts and the card's counters, plus what an oracle needs to decrypt
the wire (``flows``: per session its version, cipher, ports, ``iss``, first
record number and record sizes; keys and IVs come from :func:`session_keys`,
plaintext from :func:`payload`). The model must be built with TLS
(:func:`run_on_model` does), and so must the gateware once it has the engine;
a card without ``CAP_TLS_TX`` makes the sessions software ones, which the
observation then shows.

The card a scenario needs: :data:`MULTI_PORT` (ports) and :data:`TX_CONTEXTS`
(TX contexts), like :data:`tlsnic.cosim.scenarios.MULTI_PORT`; every other
scenario runs on a one-port card with at least 64 contexts. Each moves less
than ~100 KB of record bytes (``tls_tx_stream``, with its 16 KB record, a
little more), so a slow RTL simulation can run them all.
"""

import asyncio
import itertools

from .scenarios import run_scenario
from tlsnic.abi import MAX_FRAME, TlsProgressParams, TxOpcode, TxStatus, pack
from tlsnic.driver.ktls import KtlsDriver, KtlsSocket
from tlsnic.driver.tcp import TcpFlow

__all__ = ["SCENARIOS", "MULTI_PORT", "TX_CONTEXTS", "KEY", "IV", "run", "run_on_model",
           "payload", "session_keys"]

KEY = {"AES-128-GCM": bytes(range(16)), "AES-256-GCM": bytes(range(32))}
IV = {"1.2": bytes.fromhex("c0c1c2c3"), "1.3": bytes.fromhex("c0c1c2c3c4c5c6c7c8c9cacb")}
VERSIONS = ("1.2", "1.3")
CIPHERS = ("AES-128-GCM", "AES-256-GCM")
#: Record sizes of the issue's matrix; 16384 is left to :func:`tls_tx_stream`,
#: which carries one, so that the matrix stays small.
MATRIX_SIZES = (0, 1, 15, 16, 17, 1447, 1448)
MATRIX_MSS = (536, 1448, 8948)


def payload(size, fill):
    """The plaintext of a record: ``size`` bytes of a pattern chosen by ``fill``."""
    return bytes((fill + 13 * i) & 0xFF for i in range(size))


def session_keys(cipher, version, index=0):
    """``(key, iv)`` of session ``index`` of a scenario (index 0: :data:`KEY`, :data:`IV`)."""
    key = bytes((b + 29 * index) & 0xFF for b in KEY[cipher])
    iv = bytes((b + 3 * index) & 0xFF for b in IV[version])
    return key, iv


class _WireLog:
    """The frames the card put on each port, taken phase by phase.

    Completions do not name the port, so after each phase (all of whose
    frames left by one port) the frames of the OK PACKET completions reaped
    since the previous phase are taken from that port.
    """

    def __init__(self, wire, ports=1):
        self.wire = wire
        self.seen = 0
        self.frames = {str(p): [] for p in range(ports)}

    async def drain(self, ktls, port=0):
        await ktls.flush()
        new, self.seen = ktls.completions[self.seen:], len(ktls.completions)
        sent = sum(c.status is TxStatus.OK and c.opcode is TxOpcode.PACKET for c in new)
        self.frames[str(port)] += [(await self.wire.recv(port)).hex() for _ in range(sent)]


async def _open(dev, *, strategy="dump", tx_log=8, rx_log=2, rx_buf_size=MAX_FRAME, **driver):
    await dev.open(tx_log=tx_log, rx_log=rx_log, rx_buf_size=rx_buf_size)
    return KtlsDriver(dev, strategy=strategy, seed=11, **driver)


async def _socket(ktls, flows, *, version, cipher, mss, iss, rec_seq=0, flow=None, route=0,
                  index=None):
    """A socket with TX TLS enabled, recorded in ``flows`` (the oracle's list)."""
    index = len(flows) if index is None else index
    flow = flow or TcpFlow(src_port=49152 + index)
    sock = KtlsSocket(ktls, flow, iss=iss, mss=mss, route=route)
    key, iv = session_keys(cipher, version, index)
    session = await sock.enable_tx(version, cipher, key, iv, rec_seq)
    flows.append({"index": index, "version": version, "cipher": cipher, "mss": mss,
                  "src_port": flow.src_port, "iss": iss, "rec_seq": rec_seq,
                  "ip_version": flow.ip_version, "mode": session.mode, "sizes": [],
                  "fills": []})
    return sock


def _write(sock, flow, sizes, fill=None):
    """Write one record per size: :func:`payload` of ``fill`` + the record's index in the flow."""
    fill = 16 * flow["index"] if fill is None else fill
    for size in sizes:
        flow["fills"].append(fill + len(flow["sizes"]))
        flow["sizes"].append(size)
        sock.write(payload(size, flow["fills"][-1]), record_size=max(size, 1))


async def _observe(dev, ktls, sockets, obs, log, port=0):
    """Close every socket, take the remaining frames from ``port``, read the counters."""
    for sock in sockets:
        await sock.close()
    await log.drain(ktls, port)
    obs["tx_completions"] = [c.to_dict() for c in ktls.completions]
    obs["wire"] = log.frames
    obs["driver"] = {k: v for k, v in ktls.stats.items() if v}
    obs["tags_in_use"] = ktls.tags_in_use
    obs["counters"] = await dev.update_stats()
    return obs


async def _recover(sock, budget=200):
    """The retransmit timer, then ACK whatever goes out, until everything is ACKed."""
    await sock.rexmt_timer()
    for _ in range(budget):
        if sock.tcp.snd_una == sock.tcp.write_seq:
            return
        sock.ack(sock.tcp.snd_nxt)
        await sock.output()
    raise RuntimeError("retransmit recovery made no progress")


# --- the stream path -----------------------------------------------------------------

async def tls_tx_stream(dev, wire, *, version="1.2", cipher="AES-128-GCM", mss=1448,
                        sizes=(0, 1, 15, 16, 17, 1447, 1448, 16384), iss=0xFFFF_F000,
                        open_args=None):
    """In-order records of every size (one of 16 KB), across a seq wrap, then a
    pure ACK on the tag: only the stream path. ``open_args`` (ring sizes, RX
    buffer size, driver options for :func:`_open`) shrink the host memory it
    needs, for a card whose host memory is small and slow to fill (the board
    top over its UART)."""
    ktls = await _open(dev, **(open_args or {}))
    flows = []
    sock = await _socket(ktls, flows, version=version, cipher=cipher, mss=mss, iss=iss, rec_seq=3)
    _write(sock, flows[0], sizes, fill=0)
    await sock.output()
    await sock.send_ack()
    return await _observe(dev, ktls, [sock], {"sizes": list(sizes), "flows": flows},
                          _WireLog(wire))


async def tls_tx_matrix(dev, wire, *, versions=VERSIONS, ciphers=CIPHERS, mss=MATRIX_MSS,
                        sizes=MATRIX_SIZES):
    """TLS 1.2/1.3 x AES-128/256 x MSS 536/1448/8948, each a session of its own
    carrying one record of every size; sequence numbers wrap in half of them."""
    ktls = await _open(dev)
    flows, sockets = [], []
    for version, cipher, seg in itertools.product(versions, ciphers, mss):
        index = len(flows)
        iss = 0xFFFF_FC00 + 64 * index if index % 2 else 1000 * index
        sock = await _socket(ktls, flows, version=version, cipher=cipher, mss=seg, iss=iss,
                             rec_seq=index)
        _write(sock, flows[-1], sizes)
        await sock.output()
        sockets.append(sock)
    return await _observe(dev, ktls, sockets, {"flows": flows}, _WireLog(wire))


async def tls_tx_interleaved(dev, wire, *, flows=64, sizes=(1, 0, 300), mss=128,
                             strategy="dump", rexmit_every=4):
    """``flows`` sessions at once (TLS 1.2/1.3, AES-128/256, IPv4/IPv6
    alternating), their segments interleaved in the TX ring, every
    ``rexmit_every``-th flow retransmitting mid record meanwhile."""
    ktls = await _open(dev, strategy=strategy, ifnet_max_rexmit_pct=100)
    oracle, sockets = [], []
    for i in range(flows):
        if (i // 2) % 2:
            flow = TcpFlow(src_addr=f"2001:db8::{i + 1:x}", dst_addr="2001:db8:1::2",
                           src_port=20000 + i, ip_version=6)
        else:
            flow = TcpFlow(src_addr=f"192.0.2.{i + 1}", src_port=20000 + i)
        sock = await _socket(ktls, oracle, version=VERSIONS[i % 2], cipher=CIPHERS[(i // 4) % 2],
                             mss=mss, iss=(0xFFFF_FF00 + 0x0101_0101 * i) & 0xFFFF_FFFF,
                             rec_seq=7 * i, flow=flow)
        _write(sock, oracle[-1], sizes)
        sockets.append(sock)
    queued = [sock.tcp.new_segments() for sock in sockets]
    for r in range(max(map(len, queued))):
        for i, (sock, segs) in enumerate(zip(sockets, queued)):
            if r < len(segs):
                await sock.send_segments([segs[r]], flush=False)
            if r == 2 and i % rexmit_every == 0:
                seq = (sock.tcp_iss + 100) & 0xFFFF_FFFF     # inside the 300-byte record
                await sock.send_segments(sock.tcp.rexmit_segments(seq, mss), flush=False)
    return await _observe(dev, ktls, sockets, {"flows": oracle}, _WireLog(wire))


# --- retransmits -----------------------------------------------------------------------

async def tls_tx_retransmit(dev, wire, *, version="1.3", cipher="AES-256-GCM", strategy="dump",
                            mss=536, sizes=(4000, 100, 16384, 3), seed_offsets=(0, 1608, 4000,
                                                                                 4121, 20400)):
    """Retransmits at record starts, mid record, inside a trailer and of a
    record's last segment; and a local drop (forward gap)."""
    ktls = await _open(dev, strategy=strategy)
    flows = []
    sock = await _socket(ktls, flows, version=version, cipher=cipher, mss=mss, iss=7777)
    _write(sock, flows[0], sizes, fill=0)
    segs = sock.tcp.new_segments()
    await sock.send_segments(segs[:1])
    await sock.send_segments(segs[2:])        # segs[1] lost before the card: forward gap
    await sock.send_segments(segs[1:2])
    for offset in seed_offsets:
        await sock.retransmit(7777 + offset, mss)
    return await _observe(dev, ktls, [sock], {"sizes": list(sizes), "flows": flows},
                          _WireLog(wire))


async def tls_tx_seek_retransmits(dev, wire, *, version="1.2", cipher="AES-256-GCM", mss=536,
                                  sizes=(3000, 700, 0, 2500, 100)):
    """The seek strategy's tag-log paths, with a tag log of 4 entries so that
    record 4's entry evicts record 0's: a forward gap in the record being
    sent (dump of the gap); retransmits mid record and of a tag segment with
    the tag from the log (TAG_VALID); on a record boundary (parameters only);
    mid record 0, evicted, sent whole (SEEK without a tag); record 0's tag
    bytes (unknown: dump, which logs record 0 again, evicting record 4); then
    record 0 with its tag and record 4 without. The tag log entries the card
    wrote are part of the observation."""
    ktls = await _open(dev, strategy="seek", ifnet_max_rexmit_pct=100, tag_log_log2=2)
    flows = []
    sock = await _socket(ktls, flows, version=version, cipher=cipher, mss=mss, iss=0xFFFF_FE00,
                         rec_seq=2**32 - 2)
    _write(sock, flows[0], sizes)
    segs = sock.tcp.new_segments()
    gap = 2                                    # inside record 0, while it is being sent
    await sock.send_segments(segs[:gap])
    await sock.send_segments(segs[gap + 1:])
    await sock.send_segments(segs[gap:gap + 1])
    overhead = 5 + (8 if version == "1.2" else 0) + 16 + (version == "1.3")
    starts = list(itertools.accumulate((size + overhead for size in sizes), initial=0))
    for offset, length in ((starts[0] + 1000, mss), (starts[2] - 3, 40),
                           (starts[1] + 100, 200), (starts[3], mss),
                           (starts[1] - 10, 5), (starts[0] + 1000, mss),
                           (starts[4] + 20, 30)):
        await sock.retransmit((sock.tcp_iss + offset) & 0xFFFF_FFFF, length)
    tag = sock.session.snd_tag
    log = []
    for number in range(sock.session.params.rec_seq, sock.framer_seqno()):
        logged = await ktls.read_tag_log(tag, number)
        log.append(logged.hex() if logged is not None else None)
    return await _observe(dev, ktls, [sock], {"flows": flows, "tag_log": log}, _WireLog(wire))


# --- bad input, exhaustion, route change ---------------------------------------------------

async def tls_tx_bad_input(dev, wire, *, version="1.2", cipher="AES-128-GCM"):
    """Tagged frames the card must drop, never sending them in the clear: out
    of sequence with no resync, another flow's frame, a tag never allocated, a
    tag past the table, a freed tag (every opcode), a bogus header (version,
    then length over 2**14 + 256) failing the context until SET_PROGRESS; then
    good records still go out."""
    ktls = await _open(dev)
    flows = []
    sock = await _socket(ktls, flows, version=version, cipher=cipher, mss=1448, iss=5000)
    tag, tcp = sock.session.snd_tag.tag, sock.tcp
    plain_tcp = KtlsSocket(ktls, TcpFlow(src_port=40000), iss=5000).tcp
    late = await _socket(ktls, [], version=version, cipher=cipher, mss=1448, iss=9,
                         flow=TcpFlow(src_port=40001))
    freed = late.session.snd_tag.tag
    await late.close()
    unknown, past = dev.caps.tx_contexts, dev.caps.tx_contexts + 1
    probe = tcp.build_frame(5000, b"cleartext" * 5)
    await dev.send(tcp.build_frame(5100, b"cleartext" * 5), tag=tag)          # OUT_OF_SEQUENCE
    await dev.send(plain_tcp.build_frame(5000, b"cleartext" * 5), tag=tag)    # BAD_FLOW
    await dev.send(probe, tag=unknown)                                       # BAD_TAG
    await dev.send(probe, tag=past)                                          # BAD_TAG
    block = pack(TlsProgressParams, next_seq=5000, record_seq=5000, record_number=0)
    await dev.send(probe, tag=freed)                                         # BAD_TAG x4
    await dev.send_ctrl(TxOpcode.SET_PROGRESS, freed, block)
    await dev.send_ctrl(TxOpcode.DUMP, freed, b"cleartext")
    await dev.send_ctrl(TxOpcode.FREE, freed)
    bogus_version = bytes([23, 3, 1, 0, 40]) + b"cleartext" * 5
    bogus_length = bytes([23, 3, 3, 0x41, 0x09]) + b"cleartext" * 5
    await dev.send(tcp.build_frame(5000, bogus_version[:20]), tag=tag)       # CONTEXT_FAILED
    await dev.send(tcp.build_frame(5020, bogus_version[20:]), tag=tag)       # still failed
    await dev.send_ctrl(TxOpcode.SET_PROGRESS, tag, block)
    await dev.send(tcp.build_frame(5000, bogus_length), tag=tag)             # CONTEXT_FAILED
    await dev.send_ctrl(TxOpcode.SET_PROGRESS, tag, block)                   # recovers
    obs = {"statuses": [c.status.name for c in await ktls.flush()]}
    # The driver's view of the context is stale after the raw descriptors.
    sock.session.snd_tag.expected_seq = None
    _write(sock, flows[0], (100, 0, 2000))
    await sock.output()
    obs["flows"] = flows
    return await _observe(dev, ktls, [sock], obs, _WireLog(wire))


async def tls_tx_exhaustion(dev, wire, *, extra=2, sizes=(2000, 0, 700), mss=536):
    """More sessions than the card has contexts: the ones past the last context
    run in software (ENOMEM, edge 12); one closed, the next session gets its
    context back. Every flow's bytes still decrypt."""
    ktls = await _open(dev)
    flows, sockets = [], []
    for _ in range(dev.caps.tx_contexts + extra):
        sock = await _socket(ktls, flows, version=VERSIONS[len(flows) % 2],
                             cipher=CIPHERS[0], mss=mss, iss=100 * len(flows))
        _write(sock, flows[-1], sizes)
        await sock.output()
        sockets.append(sock)
    await sockets.pop(0).close()
    sock = await _socket(ktls, flows, version="1.3", cipher=CIPHERS[1], mss=mss, iss=77)
    _write(sock, flows[-1], sizes)
    await sock.output()
    sockets.append(sock)
    return await _observe(dev, ktls, sockets, {"flows": flows}, _WireLog(wire))


async def tls_tx_route_change(dev, wire, *, version="1.2", strategy="dump", mss=536):
    """Two ports. The route moves the flow from port 0 to 1: EAGAIN (nothing
    sent), one reset task, the tag reallocated on port 1, recovery by the
    retransmit timer. Then a switch to software and the route back to 0: the
    old (ifnet) session, its records still unacked, resets again (the cloned
    session has no tag) while the new records go out as plain frames."""
    ktls = await _open(dev, strategy=strategy, ifnet_max_rexmit_pct=100)
    if dev.caps.ports < 2:
        raise ValueError(f"tls_tx_route_change needs 2 ports, the card has {dev.caps.ports}")
    log = _WireLog(wire, ports=2)
    flows = []
    sock = await _socket(ktls, flows, version=version, cipher=CIPHERS[0], mss=mss, iss=1000)
    _write(sock, flows[0], (3000, 2000))
    await sock.output()
    await log.drain(ktls, 0)
    sock.ack(1000 + 1000)                       # mid record 0
    sock.route = 1
    _write(sock, flows[0], (1500,))
    obs = {"sent_on_eagain": len(await sock.output())}
    await ktls.run_tasks()                      # the reset task: a tag on port 1
    await sock.rexmt_timer()                    # one MSS, then slow start on port 1
    for _ in range(2):
        sock.ack(sock.tcp.snd_nxt)
        await sock.output()
    sock.set_tx_mode("sw")
    _write(sock, flows[0], (800, 0))
    await sock.output()
    await log.drain(ktls, 1)
    obs["unacked_at_second_change"] = (sock.tcp.write_seq - sock.tcp.snd_una) & 0xFFFF_FFFF
    sock.route = 0
    obs["sent_on_second_eagain"] = len(await sock.rexmt_timer())
    await ktls.run_tasks()                      # the old session's tag moves to port 0
    await _recover(sock)
    obs["modes"] = [s.mode for s in sock.sessions]
    obs["flows"] = flows
    return await _observe(dev, ktls, [sock], obs, log, port=0)


SCENARIOS = {fn.__name__: fn for fn in (
    tls_tx_stream, tls_tx_matrix, tls_tx_interleaved, tls_tx_retransmit, tls_tx_seek_retransmits,
    tls_tx_bad_input, tls_tx_exhaustion, tls_tx_route_change)}
#: Scenarios that need a card with more than one port, and how many.
MULTI_PORT = {"tls_tx_route_change": 2}
#: Scenarios that need a card with this many TX contexts (others: the default, >= 64).
TX_CONTEXTS = {"tls_tx_exhaustion": 2}


async def run(name, bus, wire, **params):
    """Run scenario ``name`` on a backend; return its observation (device closed after)."""
    return await run_scenario(SCENARIOS[name], bus, wire, **params)


def run_on_model(name, **params):
    """Run scenario ``name`` on a fresh reference model with the TLS engine and
    the ports and contexts the scenario needs."""
    from .model import ReferenceNic
    kwargs = {"tx_contexts": TX_CONTEXTS[name]} if name in TX_CONTEXTS else {}
    nic = ReferenceNic(tls=True, ports=MULTI_PORT.get(name, 1), **kwargs)
    return asyncio.run(run(name, nic, nic.wire, **params))
