"""Replay a TLS capture through the NIC: what would the card have done, and is every byte right?

``tlsnic replay CAPTURE --keylog KEYS`` reads the capture (:mod:`.capture`),
follows each connection's TLS (:mod:`.tls_keys`) and plays it through the
driver and the card, on the reference model or the gateware:

TX
    Each direction's records under application keys are written, with the
    plaintext the capture's own keys open them to, into a kTLS socket set up
    as the TLS stack would have set it up at the end of its handshake (same
    keys, first record number, TCP seq). Then every captured segment of
    that direction is sent in capture order, with its own sequence number
    and boundaries, retransmissions and reordering included, and the TCP
    payload the card puts on the wire must equal the captured bytes
    exactly: the card encrypted the records and computed the tags the real
    stack did, across every segment boundary and every resync the driver
    needed. The TLS 1.2 explicit nonce of each record is the captured one
    (the driver's framer is handed it record by record, as the stack that
    made the capture chose it).
RX
    The captured frames of both directions go into the card's receive side
    in capture order, each completion handled by the kTLS receive driver
    before the next frame (lock step). Receive is enabled once the handshake
    has been read, with the capture's keys and first record number; per
    direction the report says how many records the card decrypted, how many
    were left to software, how many resyncs the driver confirmed, and every
    delivered record is compared with the independent decryption.

The independent decryption is :mod:`.tls_keys`' (``cryptography``'s AEADs
directly, nothing of the driver under test).

Connections the card does not offload (CCM, CBC, ChaCha20-Poly1305, TLS
before 1.2, pre-RFC TLS 1.3 drafts, compression) are passed through and say
why; a connection whose keys are missing says which.

The same replay runs on any backend: :func:`replay_tx` and :func:`replay_rx`
take a ``Device`` not yet opened and a ``Wire``; :data:`SCENARIOS` exposes
them to the cocotb runner (:mod:`.cocotb_scenarios`) so that the gateware
runs them too.
"""

import asyncio
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from .capture import CaptureError, Connection, read_capture
from .tls_keys import (CT_APPLICATION_DATA, CT_HANDSHAKE, HS_CLIENT_HELLO, Keylog, KeylogError,
                       TlsError, application_records, derive_keys, parse_handshake, split_records)
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tlsnic.abi import MAX_FRAME, TxOpcode, TxStatus
from tlsnic.driver.ktls import KtlsDriver, KtlsSocket
from tlsnic.driver.ktls_rx import PATH_NIC, KtlsRxDriver, KtlsRxSocket, RxError, RxRecord
from tlsnic.driver.tcp import TcpFlow, parse_segment, seq_add
from tlsnic.driver.tls_record import AES_GCM

__all__ = ["ReplayError", "Replay", "ConnectionPlan", "DirectionPlan", "load", "replay_tx", "replay_rx",
           "run", "report", "format_report", "run_cli", "SCENARIOS"]

SIDES = ("client", "server")
#: Largest TCP payload in one frame the card sends: MAX_FRAME less Ethernet,
#: IPv6 and TCP headers. A captured segment longer than that (a TSO/GRO super
#: segment, or a loopback capture at 64 KB MTU) goes out in pieces of this size.
MAX_PAYLOAD = MAX_FRAME - 14 - 40 - 20
#: The driver's counts of repositioning the card (per direction in the results).
DRIVER_COUNTS = ("tx_tls_ooo", "resync_params", "dump_descriptors", "redma_bytes")


class ReplayError(Exception):
    """The replay cannot start: a capture or key log that cannot be read (says which, where)."""


# --- the plan: what each connection and direction replays ----------------------------------------

@dataclasses.dataclass
class DirectionPlan:
    """One direction of a TLS connection, under its application keys.

    Attributes
    ----------
    side : str
        ``"client"`` or ``"server"``: who sent it.
    records : list[AppRecord]
        Records under application traffic keys, in order.
    keys : TrafficKeys or None
        Generation 0 of the direction's keys.
    start : int
        Stream offset where the application records start.
    tx_records : int
        How many of ``records`` the kTLS TX path can send: all of them,
        unless one was not captured whole, is padded (TLS 1.3 padding; kTLS
        never pads) or a KeyUpdate comes (kTLS cannot rekey).
    notes : list[str]
    """
    side: str
    records: list = dataclasses.field(default_factory=list)
    keys: object = None
    start: int = 0
    tx_records: int = 0
    notes: list = dataclasses.field(default_factory=list)

    @property
    def tx_end(self):
        """Stream offset just past the last record the TX path sends."""
        return self.records[self.tx_records - 1].record.end if self.tx_records else self.start

    def plaintext_sha256(self):
        """SHA-256 of the application_data plaintext, records in order (None if one is missing)."""
        h = hashlib.sha256()
        for app in self.records:
            if app.plaintext is None:
                return None
            if app.inner_type == CT_APPLICATION_DATA:
                h.update(app.plaintext)
        return h.hexdigest()


