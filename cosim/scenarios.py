"""Backend-agnostic scenarios of the plain packet path.

Each scenario is ``async def name(dev, wire, **params) -> dict``: ``dev`` is a
:class:`~tlsnic.driver.device.Device` not yet opened (the scenario opens it
with the ring sizes it needs), ``wire`` a :class:`~tlsnic.cosim.wire_api.Wire`.
The returned *observation* holds only what must be identical on every
backend, as JSON types (bytes as hex strings):

``sent``
    what the scenario offered (TX: frame hex and flags; RX: frame hex), for
    the oracles.
``wire``
    frames the card transmitted, per port (``{"0": [hex, ...]}``).
``tx_completions`` / ``rx``
    :meth:`TxCompletionRecord.to_dict` / :meth:`RxFrame.to_dict` lists, raw
    entries included.
``counters``
    the driver's 64-bit totals at the end.

Nothing that depends on timing (interrupt counts, when a completion landed)
is observed, so the model and the gateware must agree byte for byte:
``run_on_model(name) == <same scenario under cocotb>``.

To run one on a new backend: build a ``Bus`` and a ``Wire`` for it and call
``await run(name, bus, wire, **params)``.
"""

import asyncio
import random

from tlsnic.abi import (MAX_FRAME, DESC_BYTES, QUEUE_ENABLE, Queue, QueueReg, Reg,
                        TxDescriptor, TxOpcode, TxStatus, pack)
from tlsnic.driver.device import Device

from . import traffic

__all__ = ["SCENARIOS", "run", "run_scenario", "run_on_model", "GUARD_BYTE", "BAD_DMA_ADDRESSES"]

#: Fill pattern put after (and before) buffers to catch stray DMA writes.
GUARD_BYTE = 0xA5
GUARD_BYTES = 64
#: DMA addresses no backend maps: below the host-memory pool and far above it.
BAD_DMA_ADDRESSES = (0x0, 0xDEAD_0000_0000)


# --- helpers -------------------------------------------------------------------------

async def _collect_wire(wire, completions, port=0):
    """Take from ``port`` exactly the frames the completions say were sent.

    Every scenario transmits on one port so far; completions do not carry the
    port, so a multi-port scenario will pass the per-port split itself.
    """
    count = sum(c["status"] == TxStatus.OK.name and c["opcode"] == TxOpcode.PACKET.name
                for c in completions)
    return {str(port): [(await wire.recv(port)).hex() for _ in range(count)]}


def _off_the_end(bus):
    """``(region, addr)``: ``addr`` is 36 bytes before the end of a mapped region
    followed by unmapped bytes, so a 100-byte access there fails part way.

    HostMemory maps ``alloc(257)`` as 320 bytes (a multiple of 64) inside its
    own 512-byte buddy block, so bytes 320..511 are never mapped.
    """
    region = bus.alloc(257)
    return region, region + 320 - 36


async def _finish(dev, obs):
    obs["counters"] = await dev.update_stats()
    return obs


async def _send_all(dev, frames, **flags):
    """Send every frame and flush; return the sent list and completion dicts."""
    sent = []
    for frame in frames:
        await dev.send(frame, **flags)
        sent.append({"data": frame.hex(), **flags})
    return sent, [c.to_dict() for c in await dev.flush_tx()]


OFFLOAD_MODES = {
    "none": dict(csum_ip=False, csum_l4=False),
    "ip": dict(csum_ip=True, csum_l4=False),
    "l4": dict(csum_ip=False, csum_l4=True),
    "both": dict(csum_ip=True, csum_l4=True),
}


# --- TX ------------------------------------------------------------------------------

async def tx_sizes(dev, wire, *, sizes=traffic.SIZES, seed=1, tx_log=5):
    """Well-formed frames of every size (IPv4/IPv6, TCP/UDP, +-VLAN), no offload.

    The wire must carry every frame exactly as written.
    """
    await dev.open(tx_log=tx_log, rx_log=2)
    cases = traffic.size_sweep(sizes, seed)
    sent, completions = await _send_all(dev, [c.data for c in cases])
    for entry, case in zip(sent, cases):
        entry["name"] = case.name
    obs = {"sent": sent, "tx_completions": completions}
    obs["wire"] = await _collect_wire(wire, completions)
    return await _finish(dev, obs)


