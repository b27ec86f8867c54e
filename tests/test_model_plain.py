"""The plain packet path on the reference model, held against independent oracles.

Oracles: the frames as built (cosim/traffic.py states per frame what its
construction intends), Scapy's own checksum computation (``scapy.utils.checksum``,
``in4_chksum``/``in6_chksum``, and rebuilding with ``chksum`` deleted), and
plain arithmetic on indices. The model's own parser is never the oracle.
"""

import asyncio
import json
import random

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import checksum as scapy_checksum

from tlsnic.abi import (
    COUNTER_BASE, DESC_BYTES, ID_MAGIC, MAX_FRAME, Counter, Irq, Queue, QueueReg, Reg,
    RxCompletion, TxCompletion, TxOpcode, TxStatus, pack, unpack,
)
from tlsnic.cosim import traffic
from tlsnic.cosim.model import ReferenceNic, insert_checksums, ones_complement_sum
from tlsnic.cosim.scenarios import GUARD_BYTE, SCENARIOS, run_on_model
from tlsnic.driver.bus import Bus, BusError, NoProgress
from tlsnic.driver.device import Device, DriverError, _CompletionRing
from tlsnic.driver.hostmem import HostMemory


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def observations():
    """Every scenario once, with default parameters (shared by the checks below)."""
    return {name: run_on_model(name) for name in SCENARIOS}


def hexes(items, key="data"):
    return [bytes.fromhex(item[key]) for item in items]


def assert_in_order(completions, first=0):
    assert [c["index"] for c in completions] == [(first + i) & 0xFFFF for i in range(len(completions))]


# --- oracles built on Scapy ---------------------------------------------------------

def scapy_expected_tx(frame, fill_ip, fill_l4):
    """The frame a correct card puts on the wire: Scapy recomputes what it must fill."""
    if not (fill_ip or fill_l4):
        return frame
    return traffic.recompute_checksums(frame, ip=fill_ip, l4=fill_l4)


def scapy_l4_verifies(frame):
    """True when Scapy finds the TCP/UDP checksum (pseudo-header included) correct."""
    from scapy.layers.inet import in4_chksum
    from scapy.layers.inet6 import in6_chksum
    packet = Ether(frame)
    l4 = packet[TCP] if TCP in packet else packet[UDP]
    proto = 6 if TCP in packet else 17
    segment = bytes(l4)
    if IP in packet:
        segment = segment[:packet[IP].len - packet[IP].ihl * 4]
        return in4_chksum(proto, packet[IP], segment) == 0
    segment = segment[:packet[IPv6].plen]
    return in6_chksum(proto, packet[IPv6], segment) == 0


# --- observations are backend-neutral data ------------------------------------------

def test_observations_are_json_and_deterministic(observations):
    for name, obs in observations.items():
        assert json.loads(json.dumps(obs)) == obs, name
    assert run_on_model("tx_ring_full") == observations["tx_ring_full"]


def test_bring_up(observations):
    caps = observations["bring_up"]["caps"]
    assert caps["max_frame"] == MAX_FRAME and caps["ports"] == 1
    assert caps["tx_queues"] == caps["rx_queues"] == 1 and caps["max_log_ring"] == 15


# --- TX ------------------------------------------------------------------------------

def test_tx_sizes_leave_frames_untouched(observations):
    obs = observations["tx_sizes"]
    sent = hexes(obs["sent"])
    assert hexes([{"data": h} for h in obs["wire"]["0"]]) == sent
    assert_in_order(obs["tx_completions"])
    assert all(c["status"] == "OK" and c["opcode"] == "PACKET" for c in obs["tx_completions"])
    assert [c["length"] for c in obs["tx_completions"]] == [len(f) for f in sent]
    assert {len(f) for f in sent} == set(traffic.SIZES)
    assert obs["counters"]["tx_packets"] == len(sent)
    assert obs["counters"]["tx_bytes"] == sum(map(len, sent))