@dataclasses.dataclass
class ConnectionPlan:
    """One connection: what its TLS is, whether the card offloads it, and why not.

    Attributes
    ----------
    conn : Connection
    handshake : Handshake or None
        None: not TLS (or its hellos were not captured).
    offloaded : bool
        The card is given this connection's keys.
    reason : str or None
        Why not, when not.
    directions : dict[str, DirectionPlan]
    """
    conn: Connection
    handshake: object = None
    offloaded: bool = False
    reason: str = None
    directions: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Replay:
    """A capture and its keys, analysed: the input of every backend's run."""
    capture: object
    connections: list


def offload_refusal(info):
    """Why the card would not be handed this connection, or None if it would.

    The card does AES-128-GCM and AES-256-GCM for TLS 1.2 and 1.3
    (:data:`tlsnic.driver.tls_record.AES_GCM`).
    """
    s = info.suite
    if info.version.startswith("draft"):
        return f"pre-RFC TLS 1.3 ({info.version}): kTLS takes RFC 8446 only"
    if info.version not in ("1.2", "1.3"):
        return f"TLS {info.version}: the NIC offloads TLS 1.2 and 1.3 only"
    if info.compression:
        return f"compression (method {info.compression}): kTLS does not compress"
    if s.aead is None:
        return f"{s.name}: not an AEAD suite (CBC and the like are not offloaded)"
    if s.aead.startswith("CHACHA20"):
        return f"{s.name}: ChaCha20-Poly1305 is not offloaded (yet)"
    if s.aead not in AES_GCM:
        return f"{s.name}: {s.aead} is not offloaded (AES-GCM only)"
    return None


def _looks_like_client_hello(stream):
    return stream[:1] == b"\x16" and stream[5:6] == bytes([HS_CLIENT_HELLO])


def _plan_direction(side, records, info, keys):
    plan = DirectionPlan(side, keys=keys)
    plan.records, first = application_records(records, info, keys)
    plan.start = plan.records[0].offset if plan.records else (
        records[first - 1].end if first else 0)
    for app in plan.records:
        if app.plaintext is None:
            plan.notes.append(f"record {app.number} at offset {app.offset} not captured whole: "
                              f"TX replay stops before it")
            break
        if app.padding:
            plan.notes.append(f"record {app.number} carries {app.padding} bytes of TLS 1.3 "
                              f"padding, which kTLS never adds: TX replay stops before it")
            break
        if app.generation:
            plan.notes.append("KeyUpdate: kTLS cannot rekey, the records after it are left to "
                              "software; TX replay stops there")
            break
        plan.tx_records += 1
    return plan


def _plan_connection(conn, keylog, psk):
    plan = ConnectionPlan(conn)
    if not conn.syn_seen and _looks_like_client_hello(conn.server.stream) \
            and not _looks_like_client_hello(conn.client.stream):
        conn.swap()              # no SYN: whoever sent the ClientHello is the client
    records = {side: split_records(conn.direction(side)) for side in SIDES}
    try:
        info = plan.handshake = parse_handshake(records["client"], records["server"])
    except TlsError as error:
        plan.reason = f"not TLS: {error}"
        return plan
    plan.reason = offload_refusal(info)
    if plan.reason is not None:
        return plan
    try:
        keys = derive_keys(info, keylog, psk)
        plan.directions = {side: _plan_direction(side, records[side], info, keys[side])
                           for side in SIDES}
    except TlsError as error:
        plan.reason = f"missing keys: {error}" if "no " in str(error) else str(error)
        plan.directions = {}
        return plan
    plan.offloaded = True
    return plan