async def tx_offload(dev, wire, *, seed=3, modes=tuple(OFFLOAD_MODES), tx_log=6):
    """Checksum offload over every traffic case (sizes, VLAN, IPv6, fragments,
    extension headers, cut headers, UDP zero checksum), in every flag mode, with
    the checksum fields garbled by the host beforehand."""
    await dev.open(tx_log=tx_log, rx_log=2)
    sent = []
    for case in traffic.tx_offload_cases(seed):
        for mode in modes:
            await dev.send(case.data, **OFFLOAD_MODES[mode])
            sent.append({"name": case.name, "data": case.data.hex(), "mode": mode,
                         "tx_ip": case.tx_ip, "tx_l4": case.tx_l4, **OFFLOAD_MODES[mode]})
    completions = [c.to_dict() for c in await dev.flush_tx()]
    obs = {"sent": sent, "tx_completions": completions}
    obs["wire"] = await _collect_wire(wire, completions)
    return await _finish(dev, obs)


async def tx_unaligned(dev, wire, *, offsets=(0, 1, 2, 3, 5, 7, 8, 13, 31, 63),
                       sizes=(60, 61, 127, 1514), seed=4):
    """TX buffers at every byte alignment (descriptors posted raw)."""
    await dev.open(tx_log=4, rx_log=2)
    rng = random.Random(seed)
    sent, buffers = [], []
    for offset in offsets:
        for size in sizes:
            frame = traffic.build("ipv4", "udp", size, None, rng)
            base = dev.bus.alloc(offset + size)
            buffers.append(base)
            await dev.bus.mem_write(base + offset, frame)
            await dev.post_tx_raw(opcode=TxOpcode.PACKET, flags=3, length=size, port=0,
                                  addr=base + offset, tag=offset)
            sent.append({"data": frame.hex(), "offset": offset, "csum_ip": True, "csum_l4": True})
    completions = [c.to_dict() for c in await dev.flush_tx()]
    for base in buffers:
        dev.bus.free(base)
    obs = {"sent": sent, "tx_completions": completions}
    obs["wire"] = await _collect_wire(wire, completions)
    return await _finish(dev, obs)


async def tx_ring_full(dev, wire, *, tx_log=3, txcq_log=None, passes=4, extra=3, seed=5):
    """More frames than TXQ entries before the first flush: ``send`` has to wait
    by reaping completions. With ``txcq_log < tx_log`` the card also stalls on
    a full TX completion ring."""
    await dev.open(tx_log=tx_log, txcq_log=txcq_log, rx_log=2)
    rng = random.Random(seed)
    count = passes * (1 << tx_log) + extra
    frames = [traffic.build("ipv4", "tcp", rng.randrange(60, 300), None, rng) for _ in range(count)]
    indices = []
    for frame in frames:
        indices.append(await dev.send(frame, csum_ip=True, csum_l4=True))
    completions = [c.to_dict() for c in await dev.flush_tx()]
    obs = {"sent": [{"data": f.hex(), "csum_ip": True, "csum_l4": True} for f in frames],
           "indices": indices, "tx_completions": completions}
    obs["wire"] = await _collect_wire(wire, completions)
    return await _finish(dev, obs)


