"""Card-level scenarios of inline TLS receive, without the kTLS receive driver.

Same shape as :mod:`.scenarios` (``async def name(dev, wire, **params) ->
dict``), written against the bare :class:`~tlsnic.driver.device.Device`: the
scenario posts RX_SET_STATIC / RX_RESYNC / RX_FREE itself, puts TCP segments
of TLS records sealed with ``cryptography`` on the wire and reads every RX
completion. It answers each resync candidate as a driver with a perfect
record-start table would: CONFIRM with the record's number when the candidate
is a record start, REJECT otherwise. These exercise the card's receive engine
through the whole RX path (parser, checksums, packet FIFO, buffer DMA,
completion) so that the gateware can be compared with the model byte for
byte before, and besides, the driver's scenarios (``scenarios_tls_rx``).

Timing never matters: every control descriptor is waited for (``flush_tx``)
and every frame is received before the next is sent, so the model's
interleaving of TX and RX work and the gateware's agree.
"""

import asyncio
import random

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

from tlsnic.abi import (MAX_FRAME, TlsCipher, TlsRxResyncFlags, TlsRxResyncParams,
                        TlsStaticParams, TlsVersion, TxOpcode, pack)

from . import traffic
from .model_tls_tx import tls_aad, tls_nonce
from .scenarios import run_scenario

__all__ = ["SCENARIOS", "RX_CONTEXTS", "run", "run_on_model", "seal"]

#: Receive contexts of the card these scenarios run on.
RX_CONTEXTS = 256
ISN = 0xFFFF_F000           # streams cross the 2**32 wrap early
PEER_PORT, HOST_PORT = 443, 40000


def seal(version, number, content, key, iv, inner_type=23, padding=0):
    """One TLS 1.2/1.3 AES-GCM record as it travels: header, [nonce], ciphertext, tag."""
    if version is TlsVersion.TLS_1_3:
        plaintext = content + bytes([inner_type]) + bytes(padding)
        header = bytes([23, 3, 3]) + (len(plaintext) + 16).to_bytes(2, "big")
        explicit = b""
    else:
        plaintext = content
        header = bytes([inner_type, 3, 3]) + (8 + len(plaintext) + 16).to_bytes(2, "big")
        explicit = number.to_bytes(8, "big")
    sealed = AESGCM(key).encrypt(tls_nonce(version, iv, number, explicit), plaintext,
                                 tls_aad(version, number, header))
    return header + explicit + sealed


class Flow:
    """One receive flow: its session, its record stream and how to frame it."""

    def __init__(self, index, version, cipher, sizes, *, v6=False, vlan=None, number=0,
                 mss=1448, port=0):
        self.index = index
        self.version = TlsVersion.TLS_1_3 if version == "1.3" else TlsVersion.TLS_1_2
        self.cipher = TlsCipher.AES_256_GCM if cipher == "AES-256-GCM" else TlsCipher.AES_128_GCM
        klen = 32 if self.cipher is TlsCipher.AES_256_GCM else 16
        self.key = bytes((7 * index + 3 * i) & 0xFF for i in range(klen))
        self.iv = bytes((11 * index + 5 * i + 1) & 0xFF for i in range(12))
        self.v6, self.vlan, self.port, self.mss = v6, vlan, port, mss
        self.sport = 20000 + index
        self.number = number
        self.data, self.starts = b"", []
        for i, size in enumerate(sizes):
            self.starts.append(len(self.data))
            content = bytes((index + 13 * j + i) & 0xFF for j in range(size))
            inner = (22, 21, 23)[i % 3] if i % 5 == 4 else 23      # handshake, alert records too
            self.data += seal(self.version, number + i, content, self.key, self.iv,
                              inner_type=inner, padding=(0, 0, 3, 40)[i % 4])

    def static(self, seq_offset=0, number=None, raw_cipher=None, raw_version=None):
        src = (bytes.fromhex("fd00" + "00" * 13 + "02") if self.v6 else bytes([10, 0, 0, 2]))
        dst = (bytes.fromhex("fd00" + "00" * 13 + "01") if self.v6 else bytes([10, 0, 0, 1]))
        return pack(TlsStaticParams,
                    cipher=self.cipher if raw_cipher is None else raw_cipher,
                    version=self.version if raw_version is None else raw_version,
                    port=self.port, tcp_seq=(ISN + seq_offset) & 0xFFFF_FFFF,
                    record_number=self.number if number is None else number,
                    salt_iv=int.from_bytes(self.iv, "little"),
                    key=int.from_bytes(self.key.ljust(32, b"\0"), "little"),
                    src_port=self.sport, dst_port=HOST_PORT, ip_version=6 if self.v6 else 4,
                    src_addr=int.from_bytes(src, "little"), dst_addr=int.from_bytes(dst, "little"))

    def frame(self, offset, payload):
        l2 = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
        if self.vlan is not None:
            l2 = l2 / Dot1Q(vlan=self.vlan)
        l3 = IPv6(src="fd00::2", dst="fd00::1") if self.v6 else IP(src="10.0.0.2", dst="10.0.0.1")
        tcp = TCP(sport=self.sport, dport=HOST_PORT, seq=(ISN + offset) & 0xFFFF_FFFF, flags="PA")
        return bytes(l2 / l3 / tcp / payload)

    def segments(self):
        return [(i, self.data[i:i + self.mss]) for i in range(0, len(self.data), self.mss)]

    def record_at(self, offset):
        """The number of the record starting at stream ``offset``, or None."""
        return self.number + self.starts.index(offset) if offset in self.starts else None