def load(capture_path, keylogs=(), psk=None, progress=None):
    """Read a capture and its key logs; return the :class:`Replay` every backend runs.

    Key logs come from the files named and from the capture's own pcapng
    Decryption Secrets Blocks. Raises :class:`ReplayError` for a capture or
    key log that cannot be read.
    """
    try:
        capture = read_capture(capture_path, progress=progress)
        keylog = Keylog()
        for path in keylogs:
            keylog.add_file(path)
        for i, text in enumerate(capture.keylogs):
            keylog.add_text(text, f"{capture_path} (decryption secrets block {i + 1})")
    except (CaptureError, KeylogError) as error:
        raise ReplayError(str(error)) from None
    psk = bytes.fromhex(psk) if isinstance(psk, str) else psk
    return Replay(capture, [_plan_connection(c, keylog, psk) for c in capture.connections])


# --- TX ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _TxDirection:
    """A direction being replayed: its socket and what it saw."""
    plan: DirectionPlan
    direction: object
    sock: KtlsSocket = None
    sent: int = 0                # highest stream offset sent so far
    last_packet: int = 0         # capture packet number of its last segment
    result: dict = dataclasses.field(default_factory=lambda: {
        "records": 0, "segments": 0, "frames": 0, "mismatches": 0, "dropped": 0,
        "clipped": 0, "split": 0, "first_mismatch": None, "mode": None, "driver": {}})


def _flow(direction, ip_version):
    (src, sport), (dst, dport) = direction.src, direction.dst
    return TcpFlow(src_addr=src, dst_addr=dst, src_port=sport, dst_port=dport,
                   ip_version=ip_version)


async def _open_tx(ktls, conn_plan, tx):
    """A kTLS socket at the direction's first application record, every record written."""
    plan, info = tx.plan, conn_plan.handshake
    direction = tx.direction
    first = plan.records[0]
    keys = plan.keys
    sock = KtlsSocket(ktls, _flow(direction, conn_plan.conn.ip_version),
                      iss=direction.seq_of(plan.start), mss=1 << 20)
    session = await sock.enable_tx(info.version, keys.aead, keys.key, keys.iv, first.number)
    tx.result["mode"] = session.mode
    for app in plan.records[:plan.tx_records]:
        if keys.explicit_nonce_len:
            # The stack that made the capture chose each TLS 1.2 nonce; the
            # framer takes the captured one so that the record is the same.
            sock.framer.nonce_counter = int.from_bytes(app.record.body[:8], "big")
        sock.write(app.plaintext, record_size=max(len(app.plaintext), 1),
                   record_type=app.inner_type)
    framed = (sock.tcp.write_seq - direction.seq_of(plan.start)) & 0xFFFF_FFFF
    if framed != plan.tx_end - plan.start:
        raise AssertionError(f"framed {framed} bytes for {plan.tx_end - plan.start} captured")
    tx.result["records"] = plan.tx_records
    tx.sock = sock


async def _send_piece(ktls, wire, tx, start, expected, packet, is_rxt, taken):
    """Send ``expected``'s span of the stream as one segment; compare what the card sent."""
    sock, result = tx.sock, tx.result
    before = {k: ktls.stats[k] for k in DRIVER_COUNTS}
    seq = tx.direction.seq_of(start)
    segs = sock.tcp.segments(seq, seq_add(seq, len(expected)), is_rxt=is_rxt)
    for seg in segs:
        # tcp_output's accounting, which the retransmit-share check reads.
        if seg.is_rxt:
            sock.tcp.t_snd_rxt_bytes += len(seg.payload)
        else:
            sock.tcp.t_sndbytes += len(seg.payload)
    await sock.send_segments(segs)
    for k in DRIVER_COUNTS:
        result["driver"][k] = result["driver"].get(k, 0) + ktls.stats[k] - before[k]
    new = ktls.completions[taken:]
    sent = [c for c in new if c.opcode is TxOpcode.PACKET]
    wire_bytes = b""
    for c in sent:
        if c.status is not TxStatus.OK:
            result["dropped"] += 1
            continue
        frame = await wire.recv(0)
        parsed = parse_segment(frame)
        result["frames"] += 1
        if parsed is not None and parsed.seq == (seq + len(wire_bytes)) & 0xFFFF_FFFF:
            wire_bytes += frame[parsed.payload_offset:parsed.payload_offset
                                + parsed.payload_length]
    if wire_bytes != expected:
        result["mismatches"] += 1
        if result["first_mismatch"] is None:
            at = next((i for i, (a, b) in enumerate(zip(wire_bytes, expected)) if a != b),
                      min(len(wire_bytes), len(expected)))
            result["first_mismatch"] = {"packet": packet, "seq": seq, "byte": at,
                                        "sent": len(wire_bytes), "captured": len(expected)}
    return len(ktls.completions)