def test_tx_offload_matches_scapy(observations):
    obs = observations["tx_offload"]
    wire = obs["wire"]["0"]
    assert len(wire) == len(obs["sent"])
    filled_ip = filled_l4 = 0
    for entry, out in zip(obs["sent"], wire):
        fill_ip = entry["csum_ip"] and entry["tx_ip"]
        fill_l4 = entry["csum_l4"] and entry["tx_l4"]
        filled_ip += fill_ip
        filled_l4 += fill_l4
        expected = scapy_expected_tx(bytes.fromhex(entry["data"]), fill_ip, fill_l4)
        assert bytes.fromhex(out) == expected, (entry["name"], entry["mode"])
    assert obs["counters"]["tx_csum_ip"] == filled_ip
    assert obs["counters"]["tx_csum_l4"] == filled_l4
    # The interesting kinds really are in the mix.
    names = {e["name"] for e in obs["sent"]}
    for kind in ("ipv6-udp-zero-csum", "ipv4-fragment-first", "ipv4-cut-in-tcp-header",
                 "ipv6-IPv6ExtHdrHopByHop-udp", "ipv4-udp-vlan-good", "ipv6-tcp-vlan-9014"):
        assert kind in names


def test_tx_offload_udp_zero_result_is_sent_as_ffff():
    """A UDP datagram whose checksum computes to 0 must carry 0xFFFF."""
    base = Ether(traffic.build("ipv4", "udp", 100, None, random.Random(1)))
    # Choose a payload word that makes the checksum come out as 0.
    base[UDP].chksum = 0
    payload = bytearray(bytes(base[UDP].payload))
    payload[0:2] = b"\0\0"
    base[UDP].remove_payload()
    probe = Ether(bytes(base / bytes(payload)))
    del probe[UDP].chksum
    csum = Ether(bytes(probe))[UDP].chksum          # Scapy's checksum with word = 0
    # The sum without that word is ~csum; adding csum makes it 0xFFFF, whose
    # complement (the checksum) is 0.
    payload[0:2] = csum.to_bytes(2, "big")
    frame = bytes(base / bytes(payload))
    out, _, done = insert_checksums(frame, False, True)
    assert done
    assert out[14 + 20 + 6:14 + 20 + 8] == b"\xff\xff"
    assert out == traffic.recompute_checksums(frame, ip=False)   # Scapy agrees


def test_tx_unaligned(observations):
    obs = observations["tx_unaligned"]
    for entry, out in zip(obs["sent"], obs["wire"]["0"]):
        assert bytes.fromhex(out) == scapy_expected_tx(bytes.fromhex(entry["data"]), True, True)
    assert [c["tag"] for c in obs["tx_completions"]] == [e["offset"] for e in obs["sent"]]


@pytest.mark.parametrize("txcq_log", [None, 1])
def test_tx_ring_full(txcq_log):
    obs = run_on_model("tx_ring_full", tx_log=3, txcq_log=txcq_log, passes=4, extra=3)
    count = 4 * 8 + 3
    assert obs["indices"] == list(range(count))
    assert_in_order(obs["tx_completions"])
    assert [bytes.fromhex(w) for w in obs["wire"]["0"]] == [
        scapy_expected_tx(f, True, True) for f in hexes(obs["sent"])]