class _Run:
    """A scenario's device and what it observes."""

    def __init__(self, dev, wire, *, own_buffers=False):
        self.dev, self.wire = dev, wire
        self.own_buffers = own_buffers      # the device posts none: receive() posts one a frame
        self.obs = {"tx_completions": [], "rx": []}

    async def control(self, opcode, tag, block=b""):
        await self.dev.send_ctrl(opcode, tag, block)
        done = await self.dev.flush_tx()
        self.obs["tx_completions"] += [c.to_dict() for c in done]
        return done[-1].status

    async def receive(self, flow, offset, payload, *, mangle=None, tag=None, buffer=MAX_FRAME):
        """Put a segment on the wire, read its completion, answer a candidate."""
        raw = flow.frame(offset, payload)
        if mangle is not None:
            raw = mangle(raw)
        if self.own_buffers:
            addr = self.dev.bus.alloc(buffer)
            await self.dev.post_rx_raw(addr, buffer)
        await self.wire.send(raw, flow.port)
        rx = await self.dev.recv()
        if self.own_buffers:
            self.dev.bus.free(addr)
        self.obs["rx"].append(rx.to_dict())
        if rx.resync_offset is not None and tag is not None:
            candidate = offset + rx.resync_offset
            number = flow.record_at(candidate)
            flags = TlsRxResyncFlags.CONFIRM if number is not None else 0
            await self.control(TxOpcode.RX_RESYNC, tag, pack(
                TlsRxResyncParams, candidate_seq=(ISN + candidate) & 0xFFFF_FFFF, flags=flags,
                record_number=number or 0))
        return rx

    async def finish(self):
        self.obs["counters"] = await self.dev.update_stats()
        return self.obs


# --- scenarios -----------------------------------------------------------------------

async def tls_rx_card_stream(dev, wire, *, version="1.3", cipher="AES-128-GCM", mss=1448,
                             sizes=(0, 1, 15, 16, 17, 1447, 1448, 16384, 5), v6=False, vlan=None,
                             open_args=None):
    """In-order records of every size (one of 16 KB) across the seq wrap: all
    decrypted. ``open_args`` replace the ring sizes (:meth:`Device.open`
    arguments), for a card with little host memory (the board top)."""
    await dev.open(**(open_args or {"tx_log": 3, "rx_log": 5}))
    run = _Run(dev, wire)
    flow = Flow(0, version, cipher, sizes, v6=v6, vlan=vlan, number=5, mss=mss)
    await run.control(TxOpcode.RX_SET_STATIC, 1, flow.static())
    for offset, chunk in flow.segments():
        await run.receive(flow, offset, chunk, tag=1)
    await run.control(TxOpcode.RX_FREE, 1)
    return await run.finish()


async def tls_rx_card_matrix(dev, wire):
    """Version x cipher x (IPv4, IPv6, VLAN) x MSS, small records."""
    await dev.open(tx_log=3, rx_log=5)
    run = _Run(dev, wire)
    index = 0
    for version in ("1.2", "1.3"):
        for cipher in ("AES-128-GCM", "AES-256-GCM"):
            for v6, vlan, mss in ((False, None, 536), (True, None, 1448), (False, 7, 8948)):
                flow = Flow(index, version, cipher, (0, 1, 16, 100, 1447, 1448, 3000),
                            v6=v6, vlan=vlan, mss=mss, number=index)
                tag = index + 1
                await run.control(TxOpcode.RX_SET_STATIC, tag, flow.static())
                for offset, chunk in flow.segments():
                    await run.receive(flow, offset, chunk, tag=tag)
                await run.control(TxOpcode.RX_FREE, tag)
                index += 1
    return await run.finish()