async def replay_tx(dev, wire, replay, *, strategy="dump", progress=None):
    """Send every offloaded direction's captured segments through the driver and the card.

    Parameters
    ----------
    dev : Device
        Not opened yet (the caller closes it).
    wire : Wire
        The card's frames come out of port 0.
    replay : Replay
    strategy : {"dump", "seek"}
        How the driver repositions the card for out-of-sequence segments.
    progress : callable, optional
        ``progress(done, total)`` per segment.

    Returns
    -------
    dict
        ``{"<connection index>/<side>": result}``, JSON types: ``records``
        sent, captured ``segments`` replayed, ``frames`` seen, ``mismatches``
        (segments whose payload on the wire differs from the capture),
        ``dropped`` (frames the card refused), ``clipped`` (segments that
        also carried bytes from before the application keys), ``split``
        (segments longer than a frame), ``first_mismatch``, ``mode`` (of
        the kTLS session) and ``driver`` (its resync counts).
    """
    await dev.open(tx_log=8, rx_log=2)
    ktls = KtlsDriver(dev, strategy=strategy, ifnet_max_rexmit_pct=100)
    txs, order = {}, []
    for index, conn_plan in enumerate(replay.connections):
        if not conn_plan.offloaded:
            continue
        for side, plan in conn_plan.directions.items():
            if plan.tx_records:
                txs[(index, side)] = _TxDirection(plan, conn_plan.conn.direction(side))
        for side, seg in conn_plan.conn.order:
            tx = txs.get((index, side))
            if tx is None or not seg.payload:
                continue
            start, end = max(seg.offset, tx.plan.start), min(seg.end, tx.plan.tx_end)
            if start < end:
                order.append((seg.packet, index, side, seg, start, end))
                tx.last_packet = seg.packet
    order.sort(key=lambda item: item[0])
    taken = 0
    for done, (packet, index, side, seg, start, end) in enumerate(order, 1):
        tx = txs[(index, side)]
        if tx.sock is None:
            await _open_tx(ktls, replay.connections[index], tx)
            taken = len(ktls.completions)
        tx.result["segments"] += 1
        tx.result["clipped"] += (start, end) != (seg.offset, seg.end)
        is_rxt = end <= tx.sent
        pieces = range(start, end, MAX_PAYLOAD)
        tx.result["split"] += len(pieces) > 1
        for piece in pieces:
            expected = seg.payload[piece - seg.offset:min(end, piece + MAX_PAYLOAD) - seg.offset]
            taken = await _send_piece(ktls, wire, tx, piece, expected, packet, is_rxt, taken)
        tx.sent = max(tx.sent, end)
        if packet == tx.last_packet:
            await _close_tx(ktls, tx)
            taken = len(ktls.completions)
        if progress is not None:
            progress(done, len(order))
    counters = await dev.update_stats()
    return {"directions": {f"{i}/{side}": tx.result for (i, side), tx in txs.items()},
            "counters": {k: v for k, v in counters.items() if v and k.startswith("tx_tls")}}


async def _close_tx(ktls, tx):
    await tx.sock.close()
    await ktls.flush()


# --- RX ------------------------------------------------------------------------------------------------

#: The driver's receive counts kept per direction.
RX_COUNTS = ("rx_tls_resync_req", "rx_tls_resync_ok", "rx_tls_resync_fail",
             "rx_tls_back_in_sync", "rx_tls_decrypted_packets")


@dataclasses.dataclass
class _RxDirection:
    """A direction being received: the receiving socket and its counts."""
    plan: DirectionPlan
    conn_plan: ConnectionPlan
    sock: KtlsRxSocket
    enabled: bool = False
    frames: int = 0
    counts: dict = dataclasses.field(default_factory=dict)