async def tx_bad_descriptors(dev, wire, *, tag=0x1234):
    """Zero and oversize lengths, unknown opcodes, a missing port, unreachable
    buffers (TX DMA errors) and NOPs, each between good frames: every descriptor
    completes, in order, and only the good frames reach the wire."""
    await dev.open(tx_log=4, rx_log=2)
    rng = random.Random(6)
    good = dev.bus.alloc(MAX_FRAME)
    frame = traffic.build("ipv4", "udp", 100, None, rng)
    await dev.bus.mem_write(good, frame)
    short, off_the_end = _off_the_end(dev.bus)
    ports = dev.caps.ports
    packet = dict(opcode=TxOpcode.PACKET, flags=0, tag=0, port=0)
    bad = [
        ("zero-length", dict(packet, length=0, addr=good)),
        ("max-frame", dict(packet, length=MAX_FRAME, addr=good)),
        ("oversize", dict(packet, length=MAX_FRAME + 1, addr=good)),
        ("length-ffff", dict(packet, length=0xFFFF, addr=good)),
        ("opcode-0f", dict(packet, opcode=0x0F, length=100, addr=good)),
        ("opcode-7f", dict(packet, opcode=0x7F, length=100, addr=good)),
        ("opcode-ff", dict(packet, opcode=0xFF, length=0, addr=0)),
        ("bad-port", dict(packet, port=ports, length=100, addr=good)),
        ("bad-port-ff", dict(packet, port=0xFF, length=100, addr=good)),
        ("zero-length-bad-port", dict(packet, port=0xFF, length=0, addr=good)),
        ("bad-port-bad-addr", dict(packet, port=0xFF, length=100, addr=BAD_DMA_ADDRESSES[1])),
        ("dma-addr-0", dict(packet, length=100, addr=BAD_DMA_ADDRESSES[0])),
        ("dma-addr-far", dict(packet, length=100, addr=BAD_DMA_ADDRESSES[1])),
        ("dma-runs-off-region", dict(packet, length=100, addr=off_the_end)),
        ("nop", dict(opcode=TxOpcode.NOP, tag=tag, length=100, addr=BAD_DMA_ADDRESSES[1])),
        ("nop-flags", dict(opcode=TxOpcode.NOP, tag=tag, flags=0xFF, port=0xFF)),
        ("reserved-flags", dict(packet, flags=0xFC, length=100, addr=good)),
        # A tag on a card without TLS contexts is out of range: never sent clear.
        ("tagged-no-tls", dict(packet, tag=tag, length=100, addr=good)),
        ("tagged-bad-addr", dict(packet, tag=tag, length=100, addr=BAD_DMA_ADDRESSES[1])),
    ]
    sent = []
    for name, fields in bad:
        await dev.post_tx_raw(**dict(packet, length=len(frame), addr=good))
        sent.append({"name": "good", "data": frame.hex()})
        await dev.post_tx_raw(**fields)
        sent.append({"name": name, "fields": {k: int(getattr(v, "value", v)) for k, v in fields.items()}})
    completions = [c.to_dict() for c in await dev.flush_tx()]
    obs = {"sent": sent, "tx_completions": completions}
    obs["wire"] = await _collect_wire(wire, completions)
    dev.bus.free(good)
    dev.bus.free(short)
    return await _finish(dev, obs)


# --- RX ------------------------------------------------------------------------------

async def _receive_all(dev, wire, frames, port=0):
    for frame in frames:
        await wire.send(frame, port)
    return [(await dev.recv()).to_dict() for _ in frames]


async def rx_checksums(dev, wire, *, seed=2, sizes=traffic.SIZES):
    """Every RX parsing/checksum case (good, bad IPv4/TCP/UDP checksums, UDP
    zero checksum over v4/v6, fragments, extension headers, cut headers, VLAN,
    non-IP) plus the size sweep."""
    await dev.open(tx_log=2, rx_log=5)
    cases = traffic.rx_cases(seed) + traffic.size_sweep(sizes, seed)
    rx = await _receive_all(dev, wire, [c.data for c in cases])
    obs = {"sent": [{"name": c.name, "data": c.data.hex(),
                     "expect": [c.l3_proto, c.l4_proto, c.ip_csum, c.l4_csum]} for c in cases],
           "rx": rx}
    return await _finish(dev, obs)