async def tls_rx_card_loss(dev, wire, *, seed=1, records=40, flows=3):
    """Interleaved flows with loss, duplicates, reordering and bad checksums;
    candidates answered from a perfect record-start table."""
    rng = random.Random(seed)
    await dev.open(tx_log=3, rx_log=5)
    run = _Run(dev, wire)
    all_flows = []
    for i in range(flows):
        sizes = [rng.choice((0, 1, 15, 16, rng.randrange(400), rng.randrange(3000)))
                 for _ in range(records)]
        all_flows.append(Flow(i, rng.choice(("1.2", "1.3")),
                              rng.choice(("AES-128-GCM", "AES-256-GCM")), sizes,
                              v6=rng.random() < 0.3, mss=rng.choice((100, 536, 1448)),
                              number=rng.randrange(1 << 40)))
    for i, flow in enumerate(all_flows):
        await run.control(TxOpcode.RX_SET_STATIC, 10 + i, flow.static())
    events = []
    for i, flow in enumerate(all_flows):
        order = []
        for seg in flow.segments():
            r = rng.random()
            if r < 0.08:
                continue
            order.append(seg)
            if r < 0.12:
                order.append(seg)
        for k in range(len(order) - 1):
            if rng.random() < 0.06:
                order[k], order[k + 1] = order[k + 1], order[k]
        events.append([(i, seg) for seg in order])
    # Interleave the flows' segment lists, keeping each flow's order.
    merged = []
    while any(events):
        pick = rng.choice([e for e in events if e])
        merged.append(pick.pop(0))
    for i, (offset, chunk) in merged:
        mangle = None
        r = rng.random()
        if r < 0.03:
            mangle = traffic.corrupt_l4_checksum
        elif r < 0.09:
            def mangle(raw, k=rng.randrange(54, 54 + max(1, len(chunk)))):
                b = bytearray(raw)                     # ciphertext (or header) bit flip,
                b[min(k, len(b) - 1)] ^= 0x10           # checksum fixed: a tag failure
                return traffic.recompute_checksums(bytes(b), ip=False, l4=True)
        await run.receive(all_flows[i], offset, chunk, mangle=mangle, tag=10 + i)
    for i in range(flows):
        await run.control(TxOpcode.RX_FREE, 10 + i)
    return await run.finish()