def wire_frames(segment, ip_version):
    """The Ethernet frames that carried a captured segment to the receiver.

    Checksums are recomputed: captures taken where the sender's NIC fills them
    in (loopback, checksum offload) hold wrong ones, which the card would
    rightly drop. A segment longer than a frame (TSO/GRO, 64 KB loopback MTU)
    is cut into frames of at most :data:`MAX_PAYLOAD` bytes, as the wire had it.
    """
    packet = (IP if ip_version == 4 else IPv6)(segment.ip)
    payload = segment.payload
    cuts = range(0, len(payload), MAX_PAYLOAD) if payload else [0]
    for cut in cuts:
        piece = packet.copy()
        tcp = piece[TCP]
        tcp.seq = (segment.seq + cut) & 0xFFFF_FFFF
        tcp.remove_payload()
        chunk = payload[cut:cut + MAX_PAYLOAD]
        if chunk:
            tcp.add_payload(Raw(chunk))
        del tcp.chksum
        if ip_version == 4:
            del piece.chksum, piece.len
        else:
            del piece.plen
        yield bytes(Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / piece)


def _rx_socket(rx, conn, side):
    """The receiving end of ``side``'s direction, as the receiving host sees the flow."""
    sender = conn.direction(side)
    (peer, peer_port), (local, local_port) = sender.src, sender.dst
    flow = TcpFlow(src_addr=local, dst_addr=peer, src_port=local_port, dst_port=peer_port,
                   ip_version=conn.ip_version)
    return KtlsRxSocket(rx, flow, irs=sender.base_seq)


async def _maybe_enable(rxd):
    """Enable kTLS receive once the handshake has been read, as the TLS stack would:
    the bytes before the first application record are the stack's (read plain),
    whatever came after them is the kernel's (decrypted in software, if it
    arrived before the card had a context)."""
    plan, sock = rxd.plan, rxd.sock
    if rxd.enabled or not plan.records or sock.tcp.delivered < plan.start:
        return
    sock.read_plain(plan.start)
    info, keys = rxd.conn_plan.handshake, plan.keys
    await sock.enable_rx(info.version, keys.aead, keys.key, keys.iv, plan.records[0].number)
    rxd.enabled = True


def _rx_result(rxd):
    """What the receiving socket delivered against the independent decryption."""
    plan, sock = rxd.plan, rxd.sock
    # kTLS stops at a KeyUpdate (no rekey) and nothing passes a hole.
    expected = []
    for app in plan.records:
        if app.generation or app.plaintext is None:
            break
        expected.append(app)
    delivered = {r.number: r for r in sock.records}
    mismatches = sum(delivered.get(a.number) is None
                     or (delivered[a.number].type, delivered[a.number].data)
                     != (a.inner_type, a.plaintext) for a in expected)
    numbers = {a.number for a in expected}
    mismatches += sum(r.number not in numbers for r in sock.records)
    errors = [e for e in sock.events if isinstance(e, RxError)]
    keyupdate = any(a.generation for a in plan.records)
    mismatches += sum(not (keyupdate and e.reason.startswith("peer sent KeyUpdate")) for e in errors)
    digest = hashlib.sha256()
    for record in sock.records:
        if record.type == CT_APPLICATION_DATA:
            digest.update(record.data)
    return {
        "records": len(sock.records), "expected": len(expected),
        "hw_decrypted": sum(r.path == PATH_NIC for r in sock.records),
        "sw_decrypted": sum(r.path != PATH_NIC for r in sock.records),
        "resyncs": rxd.counts.get("rx_tls_resync_ok", 0),
        # Record by record, in order: "nic" (the card decrypted it whole), "sw"
        # (from ciphertext) or "recrypt" (partly decrypted, recrypted first).
        "paths": [r.path for r in sock.records],
        "mismatches": mismatches, "frames": rxd.frames, "mode": sock.mode,
        "errors": [e.reason if e.number is None else f"record {e.number}: {e.reason}"
                   for e in errors],
        "plaintext_sha256": digest.hexdigest() if rxd.enabled else None,
        "driver": rxd.counts,
    }