def test_tx_bad_descriptors(observations):
    obs = observations["tx_bad_descriptors"]
    expected_status = {
        "good": "OK", "zero-length": "BAD_LENGTH", "max-frame": "OK", "oversize": "BAD_LENGTH",
        "length-ffff": "BAD_LENGTH", "opcode-0f": "BAD_OPCODE", "opcode-7f": "BAD_OPCODE",
        "opcode-ff": "BAD_OPCODE", "bad-port": "BAD_PORT", "bad-port-ff": "BAD_PORT",
        "zero-length-bad-port": "BAD_LENGTH", "bad-port-bad-addr": "BAD_PORT",
        "dma-addr-0": "DMA_ERROR", "dma-addr-far": "DMA_ERROR", "dma-runs-off-region": "DMA_ERROR",
        "nop": "OK", "nop-flags": "OK", "reserved-flags": "OK",
        "tagged-no-tls": "BAD_TAG", "tagged-bad-addr": "DMA_ERROR",
    }
    completions = obs["tx_completions"]
    assert_in_order(completions)
    assert len(completions) == len(obs["sent"])
    for entry, c in zip(obs["sent"], completions):
        assert c["status"] == expected_status[entry["name"]], entry["name"]
        raw = unpack(TxCompletion, bytes.fromhex(c["raw"]))
        if entry["name"] != "good":
            assert (raw.opcode if isinstance(raw.opcode, int) else raw.opcode.value) == entry["fields"]["opcode"]
        # The completion echoes the descriptor's tag.
        assert c["tag"] == entry.get("fields", {}).get("tag", 0)
        sent_bytes = c["status"] == "OK" and c["opcode"] == "PACKET"
        assert c["length"] == (entry.get("fields", {}).get("length", 100) if sent_bytes else 0)
    # Only good frames (and the two legal oddities) reached the wire, unchanged.
    wire = [bytes.fromhex(w) for w in obs["wire"]["0"]]
    good = bytes.fromhex(obs["sent"][0]["data"])
    assert len(wire) == 19 + 2
    assert wire.count(good) == 20                     # 19 good + reserved-flags
    assert [len(w) for w in wire].count(MAX_FRAME) == 1
    counters = obs["counters"]
    assert counters["tx_desc_errors"] == 10 and counters["tx_dma_errors"] == 4
    assert counters["tx_packets"] == 21
    assert counters["tx_tls_drop_bad_flow"] == 1      # the tag on a card without TLS


# --- RX ------------------------------------------------------------------------------

def test_rx_checksums_match_construction_and_scapy(observations):
    obs = observations["rx_checksums"]
    bad = 0
    assert len(obs["rx"]) == len(obs["sent"])
    for i, (entry, rec) in enumerate(zip(obs["sent"], obs["rx"])):
        frame = bytes.fromhex(entry["data"])
        name = entry["name"]
        assert bytes.fromhex(rec["data"]) == frame, name
        assert rec["status"] == "OK" and rec["length"] == len(frame) and rec["index"] == i
        assert [rec["l3_proto"], rec["l4_proto"], rec["ip_csum"], rec["l4_csum"]] == entry["expect"], name
        bad += "BAD" in entry["expect"][2:]
        # Independent cross-check of every definite verdict with Scapy.
        if rec["ip_csum"] in ("GOOD", "BAD") and IP in Ether(frame) and len(frame) >= 34:
            header = bytes(Ether(frame)[IP])[:Ether(frame)[IP].ihl * 4]
            assert (scapy_checksum(header) == 0) == (rec["ip_csum"] == "GOOD"), name
        if rec["l4_csum"] == "GOOD" or (rec["l4_csum"] == "BAD" and "bad-l4" in name):
            assert scapy_l4_verifies(frame) == (rec["l4_csum"] == "GOOD"), name
    assert obs["counters"]["rx_csum_bad"] == bad
    assert obs["counters"]["rx_packets"] == len(obs["rx"])