async def rx_truncation(dev, wire, *, frame_sizes=(60, 61, 64, 100, 1514, 9014),
                        buffer_sizes=(0, 1, 59, 60, 63, 64, 65, 256, 1514, 9216),
                        offsets=(0, 3), seed=7):
    """Frames into buffers smaller, equal and larger, at odd addresses, with
    guard bytes on both sides: the card writes ``min(frame, buffer)`` bytes and
    not one more."""
    await dev.open(tx_log=2, rx_log=4, rx_fill=0)
    rng = random.Random(seed)
    sent, rx, buffers = [], [], []
    for frame_size in frame_sizes:
        frame = traffic.build("ipv4", "tcp", frame_size, None, rng)
        for buffer_size in buffer_sizes:
            for offset in offsets:
                span = GUARD_BYTES + offset + buffer_size + GUARD_BYTES
                region = dev.bus.alloc(span)
                await dev.bus.mem_write(region, bytes([GUARD_BYTE]) * span)
                await dev.post_rx_raw(region + GUARD_BYTES + offset, buffer_size)
                await wire.send(frame)
                record = (await dev.recv()).to_dict()
                after = await dev.bus.mem_read(region, span)
                dev.bus.free(region)
                start = GUARD_BYTES + offset
                record["buffer"] = after[start:start + buffer_size].hex()
                record["guard_before"] = after[:start].hex()
                record["guard_after"] = after[start + buffer_size:].hex()
                rx.append(record)
                sent.append({"data": frame.hex(), "buffer_size": buffer_size, "offset": offset})
    return await _finish(dev, {"sent": sent, "rx": rx})


async def rx_oversize(dev, wire, *, frame_sizes=(9216, 9217, 9300, 12000), seed=14):
    """Giant frames (above MAX_FRAME) are cut at MAX_FRAME on entry: delivered
    TRUNCATED with their wire length, MAX_FRAME bytes written into a large
    buffer and not one byte past them, and the card keeps receiving."""
    await dev.open(tx_log=2, rx_log=3, rx_fill=0)
    rng = random.Random(seed)
    sent, rx = [], []
    for frame_size in frame_sizes:
        frame = traffic.build("ipv4", "tcp", frame_size, None, rng)
        span = GUARD_BYTES + 16384 + GUARD_BYTES
        region = dev.bus.alloc(span)
        await dev.bus.mem_write(region, bytes([GUARD_BYTE]) * span)
        await dev.post_rx_raw(region + GUARD_BYTES, 16384)
        await wire.send(frame)
        record = (await dev.recv()).to_dict()
        after = await dev.bus.mem_read(region, span)
        dev.bus.free(region)
        record["buffer"] = after[GUARD_BYTES:GUARD_BYTES + 16384].hex()
        record["guard_after"] = after[GUARD_BYTES + 16384:].hex()
        rx.append(record)
        sent.append({"data": frame.hex(), "buffer_size": 16384})
    # A normal frame after the giants still arrives whole.
    frame = traffic.build("ipv4", "udp", 1000, None, rng)
    await dev.post_rx_raw(dev.bus.alloc(2048), 2048)
    await wire.send(frame)
    rx.append((await dev.recv()).to_dict())
    sent.append({"data": frame.hex(), "buffer_size": 2048})
    return await _finish(dev, {"sent": sent, "rx": rx})


async def rx_dma_error(dev, wire, *, seed=8):
    """RX buffers outside host memory (and one running off its region) between
    good ones: DMA_ERROR completions, and the ring keeps going."""
    await dev.open(tx_log=2, rx_log=3, rx_fill=0)
    rng = random.Random(seed)
    frames = [traffic.build("ipv4", "udp", 200, None, rng) for _ in range(6)]
    good = dev.bus.alloc(2048)
    short, off_the_end = _off_the_end(dev.bus)
    buffers = [(good, 2048), (BAD_DMA_ADDRESSES[0], 2048), (good, 2048),
               (BAD_DMA_ADDRESSES[1], 2048), (off_the_end, 2048), (good, 2048)]
    rx = []
    for frame, (addr, length) in zip(frames, buffers):
        await dev.post_rx_raw(addr, length)
        await wire.send(frame)
        rx.append((await dev.recv()).to_dict())
    dev.bus.free(good)
    dev.bus.free(short)
    return await _finish(dev, {"sent": [{"data": f.hex()} for f in frames], "rx": rx})