async def replay_rx(dev, wire, replay, *, progress=None):
    """Feed the captured frames of every offloaded connection into the card's receive side.

    Both directions of each connection are received (each by a kTLS receive
    socket of the host it went to), frames in capture order, each frame's
    completion processed before the next frame goes in (lock step: every
    backend gives the same result). kTLS receive is enabled when the
    handshake has been read, with the capture's keys and first record number;
    the card gets a context at the next record header it has not seen.

    Returns
    -------
    dict
        ``{"directions": {"<connection index>/<side>": result}, "counters": ...}``
        where a result holds ``records`` delivered, ``hw_decrypted`` (whole
        by the card), ``sw_decrypted`` (from ciphertext, or after re-encrypting
        a part the card decrypted), ``resyncs`` (candidates confirmed),
        ``mismatches`` (records missing, differing from the independent
        decryption, or failed), ``errors``, ``plaintext_sha256`` of the
        application_data delivered, ``mode`` and the driver's counts.
    """
    await dev.open(tx_log=6, rx_log=8)
    rx = KtlsRxDriver(dev)
    rxds, order = {}, []
    for index, conn_plan in enumerate(replay.connections):
        if not conn_plan.offloaded:
            continue
        conn = conn_plan.conn
        for side, plan in conn_plan.directions.items():
            rxds[(index, side)] = _RxDirection(plan, conn_plan, _rx_socket(rx, conn, side))
        order += [(seg.packet, index, side, seg) for side, seg in conn.order]
    order.sort(key=lambda item: item[0])
    for done, (_, index, side, seg) in enumerate(order, 1):
        rxd = rxds[(index, side)]
        for frame in wire_frames(seg, replay.connections[index].conn.ip_version):
            before = {k: rx.stats[k] for k in RX_COUNTS}
            await wire.send(frame, 0)
            await rx.receive(1)
            rxd.frames += 1
            await _maybe_enable(rxd)
            for k in RX_COUNTS:
                if rx.stats[k] != before[k]:
                    rxd.counts[k] = rxd.counts.get(k, 0) + rx.stats[k] - before[k]
        if progress is not None:
            progress(done, len(order))
    results = {f"{i}/{side}": _rx_result(rxd) for (i, side), rxd in rxds.items()}
    for rxd in rxds.values():
        await rxd.sock.close()
    counters = await dev.update_stats()
    return {"directions": results,
            "counters": {k: v for k, v in counters.items() if v and k.startswith("rx_tls")}}


# --- running on a backend ---------------------------------------------------------------------------

async def tls_replay_tx(dev, wire, *, capture, keylogs=(), strategy="dump"):
    """Scenario form of :func:`replay_tx` for the cocotb runner: the capture is read
    inside the simulator process. File names cross the process boundary in the
    scenario parameters (which the runner writes to disk with the results);
    a PSK only in the environment (:data:`PSK_ENV`), never in a file."""
    return await replay_tx(dev, wire, load(capture, keylogs, os.environ.get(PSK_ENV)),
                           strategy=strategy)


async def tls_replay_rx(dev, wire, *, capture, keylogs=()):
    """Scenario form of :func:`replay_rx` (see :func:`tls_replay_tx`)."""
    return await replay_rx(dev, wire, load(capture, keylogs, os.environ.get(PSK_ENV)))


SCENARIOS = {"tls_replay_tx": tls_replay_tx, "tls_replay_rx": tls_replay_rx}
#: Environment variable that hands the PSK to the simulator process.
PSK_ENV = "TLSNIC_REPLAY_PSK"
#: Receive contexts of the model card (the issue's RX card has 256).
RX_CONTEXTS = 256


async def _on_model(replay_fn, replay, nic_options, **options):
    from .model import ReferenceNic
    from tlsnic.driver.device import Device
    nic = ReferenceNic(tls=True, **nic_options)
    dev = Device(nic)
    try:
        return await replay_fn(dev, nic.wire, replay, **options)
    finally:
        await dev.close()