def test_rx_truncation_never_writes_past_the_buffer(observations):
    obs = observations["rx_truncation"]
    for entry, rec in zip(obs["sent"], obs["rx"]):
        frame = bytes.fromhex(entry["data"])
        size = entry["buffer_size"]
        assert rec["length"] == len(frame)
        assert rec["status"] == ("TRUNCATED" if len(frame) > size else "OK")
        written = min(len(frame), size)
        buffer = bytes.fromhex(rec["buffer"])
        assert buffer[:written] == frame[:written]
        assert set(buffer[written:]) <= {GUARD_BYTE}     # untouched past the frame
        assert bytes.fromhex(rec["data"]) == frame[:size]
        for guard in (rec["guard_before"], rec["guard_after"]):
            assert set(bytes.fromhex(guard)) == {GUARD_BYTE}
    truncated = sum(r["status"] == "TRUNCATED" for r in obs["rx"])
    assert truncated and obs["counters"]["rx_truncated"] == truncated
    assert obs["counters"]["rx_packets"] == len(obs["rx"])


def test_rx_dma_error(observations):
    obs = observations["rx_dma_error"]
    assert [r["status"] for r in obs["rx"]] == [
        "OK", "DMA_ERROR", "OK", "DMA_ERROR", "DMA_ERROR", "OK"]
    for entry, rec in zip(obs["sent"], obs["rx"]):
        if rec["status"] == "OK":
            assert rec["data"] == entry["data"]
        assert rec["l4_csum"] == "GOOD"      # verified on the wire bytes regardless
    assert obs["counters"]["rx_dma_errors"] == 3 and obs["counters"]["rx_packets"] == 3


def test_rx_backpressure_loses_nothing(observations):
    obs = observations["rx_backpressure"]
    assert obs["early"] == 0
    assert [r["data"] for r in obs["rx"]] == [s["data"] for s in obs["sent"]]
    assert [r["index"] for r in obs["rx"]] == list(range(len(obs["sent"])))


def test_rx_waits_in_the_model_until_buffers_come():
    async def body():
        nic = ReferenceNic()
        dev = Device(nic)
        await dev.open(rx_log=2, rxcq_log=1, rx_fill=0)
        frames = [traffic.build("ipv4", "udp", 100 + i, None) for i in range(6)]
        for f in frames:
            await nic.wire.send(f)
        assert nic.wire.backlog() == 6                # no buffer: all wait
        await dev.set_rx_fill(4)
        assert nic.wire.backlog() == 4                # RXCQ of 2 entries is full
        got = [await dev.recv() for _ in frames]
        assert [g.data for g in got] == frames and nic.wire.backlog() == 0
    run(body())


# --- both directions -----------------------------------------------------------------

def check_loopback(obs, first=0):
    sent = hexes(obs["sent"])
    wire = [bytes.fromhex(w) for w in obs["wire"]["0"]]
    assert wire == [scapy_expected_tx(f, s["csum_ip"], s["csum_l4"]) for f, s in zip(sent, obs["sent"])]
    assert [bytes.fromhex(r["data"]) for r in obs["rx"]] == wire
    assert all(r["l4_csum"] == "GOOD" and r["ip_csum"] in ("GOOD", "NONE") for r in obs["rx"])
    assert_in_order(obs["tx_completions"], first)
    assert [r["index"] for r in obs["rx"]] == [(first + i) & 0xFFFF for i in range(len(obs["rx"]))]


@pytest.mark.parametrize("use_irq", [True, False])
def test_ring_wrap(use_irq):
    obs = run_on_model("ring_wrap", log=2, passes=6, use_irq=use_irq)
    assert len(obs["rx"]) >= 3 * 4
    check_loopback(obs, first=0xFFF6)
    assert any(c["index"] == 0 for c in obs["tx_completions"])   # crossed the 16-bit wrap


def test_loopback_and_many_in_flight(observations):
    check_loopback(observations["loopback"])
    obs = observations["many_in_flight"]
    check_loopback(obs)
    assert len(obs["rx"]) == 200


def test_jumbo(observations):
    obs = observations["jumbo"]
    check_loopback(obs)
    assert sorted({len(bytes.fromhex(w)) for w in obs["wire"]["0"]}) == [traffic.JUMBO, MAX_FRAME]


# --- driver ring and phase logic -----------------------------------------------------