async def tls_rx_card_many_flows(dev, wire, *, flows=64, seed=4):
    """64 interleaved flows (two-choice steering in use), then all freed."""
    rng = random.Random(seed)
    await dev.open(tx_log=3, rx_log=5)
    run = _Run(dev, wire)
    all_flows = [Flow(i, ("1.2", "1.3")[i % 2], ("AES-128-GCM", "AES-256-GCM")[i // 2 % 2],
                      [rng.randrange(300) for _ in range(3)], mss=200, v6=i % 3 == 0)
                 for i in range(flows)]
    for i, flow in enumerate(all_flows):
        await run.control(TxOpcode.RX_SET_STATIC, i + 1, flow.static())
    queues = [list(f.segments()) for f in all_flows]
    while any(queues):
        i = rng.choice([k for k, q in enumerate(queues) if q])
        offset, chunk = queues[i].pop(0)
        await run.receive(all_flows[i], offset, chunk, tag=i + 1)
    for i in range(flows):
        await run.control(TxOpcode.RX_FREE, i + 1)
    return await run.finish()


async def tls_rx_card_bad_input(dev, wire):
    """Control errors (tag, parameters, steering, a block that cannot be read),
    a truncated frame, frames with bad checksums, a flow with no context, a
    stale resync answer, implausible headers, enable in the middle of a record."""
    await dev.open(tx_log=3, rx_log=5, rx_fill=0)
    run = _Run(dev, wire, own_buffers=True)
    flow = Flow(0, "1.2", "AES-128-GCM", (200, 300, 400, 500), mss=300)
    other = Flow(1, "1.3", "AES-256-GCM", (200, 300))
    await run.control(TxOpcode.RX_SET_STATIC, 0, flow.static())                 # BAD_TAG
    await run.control(TxOpcode.RX_SET_STATIC, RX_CONTEXTS + 1, flow.static())   # BAD_TAG
    await run.control(TxOpcode.RX_SET_STATIC, 1, flow.static(raw_cipher=3))     # BAD_PARAMS
    await run.control(TxOpcode.RX_SET_STATIC, 1, flow.static(raw_version=2))    # BAD_PARAMS
    await run.control(TxOpcode.RX_RESYNC, 1, bytes(16))                         # BAD_TAG
    await run.control(TxOpcode.RX_FREE, 1)                                      # BAD_TAG
    # A parameter block that cannot be read.
    await dev.post_tx_raw(opcode=TxOpcode.RX_SET_STATIC, tag=1, length=128, addr=0xDEAD_0000_0000)
    run.obs["tx_completions"] += [c.to_dict() for c in await dev.flush_tx()]
    await run.control(TxOpcode.RX_SET_STATIC, 1, flow.static())
    await run.control(TxOpcode.RX_SET_STATIC, 2, flow.static())                 # STEER_EXISTS
    await run.control(TxOpcode.RX_SET_STATIC, 1, other.static())                # BAD_TAG (live)
    await run.control(TxOpcode.RX_RESYNC, 1, bytes(16))                         # RESYNC_STALE
    segs = list(flow.segments())
    await run.receive(flow, *segs[0], mangle=traffic.corrupt_ip_checksum)
    await run.receive(flow, *segs[0], mangle=traffic.corrupt_l4_checksum)
    await run.receive(other, *list(other.segments())[0])                        # no context
    await run.receive(flow, *segs[0], buffer=64)                                # truncated
    await run.receive(flow, *segs[0], buffer=54 + len(segs[0][1]))              # just fits
    await run.receive(flow, 0, b"")                                             # pure ACK
    # Record 2's header is not plausible (version 0x0302): the tracker loses
    # sync there, searches, and the driver confirms record 3's header.
    bad = bytearray(flow.data)
    bad[flow.starts[2] + 2] ^= 0x01
    for offset, _ in segs[1:]:
        await run.receive(flow, offset, bytes(bad[offset:offset + flow.mss]), tag=1)
    await run.control(TxOpcode.RX_FREE, 1)
    # Enabled in the middle of a record: told the next record's start.
    mid = Flow(2, "1.3", "AES-128-GCM", (700, 700, 700), mss=500)
    await run.control(TxOpcode.RX_SET_STATIC, 3, mid.static(seq_offset=mid.starts[1], number=1))
    for offset, chunk in list(mid.segments())[1:]:
        await run.receive(mid, offset, chunk, tag=3)
    await run.control(TxOpcode.RX_FREE, 3)
    return await run.finish()


async def tls_both_ways(dev, wire, *, rx_sizes=(16384, 300, 16384, 0, 16384), tx_sizes=(16384,) * 4,
                        mss=1448):
    """TLS both ways at once: receive records queued on the wire, then the kTLS
    driver sends records on another connection while they come in. On a card
    whose directions share one GCM engine (the board's), the engine changes
    hands between frames; every byte must come out as on the model."""
    from . import scenarios_tls_tx as tx
    ktls = await tx._open(dev, tx_log=8, rx_log=6)
    run = _Run(dev, wire)
    flow = Flow(0, "1.2", "AES-256-GCM", rx_sizes, number=9, mss=mss)
    await run.control(TxOpcode.RX_SET_STATIC, 1, flow.static())
    flows = []
    sock = await tx._socket(ktls, flows, version="1.3", cipher="AES-128-GCM", mss=mss,
                            iss=0x1000, rec_seq=2)
    tx._write(sock, flows[0], tx_sizes)
    segments = flow.segments()
    for offset, chunk in segments:
        await wire.send(flow.frame(offset, chunk), flow.port)
    await sock.output()
    for _ in segments:
        run.obs["rx"].append((await dev.recv()).to_dict())
    obs = await tx._observe(dev, ktls, [sock], {"flows": flows}, tx._WireLog(wire))
    return {**run.obs, **obs}


SCENARIOS = {fn.__name__: fn for fn in (
    tls_rx_card_stream, tls_rx_card_matrix, tls_rx_card_loss, tls_rx_card_many_flows,
    tls_rx_card_bad_input, tls_both_ways)}


async def run(name, bus, wire, **params):
    return await run_scenario(SCENARIOS[name], bus, wire, **params)


def run_on_model(name, **params):
    """Run scenario ``name`` on a fresh reference model with the TLS engines."""
    from .model import ReferenceNic
    nic = ReferenceNic(tls=True, rx_contexts=RX_CONTEXTS)
    return asyncio.run(run(name, nic, nic.wire, **params))