def run(capture_path, keylogs=(), psk=None, *, sim="model", direction="both", strategy="dump",
        waves=False, progress=None):
    """Replay a capture on ``sim``; return ``(Replay, results)``.

    ``results`` holds ``"tx"`` (:func:`replay_tx`) and ``"rx"``
    (:func:`replay_rx`) as ``direction`` asks.
    """
    replay = load(capture_path, keylogs, psk, progress=progress and progress("reading"))
    want = ("tx", "rx") if direction == "both" else (direction,)
    results = {}
    if sim == "model":
        if "tx" in want:
            results["tx"] = asyncio.run(_on_model(replay_tx, replay, {}, strategy=strategy,
                                                  progress=progress and progress("TX")))
        if "rx" in want:
            results["rx"] = asyncio.run(_on_model(replay_rx, replay, {"rx_contexts": RX_CONTEXTS},
                                                  progress=progress and progress("RX")))
        return replay, results
    from .cocotb_scenarios import run_on_gateware
    if progress is not None:
        print(f"replaying on {sim}: the card is built first when its Verilog changed "
              f"(minutes), then the simulation runs without a progress bar", file=sys.stderr)
    # Absolute: the simulator runs in a folder of its own.
    files = {"capture": str(Path(capture_path).resolve()),
             "keylogs": [str(Path(k).resolve()) for k in keylogs]}
    batch = [(what, f"tls_replay_{what}", {**files, **({"strategy": strategy} if what == "tx"
                                                       else {})}) for what in want]
    if psk is not None:
        os.environ[PSK_ENV] = psk.hex() if isinstance(psk, bytes) else psk
    try:
        # The card with the TLS receive engine when RX is replayed (its TX side is the same).
        got = run_on_gateware(batch, sim=sim, waves=waves, tag="replay",
                              rx_contexts=RX_CONTEXTS if "rx" in want else 0)
    finally:
        os.environ.pop(PSK_ENV, None)
    for what in want:
        if "error" in got[what]:
            raise RuntimeError(f"{what.upper()} replay on {sim} failed:\n{got[what]['error']}")
        results[what] = got[what]
    return replay, results


# --- the report ---------------------------------------------------------------------------------------

def report(replay, results):
    """The report in the issue's JSON shape (nothing secret in it).

    Per direction: ``mismatches`` adds the TX segments whose bytes differ from
    the capture (or that the card dropped) and the RX records delivered wrong
    or not at all; ``plaintext_sha256`` is what the RX replay delivered, or,
    with TX alone, the plaintext the TX replay sent (proven by the card's
    byte-exact output); the RX counts are 0 when RX was not replayed.
    """
    tx = results.get("tx", {}).get("directions", {})
    rx = results.get("rx", {}).get("directions", {})
    out, total = [], 0
    for index, plan in enumerate(replay.connections):
        conn, info = plan.conn, plan.handshake
        entry = {"client": Connection.endpoint(conn.client.src),
                 "server": Connection.endpoint(conn.server.src),
                 "version": info.version if info else None,
                 "suite": info.suite.name if info else None,
                 "offloaded": plan.offloaded, "reason": plan.reason, "directions": []}
        for side in SIDES:
            dplan = plan.directions.get(side)
            sent, got = tx.get(f"{index}/{side}"), rx.get(f"{index}/{side}", {})
            mismatches = (sent["mismatches"] + sent["dropped"] if sent else 0) + got.get(
                "mismatches", 0)
            tx_exact = None
            if sent is not None:
                if sent["mismatches"] or sent["dropped"]:
                    tx_exact = False
                elif dplan.tx_records == len(dplan.records):
                    tx_exact = True
            digest = got.get("plaintext_sha256")
            if digest is None and sent is not None:
                digest = dplan.plaintext_sha256()
            total += mismatches
            entry["directions"].append({
                "from": side, "records": len(dplan.records) if dplan else 0,
                "hw_decrypted": got.get("hw_decrypted", 0),
                "sw_decrypted": got.get("sw_decrypted", 0), "resyncs": got.get("resyncs", 0),
                "mismatches": mismatches, "tx_exact": tx_exact, "plaintext_sha256": digest})
        out.append(entry)
    return {"connections": out, "mismatches": total}


_PATH_WORDS = {"nic": "card", "sw": "software", "recrypt": "recrypted + software"}


def _runs(paths):
    """``["nic", "nic", "sw", "nic"]`` -> ``"0-1 card, 2 software, 3 card"`` (records
    counted from the first under application keys)."""
    out, start = [], 0
    for i in range(1, len(paths) + 1):
        if i == len(paths) or paths[i] != paths[start]:
            span = f"{start}" if i - 1 == start else f"{start}-{i - 1}"
            out.append(f"{span} {_PATH_WORDS.get(paths[start], paths[start])}")
            start = i
    return ", ".join(out)