async def rx_backpressure(dev, wire, *, count=20, rx_log=4, rxcq_log=2, seed=9):
    """Frames arrive while the RXQ is empty, then while the RXCQ (smaller than
    the RXQ) is full: they wait, none is lost, order is kept."""
    await dev.open(tx_log=2, rx_log=rx_log, rxcq_log=rxcq_log, rx_fill=0)
    rng = random.Random(seed)
    frames = [traffic.build("ipv6", "udp", rng.randrange(80, 600), None, rng) for _ in range(count)]
    for frame in frames:
        await wire.send(frame)
    early = await dev.poll_rx()          # no buffer posted: nothing may have arrived
    await dev.set_rx_fill(1 << rx_log)
    rx = [(await dev.recv()).to_dict() for _ in frames]
    obs = {"sent": [{"data": f.hex()} for f in frames], "early": len(early), "rx": rx}
    return await _finish(dev, obs)


# --- both directions -----------------------------------------------------------------

async def loopback(dev, wire, *, count=40, tx_log=2, rx_log=2, burst=None, use_irq=True,
                   offload=True, start_index=0, seed=10, rx_buf_size=MAX_FRAME):
    """Frames sent, taken off the wire, fed back in and received, in bursts.

    With small rings and ``count`` several times the ring size this is the ring
    wrap test: indices, slots and phase bits go round both rings many times;
    ``start_index`` near 2**16 adds the wrap of the 16-bit indices. Frames are
    at most 1,518 bytes, so ``rx_buf_size`` down to that is enough (the board
    top's host memory is small).
    """
    await dev.open(tx_log=tx_log, rx_log=rx_log, use_irq=use_irq, start_index=start_index,
                   rx_buf_size=rx_buf_size)
    rng = random.Random(seed)
    burst = burst or (1 << min(tx_log, rx_log))
    sent, completions, wire_frames, rx = [], [], [], []
    flags = OFFLOAD_MODES["both" if offload else "none"]
    for start in range(0, count, burst):
        chunk = []
        for _ in range(min(burst, count - start)):
            l3 = rng.choice(("ipv4", "ipv6"))
            frame = traffic.garble_checksums(
                traffic.build(l3, rng.choice(("tcp", "udp")), rng.randrange(60, 1500),
                              rng.choice((None, 42)), rng), rng)
            await dev.send(frame, **flags)
            sent.append({"data": frame.hex(), **flags})
            chunk.append(frame)
        done = [c.to_dict() for c in await dev.flush_tx()]
        completions += done
        out = (await _collect_wire(wire, done)).get("0", [])
        wire_frames += out
        rx += await _receive_all(dev, wire, [bytes.fromhex(f) for f in out])
    obs = {"sent": sent, "tx_completions": completions, "wire": {"0": wire_frames}, "rx": rx}
    return await _finish(dev, obs)


async def two_ports(dev, wire, *, count=24, seed=16):
    """Two network ports: TX descriptors name the port a frame leaves on, RX
    completions name the port a frame came in on; frames of both ports
    interleave on the queues and are neither lost nor mixed up. Needs a card
    with two ports."""
    await dev.open(tx_log=3, rx_log=3)
    if dev.caps.ports < 2:
        raise ValueError(f"two_ports needs a card with 2 ports, this one has {dev.caps.ports}")
    rng = random.Random(seed)
    sent, by_port = [], {0: [], 1: []}
    for i in range(count):
        port = rng.randrange(2)
        frame = traffic.build(rng.choice(("ipv4", "ipv6")), "udp", rng.randrange(60, 600), None, rng)
        await dev.send(frame, port=port, csum_l4=True)
        sent.append({"data": frame.hex(), "port": port})
        by_port[port].append(i)
    completions = [c.to_dict() for c in await dev.flush_tx()]
    wire_out = {str(p): [(await wire.recv(p)).hex() for _ in by_port[p]] for p in (0, 1)}
    # Feed every frame back in on the other port, alternating.
    for p in (0, 1):
        for frame in wire_out[str(p)]:
            await wire.send(bytes.fromhex(frame), port=1 - p)
    # Which port wins when both have a frame waiting is timing (the card takes
    # turns); the order within a port, and every byte, is not. So the
    # observation is per ingress port, without the RXQ index of each frame.
    rx = {"0": [], "1": []}
    for _ in range(count):
        record = (await dev.recv()).to_dict()
        for timing_dependent in ("index", "raw"):
            record.pop(timing_dependent)
        rx[str(record["port"])].append(record)
    obs = {"sent": sent, "tx_completions": completions, "wire": wire_out, "rx_by_port": rx}
    return await _finish(dev, obs)