@pytest.mark.parametrize("log_size,start", [(0, 0), (2, 0), (2, 0xFFFD), (3, 0xFFF8)])
def test_completion_phase_bit(log_size, start):
    """A completion is the host's only on the pass the card wrote it."""
    async def body():
        memory = HostMemory()
        nic = ReferenceNic(memory)
        ring = _CompletionRing(nic, Queue.TXCQ, log_size, TxCompletion)
        ring.index = start
        await ring.create()
        assert await ring.take() == []                # a zeroed ring is empty
        size = 1 << log_size
        for index in range(start, start + 3 * size):
            index &= 0xFFFF
            phase = ((index >> log_size) & 1) ^ 1    # what the card writes
            raw = pack(TxCompletion, index=index, phase=phase)
            await nic.mem_write(ring.slot_addr(index), raw)
            got = await ring.take()
            assert len(got) == 1 and unpack(TxCompletion, got[0]).index == index
            assert await ring.take() == []           # last pass's entries are stale now
    run(body())


def test_completion_read_while_the_card_writes_it():
    """The board's host window serves reads and writes independently, so the
    card's write of an entry may land between two words of the host's read.
    The driver reads the phase word first (mlx5's owner bit, then the rest):
    it never takes stale bytes under a new phase."""
    class Tearing:
        # The card's write of entry ``i`` lands in the middle of the first
        # read that touches its slot: the read's low half sees the old bytes.
        def __init__(self, nic, ring):
            self.nic, self.ring, self.pending = nic, ring, {}

        async def mem_read(self, addr, n):
            for index, raw in list(self.pending.items()):
                slot = self.ring.slot_addr(index)
                if addr < slot + len(raw) and slot < addr + n:
                    low = await self.nic.mem_read(addr, n // 2)
                    del self.pending[index]
                    await self.nic.mem_write(slot, raw)
                    return low + await self.nic.mem_read(addr + n // 2, n - n // 2)
            return await self.nic.mem_read(addr, n)

    async def body():
        nic = ReferenceNic(HostMemory())
        ring = _CompletionRing(nic, Queue.RXCQ, 2, RxCompletion)
        await ring.create()
        tearing = Tearing(nic, ring)
        ring.bus = tearing
        taken = []
        for index in range(12):
            phase = ((index >> 2) & 1) ^ 1
            tearing.pending[index] = pack(RxCompletion, index=index, length=60 + index, phase=phase)
            while len(taken) <= index:
                taken += [unpack(RxCompletion, raw) for raw in await ring.take()]
        assert [(c.index, c.length) for c in taken] == [(i, 60 + i) for i in range(12)]
    run(body())


def test_driver_rejects_out_of_order_completion():
    async def body():
        nic = ReferenceNic()
        dev = Device(nic)
        await dev.open(tx_log=2)
        nic.queues[Queue.TXQ].enabled = False          # stop the card: we play it
        await dev.post_tx_raw(opcode=TxOpcode.NOP)
        await nic.mem_write(dev.txcq.slot_addr(0), pack(TxCompletion, index=5, phase=1))
        with pytest.raises(DriverError):
            await dev.reap_tx()
    run(body())


class CounterBus:
    """Just enough of a Bus to feed the driver wrapping counter values."""
    def __init__(self):
        self.values = [0] * len(Counter)

    async def read32(self, addr):
        return self.values[(addr - COUNTER_BASE) // 4]


def test_stats_accumulate_across_32_bit_wrap():
    async def body():
        bus = CounterBus()
        dev = Device(bus)
        total = 0
        for step in (0xFFFF_FFF0, 0x20, 0xFFFF_FFFF, 5):
            total += step
            bus.values[Counter.RX_BYTES] = total & 0xFFFF_FFFF
            stats = await dev.update_stats()
        assert stats["rx_bytes"] == total > 2**33
    run(body())


# --- the model's registers, host memory and checksum arithmetic ----------------------------

def test_model_registers():
    async def body():
        nic = ReferenceNic()
        assert isinstance(nic, Bus)
        assert await nic.read32(Reg.ID) == ID_MAGIC
        await nic.write32(Reg.ID, 0)                    # read-only: ignored
        assert await nic.read32(Reg.ID) == ID_MAGIC
        await nic.write32(Reg.SCRATCH, 0x1234_5678)
        assert await nic.read32(Reg.SCRATCH) == 0x1234_5678
        for bad in (0x02C, 0x0FC, Queue.TXQ + 0x14, COUNTER_BASE + 4 * len(Counter), 0x001):
            with pytest.raises(BusError):
                await nic.read32(bad)
        assert await nic.read32(Reg.ERROR_STATUS) == 1
        await nic.write32(Reg.ERROR_STATUS, 1)          # W1C
        assert await nic.read32(Reg.ERROR_STATUS) == 0
        # Base and size are frozen while a queue is enabled.
        q = Queue.RXQ
        await nic.write32(q + QueueReg.BASE_LO, 0x1000)
        await nic.write32(q + QueueReg.CTRL, 3 | (1 << 31))
        await nic.write32(q + QueueReg.BASE_LO, 0x2000)
        await nic.write32(q + QueueReg.CTRL, 5 | (1 << 31))
        assert await nic.read32(q + QueueReg.BASE_LO) == 0x1000
        assert await nic.read32(q + QueueReg.CTRL) == 3 | (1 << 31)
        with pytest.raises(NoProgress):
            await nic.wait_irq()
        with pytest.raises(NoProgress):
            await nic.wire.recv()
    run(body())


def test_irq_status_w1c_and_line():
    async def body():
        nic = ReferenceNic()
        dev = Device(nic)
        await dev.open(tx_log=2)
        await dev.send(traffic.build("ipv4", "udp", 80, None))
        assert await nic.read32(Reg.IRQ_STATUS) == 1 << Irq.TXCQ
        assert nic.irq
        await nic.wait_irq()                             # returns: line is high
        await nic.write32(Reg.IRQ_STATUS, 1 << Irq.TXCQ)
        assert not nic.irq and await nic.read32(Reg.IRQ_STATUS) == 0
        await nic.write32(Reg.IRQ_ENABLE, 0)
        await nic.wire.send(await nic.wire.recv())
        assert await nic.read32(Reg.IRQ_STATUS) == 1 << Irq.RXCQ and not nic.irq
    run(body())


def test_host_memory():
    async def body():
        memory = HostMemory()
        a = memory.alloc(100)
        b = memory.alloc(1, align=4096)
        assert a % 64 == 0 and b % 4096 == 0
        assert await memory.read(a, 128) == bytes(128)
        await memory.write(a + 3, b"xyz")
        assert await memory.read(a, 6) == b"\0\0\0xyz"
        with pytest.raises(BusError):
            await memory.read(a + 120, 16)
        with pytest.raises(BusError):
            await memory.write(0, b"x")
        memory.free(a)
        with pytest.raises(BusError):
            await memory.read(a, 1)
    run(body())


def test_ones_complement_sum_agrees_with_scapy():
    rng = random.Random(5)
    for length in list(range(0, 40)) + [1499, 9014]:
        data = rng.randbytes(length)
        assert (~ones_complement_sum(data)) & 0xFFFF == scapy_checksum(data)
    assert ones_complement_sum(b"\xff\xff\x00\x01") == 0x0001
    assert ones_complement_sum(bytes(8)) == 0


def test_pack_unpack_unknown_enum_values():
    raw = pack(RxCompletion, status=0x7E, phase=1, length=60)
    fields = unpack(RxCompletion, raw)
    assert fields.status == 0x7E and fields.phase == 1 and fields.length == 60
    assert len(raw) == DESC_BYTES
    with pytest.raises(ValueError):
        pack(TxCompletion, status=0x100)