def format_report(replay, results, rep, *, sim, seconds):
    """The readable table: a block per connection, a row per direction."""
    cap = replay.capture
    lines = [f"{cap.path}: {cap.packets} packets, {len(cap.connections)} TCP connection(s); "
             f"replayed on {sim} in {seconds:.1f} s"]
    if cap.skipped:
        lines.append("  not replayed: " + ", ".join(f"{n} {why}" for why, n in cap.skipped.items()))
    tx = results.get("tx", {}).get("directions", {})
    rx = results.get("rx", {}).get("directions", {})
    head = (f"    {'from':6} {'records':>7} {'hw dec':>6} {'sw dec':>6} {'resyncs':>7} "
            f"{'mism':>4}  {'tx exact':8} {'tx segs':>7} {'tx ooo':>6} {'re-DMA':>7}  plaintext")
    for index, (plan, entry) in enumerate(zip(replay.connections, rep["connections"])):
        what = (f"TLS {entry['version']} {entry['suite']}" if entry["version"] else "not TLS")
        state = "offloaded" if entry["offloaded"] else f"passed through: {entry['reason']}"
        lines.append(f"#{index} {entry['client']} -> {entry['server']}  {what}  {state}")
        if not entry["offloaded"]:
            continue
        lines.append(head)
        for d in entry["directions"]:
            got = tx.get(f"{index}/{d['from']}") or {}
            exact = {True: "yes", False: "NO", None: "-"}[d["tx_exact"]]
            driver = got.get("driver", {})
            lines.append(
                f"    {d['from']:6} {d['records']:>7} {d['hw_decrypted']:>6} {d['sw_decrypted']:>6} "
                f"{d['resyncs']:>7} {d['mismatches']:>4}  {exact:8} {got.get('segments', 0):>7} "
                f"{driver.get('tx_tls_ooo', 0):>6} {driver.get('redma_bytes', 0):>7}  "
                f"{(d['plaintext_sha256'] or '-')[:16]}")
            for note in plan.directions[d["from"]].notes:
                lines.append(f"      note: {note}")
            if got and got["mode"] != "ifnet":
                lines.append(f"      TX: software session ({got['mode']}): the card gave no "
                             f"transmit context")
            received = rx.get(f"{index}/{d['from']}")
            if received and received["mode"] != "ifnet":
                lines.append(f"      RX: software session ({received['mode']}): the card gave "
                             f"no receive context")
            if received and received.get("paths"):
                lines.append(f"      RX by record: {_runs(received['paths'])}")
            for error in (received or {}).get("errors", []):
                lines.append(f"      RX error: {error}")
            if got.get("first_mismatch"):
                m = got["first_mismatch"]
                lines.append(f"      first mismatch: packet {m['packet']}, seq {m['seq']}, byte "
                             f"{m['byte']} ({m['sent']} bytes sent, {m['captured']} captured)")
    lines.append(f"mismatches: {rep['mismatches']}")
    return "\n".join(lines)


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, stream=sys.stderr, width=30):
        self.stream, self.width, self.last = stream, width, 0.0

    def __call__(self, stage):
        def update(done, total):
            now = time.monotonic()
            if done < total and now - self.last < 0.1:
                return
            self.last = now
            filled = self.width * done // max(total, 1)
            self.stream.write(f"\r{stage:8} [{'#' * filled}{'.' * (self.width - filled)}] "
                              f"{done}/{total}")
            if done >= total:
                self.stream.write("\r" + " " * (self.width + 30) + "\r")
            self.stream.flush()
        return update


def run_cli(args):
    """``tlsnic replay`` (arguments from :mod:`tlsnic.cli`): exit 0 if and only if no
    mismatch, 2 when the capture or a key log cannot be read."""
    if args.psk is not None:
        try:
            bytes.fromhex(args.psk)
        except ValueError:
            print("tlsnic replay: --psk takes hex digits", file=sys.stderr)
            return 2
    progress = _Progress() if sys.stderr.isatty() else None
    t0 = time.perf_counter()
    try:
        replay, results = run(args.capture, args.keylog, args.psk, sim=args.sim,
                              direction=args.direction, strategy=args.strategy, waves=args.waves,
                              progress=progress)
    except ReplayError as error:
        print(f"tlsnic replay: {error}", file=sys.stderr)
        return 2
    rep = report(replay, results)
    text = format_report(replay, results, rep, sim=args.sim, seconds=time.perf_counter() - t0)
    if args.json == "-":
        print(json.dumps(rep, indent=2))
    else:
        print(text)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rep, f, indent=2)
                f.write("\n")
    return 1 if rep["mismatches"] else 0