async def ring_wrap(dev, wire, *, log=2, passes=6, use_irq=True, start_index=0xFFF6):
    """:func:`loopback` with rings of ``2**log`` entries, ``passes`` times round,
    starting just below the 16-bit index wrap."""
    return await loopback(dev, wire, count=passes * (1 << log) + 1, tx_log=log, rx_log=log,
                          use_irq=use_irq, start_index=start_index, seed=11)


async def many_in_flight(dev, wire, *, count=200, log=8, seed=12):
    """``count`` TX descriptors posted before the first reap, and ``count``
    frames on the wire before the first ``recv``."""
    await dev.open(tx_log=log, rx_log=log, rx_buf_size=2048)
    rng = random.Random(seed)
    frames = [traffic.build(rng.choice(("ipv4", "ipv6")), rng.choice(("tcp", "udp")),
                            rng.randrange(60, 2000), None, rng) for _ in range(count)]
    sent, completions = await _send_all(dev, frames, csum_ip=True, csum_l4=True)
    wire_frames = await _collect_wire(wire, completions)
    incoming = [bytes.fromhex(f) for f in wire_frames.get("0", [])]
    for frame in incoming:
        await wire.send(frame)
    rx = [(await dev.recv()).to_dict() for _ in incoming]
    obs = {"sent": sent, "tx_completions": completions, "wire": wire_frames, "rx": rx}
    return await _finish(dev, obs)


async def jumbo(dev, wire, *, seed=13):
    """9014-byte frames (and the 9216-byte maximum) out with offload and back in."""
    await dev.open(tx_log=2, rx_log=2)
    rng = random.Random(seed)
    frames = [traffic.garble_checksums(traffic.build(l3, l4, traffic.JUMBO, vlan, rng), rng)
              for l3 in ("ipv4", "ipv6") for l4 in ("tcp", "udp") for vlan in (None, 9)]
    frames.append(traffic.build("ipv4", "udp", MAX_FRAME, None, rng))
    sent, completions = await _send_all(dev, frames, csum_ip=True, csum_l4=True)
    wire_frames = await _collect_wire(wire, completions)
    rx = await _receive_all(dev, wire, [bytes.fromhex(f) for f in wire_frames["0"]])
    obs = {"sent": sent, "tx_completions": completions, "wire": wire_frames, "rx": rx}
    return await _finish(dev, obs)


async def bring_up(dev, wire):
    """Identity, capabilities (datapath widths excepted: they are a build choice)."""
    await dev.open(tx_log=2, rx_log=2)
    caps = dict(vars(dev.caps))
    caps.pop("stream_bytes")
    caps.pop("dma_bytes")
    return await _finish(dev, {"caps": caps})


async def _poll(bus, addr, want, budget=2000):
    """Read register ``addr`` until it equals ``want`` (bounded; the model is instant)."""
    for _ in range(budget):
        value = await bus.read32(addr)
        if value == want:
            return value
    raise TimeoutError(f"register {addr:#x} reads {value:#x}, waited for {want:#x}")


async def ring_dma_error(dev, wire, *, seed=15):
    """Rings outside host memory: a TXQ or RXQ entry that cannot be read still
    completes (DMA_ERROR, nothing of it trusted; the RX frame is discarded), and
    a completion that cannot be written is lost but flagged in ERROR_STATUS."""
    await dev.open(tx_log=2, rx_log=2, rx_fill=0, use_irq=False)
    bus, bad = dev.bus, BAD_DMA_ADDRESSES[1]
    rng = random.Random(seed)
    obs = {}

    async def rebase(queue, log, base):
        await bus.write32(queue + QueueReg.CTRL, log)
        await bus.write32(queue + QueueReg.BASE_LO, base & 0xFFFF_FFFF)
        await bus.write32(queue + QueueReg.BASE_HI, base >> 32)
        await bus.write32(queue + QueueReg.CTRL, QUEUE_ENABLE | log)

    # A TX descriptor that cannot be read.
    await rebase(Queue.TXQ, dev.txq.log_size, bad)
    await bus.write32(Queue.TXQ + QueueReg.PROD, 1)
    await _poll(bus, Queue.TXCQ + QueueReg.PROD, 1)
    obs["tx_completion"] = (await bus.mem_read(dev.txcq.slot_addr(0), DESC_BYTES)).hex()

    # An RX buffer entry that cannot be read: the frame is reported and dropped.
    frame = traffic.build("ipv4", "udp", 200, None, rng)
    await rebase(Queue.RXQ, dev.rxq.log_size, bad)
    await bus.write32(Queue.RXQ + QueueReg.PROD, 1)
    await wire.send(frame)
    await _poll(bus, Queue.RXCQ + QueueReg.PROD, 1)
    obs["rx_completion"] = (await bus.mem_read(dev.rxcq.slot_addr(0), DESC_BYTES)).hex()

    # A completion that cannot be written: TXCQ moved away, a NOP posted from
    # a good TXQ.
    await rebase(Queue.TXQ, dev.txq.log_size, dev.txq.base)
    await bus.write32(Queue.TXCQ + QueueReg.CONS, 1)
    await rebase(Queue.TXCQ, dev.txcq.log_size, bad)
    await bus.mem_write(dev.txq.slot_addr(1), pack(TxDescriptor, opcode=TxOpcode.NOP, tag=7))
    await bus.write32(Queue.TXQ + QueueReg.PROD, 2)
    await _poll(bus, Queue.TXCQ + QueueReg.PROD, 2)
    obs["error_status"] = await bus.read32(Reg.ERROR_STATUS)
    await bus.write32(Reg.ERROR_STATUS, obs["error_status"])
    obs["error_status_cleared"] = await bus.read32(Reg.ERROR_STATUS)
    obs["counters"] = await dev.update_stats()
    await rebase(Queue.TXCQ, dev.txcq.log_size, dev.txcq.base)
    return obs


SCENARIOS = {fn.__name__: fn for fn in (
    bring_up, tx_sizes, tx_offload, tx_unaligned, tx_ring_full, tx_bad_descriptors,
    rx_checksums, rx_truncation, rx_oversize, rx_dma_error, rx_backpressure,
    loopback, ring_wrap, many_in_flight, jumbo, ring_dma_error,
)}
#: Scenarios that need a card with more than one port, and how many.
MULTI_PORT = {"two_ports": 2}
for _fn in (two_ports,):
    SCENARIOS[_fn.__name__] = _fn


async def run_scenario(scenario, bus, wire, **params):
    """Run the scenario function ``scenario`` on a backend; return its
    observation (device closed after), labelled with its name and parameters."""
    dev = Device(bus)
    try:
        obs = await scenario(dev, wire, **params)
    finally:
        await dev.close()
    return {"scenario": scenario.__name__,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
            **obs}


async def run(name, bus, wire, **params):
    """Run scenario ``name`` on a backend; return its observation (device closed after)."""
    return await run_scenario(SCENARIOS[name], bus, wire, **params)


def run_on_model(name, *, ports=None, **params):
    """Run scenario ``name`` on a fresh reference model with ``ports`` network
    ports (default: what the scenario needs) (synchronously). The model is
    configured as the gateware's default build (TLS transmit, 256 contexts)."""
    from .model import ReferenceNic
    nic = ReferenceNic(ports=ports or MULTI_PORT.get(name, 1), tls=True)
    return asyncio.run(run(name, nic, nic.wire, **params))
