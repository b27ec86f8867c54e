"""``tlsnic bench tx``: what inline TLS transmit costs, measured on a backend.

Retransmit cost (every backend). One connection sends ``records`` records of
16 KB (TLS 1.3, AES-128-GCM by default) in MSS-sized segments. Segments are
lost on the wire with probability ``loss``, decided per ``(seq, attempt)`` by
a seeded generator, so every run of one seed loses the very same segments; a
lost segment is retransmitted ``dupack`` segments later (fast retransmit)
until a copy gets through, and the receiver ACKs up to its first hole. The
same traffic runs three times per loss rate: in software mode (plain frames:
the card reads descriptors and frames, nothing else), and offloaded with the
``dump`` and the ``seek`` strategy. The card's DMA is counted where it
happens (:class:`DmaCounter` wraps what the card's bus master reads and
writes: the model's host memory, or the AXI subordinate's target under
cocotb), never computed from a formula. The figure

    extra DMA read bytes per retransmitted byte
        = ((offload - software) at this loss - (offload - software) at 0 loss)
          / payload bytes retransmitted

is what repositioning the card costs per retransmitted byte, beyond reading
the segment again (which plain TCP pays too). The driver and card counters of
each run are reported with it, and the wire is checked: every retransmitted
segment equals its first copy and the stream decrypts.

Throughput (backends with a clock): bits per clock of 16 KB records put on the
wire. The gateware has no TLS engine yet; until it reports ``CAP_TLS_TX`` the
Verilator run says so instead of measuring (see :func:`_tls_throughput`).
"""

import argparse
import asyncio
import json
import os
import random
import sys
from collections import deque

from tlsnic.abi import CAP_TLS_TX, TxOpcode, TxStatus
from tlsnic.driver.device import Device
from tlsnic.driver.fallback import open_record
from tlsnic.driver.hostmem import HostMemory, HostMemoryBus
from tlsnic.driver.ktls import MODE_IFNET, MODE_SW, KtlsDriver, KtlsSocket
from tlsnic.driver.tcp import TcpFlow, seq_sub
from tlsnic.driver.tls_record import HEADER_LEN, TLS_MAX_PLAINTEXT, parse_records

from .scenarios_tls_tx import IV, KEY

__all__ = ["DmaCounter", "loss_run", "retransmit_figures", "run", "main"]

LOSS_RATES = (0.01, 0.05)
#: Card counters a run reports (deltas over the run).
CARD_COUNTERS = ("tx_packets", "tx_bytes", "tx_tls_encrypted_packets", "tx_tls_records",
                 "tx_tls_ooo", "tx_tls_resync", "tx_tls_dump_packets", "tx_tls_dump_bytes",
                 "tx_tls_drop_no_sync_data")
#: Driver counters a run reports (``redma_bytes`` is Linux's ``tx_tls_resync_bytes``).
DRIVER_COUNTERS = ("tx_tls_ooo", "resync_params", "resync_seek", "resync_seek_tag",
                   "seek_fallback_dump", "dump_descriptors", "redma_bytes")


class DmaCounter:
    """Counts the bytes the card's DMA master reads and writes.

    Wraps the object the card's bus master talks to (the model's
    :class:`~tlsnic.driver.hostmem.HostMemory`, or the ``AddressSpace`` an
    ``AxiSlave`` serves) and forwards everything to it. On the AXI side a
    count is bytes on the bus (whole bursts), on the model bytes asked for.
    """

    def __init__(self, target):
        self.target = target
        self.read_bytes = 0
        self.write_bytes = 0

    async def read(self, address, length, **kwargs):
        self.read_bytes += length
        return await self.target.read(address, length, **kwargs)

    async def write(self, address, data, **kwargs):
        self.write_bytes += len(data)
        return await self.target.write(address, data, **kwargs)

    def __getattr__(self, name):
        return getattr(self.target, name)


class _HostSide(HostMemoryBus):
    """The driver's bus on the model: the card's registers, host memory not counted.

    The model's own ``mem_read`` would go through the card's (counted) memory;
    the host's accesses are not DMA, so the driver gets the memory directly.
    """

    def __init__(self, card, memory):
        self.card = card
        self.memory = memory

    async def read32(self, addr):
        return await self.card.read32(addr)

    async def write32(self, addr, value):
        await self.card.write32(addr, value)

    async def wait_irq(self):
        await self.card.wait_irq()


def _lost(seed, seq, attempt, loss):
    """Whether copy ``attempt`` of the segment at ``seq`` is lost (same for every run)."""
    return loss > 0 and random.Random(f"{seed}/{seq}/{attempt}").random() < loss


def _payload_of(frame):
    """``(seq, TCP payload)`` of an IPv4 TCP frame (the bench's own frames: no VLAN)."""
    ihl = (frame[14] & 0x0F) * 4
    total = int.from_bytes(frame[16:18], "big")
    tcp = 14 + ihl
    seq = int.from_bytes(frame[tcp + 4:tcp + 8], "big")
    return seq, frame[tcp + (frame[tcp + 12] >> 4) * 4:14 + total]


class _Receiver:
    """The far end: keeps the first copy of every segment and checks the others."""

    def __init__(self):
        self.segments = {}
        self.mismatches = 0

    def take(self, frame):
        seq, data = _payload_of(frame)
        if not data:
            return
        first = self.segments.setdefault(seq, data)
        self.mismatches += first != data

    def stream(self, iss):
        out, pos = bytearray(), iss
        for seq in sorted(self.segments, key=lambda s: seq_sub(s, iss)):
            assert seq == pos, f"hole at {pos:#x}"
            out += self.segments[seq]
            pos = (pos + len(self.segments[seq])) & 0xFFFF_FFFF
        return bytes(out)


async def loss_run(bus, wire, counter, *, mode, strategy="dump", loss=0.0, records=64,
                   record_size=TLS_MAX_PLAINTEXT, mss=1448, version="1.3", cipher="AES-128-GCM",
                   seed=1, dupack=3, iss=0xFFF0_0000):
    """One connection through ``bus``/``wire`` with seeded segment loss; return its figures.

    Parameters
    ----------
    counter : DmaCounter
        Counts the card's DMA (already installed on the backend).
    mode : {"ifnet", "sw"}
    strategy : {"dump", "seek"}
    loss : float
        Probability that one copy of a segment is lost on the wire.
    dupack : int
        Segments sent between a loss and its retransmit.
    """
    dev = Device(bus)
    await dev.open(tx_log=8, rx_log=2)
    ktls = KtlsDriver(dev, strategy=strategy, seed=seed, ifnet_max_rexmit_pct=100)
    sock = KtlsSocket(ktls, TcpFlow(), iss=iss, mss=mss)
    stats0 = await dev.update_stats()
    read0, write0 = counter.read_bytes, counter.write_bytes
    session = await sock.enable_tx(version, cipher, KEY[cipher], IV[version], 0, mode=mode)
    plaintext = bytes((i * 7 + i // 251) & 0xFF for i in range(records * record_size))
    sock.write(plaintext, record_size=record_size)
    segs = sock.tcp.new_segments()
    receiver, taken, delivered = _Receiver(), 0, set()
    pending, acked = deque(), 0
    figures = {"segments": len(segs), "lost": 0, "retransmits": 0, "rexmit_payload_bytes": 0}

    async def drain():
        # The receiver ACKs only what has reached it: on a card that works
        # behind its ring (the gateware) a segment is on the wire only once
        # its completion is in, and the driver frees a record's host buffer
        # (what the card reads) when the record is acked.
        nonlocal taken
        await ktls.poll()
        new, taken = ktls.completions[taken:], len(ktls.completions)
        for c in new:
            if c.opcode is TxOpcode.PACKET and c.status is TxStatus.OK:
                receiver.take(await wire.recv(0))
        sock.ack(segs[acked].seq if acked < len(segs) else sock.tcp.snd_max)

    async def send(index, attempt):
        nonlocal acked
        seg = segs[index]
        if attempt:
            (seg,) = sock.tcp.rexmit_segments(seg.seq, len(seg.payload))
            figures["retransmits"] += 1
            figures["rexmit_payload_bytes"] += len(seg.payload)
        await sock.send_segments([seg], flush=False)
        if _lost(seed, seg.seq, attempt, loss):
            figures["lost"] += 1
            pending.append((clock + dupack, index, attempt + 1))
            return
        delivered.add(index)
        while acked in delivered:                 # the receiver's cumulative ACK
            acked += 1

    clock = 0
    for index in range(len(segs)):
        await send(index, 0)
        clock += 1
        while pending and pending[0][0] <= clock:
            _, lost_index, attempt = pending.popleft()
            await send(lost_index, attempt)
        if clock % 32 == 0:
            await drain()
    while pending:                                 # the tail: retransmit timer
        clock += 1
        _, lost_index, attempt = pending.popleft()
        await send(lost_index, attempt)
    await ktls.flush()
    await drain()
    await sock.close()
    await ktls.flush()
    stats = await dev.update_stats()
    figures["dma_read_bytes"] = counter.read_bytes - read0
    figures["dma_write_bytes"] = counter.write_bytes - write0
    figures["card"] = {name: stats[name] - stats0[name] for name in CARD_COUNTERS}
    figures["driver"] = {name: ktls.stats[name] for name in DRIVER_COUNTERS}
    figures["mode"] = session.mode
    figures["wire_ok"] = receiver.mismatches == 0 and _decrypts(
        receiver.stream(iss), session.params, plaintext)
    await dev.close()
    return figures


def _decrypts(stream, params, plaintext):
    """The reassembled wire opens record by record to the plaintext sent."""
    out = bytearray()
    for number, (header, body) in enumerate(parse_records(stream)):
        assert len(header) == HEADER_LEN
        out += open_record(params, number, header, body)[1]
    return bytes(out) == plaintext


async def retransmit_figures(make_backend, *, records=64, loss_rates=LOSS_RATES, seed=1, **kw):
    """Every (loss rate, mode) run and the per-retransmitted-byte figures.

    ``make_backend()`` returns a fresh ``(bus, wire, counter)`` (async).
    """
    runs = {}
    for loss in (0.0,) + tuple(loss_rates):
        for name, mode, strategy in (("sw", MODE_SW, "dump"), ("dump", MODE_IFNET, "dump"),
                                     ("seek", MODE_IFNET, "seek")):
            bus, wire, counter = await make_backend()
            runs[f"{loss:.0%}/{name}"] = await loss_run(
                bus, wire, counter, mode=mode, strategy=strategy, loss=loss, records=records,
                seed=seed, **kw)
    summary = {}
    for loss in loss_rates:
        row = {}
        for name in ("dump", "seek"):
            base = {k: runs[f"0%/{name}"][k] - runs["0%/sw"][k]
                    for k in ("dma_read_bytes", "dma_write_bytes")}
            run_, sw = runs[f"{loss:.0%}/{name}"], runs[f"{loss:.0%}/sw"]
            rexmit = run_["rexmit_payload_bytes"]
            extra_read = run_["dma_read_bytes"] - sw["dma_read_bytes"] - base["dma_read_bytes"]
            extra_write = run_["dma_write_bytes"] - sw["dma_write_bytes"] - base["dma_write_bytes"]
            row[name] = {
                "rexmit_payload_bytes": rexmit,
                "extra_dma_read_bytes": extra_read,
                "extra_dma_read_per_rexmit_byte": round(extra_read / rexmit, 3) if rexmit else None,
                "extra_dma_write_bytes": extra_write,
                "tx_tls_ooo": run_["driver"]["tx_tls_ooo"],
                "dump_packets": run_["card"]["tx_tls_dump_packets"],
                "dump_bytes": run_["card"]["tx_tls_dump_bytes"],
                "resync_bytes": run_["driver"]["redma_bytes"],
            }
        summary[f"{loss:.0%}"] = row
    return {"summary": summary, "runs": runs}


def _model_backend():
    from .model import ReferenceNic

    async def make():
        memory = HostMemory()
        card = ReferenceNic(memory, tls=True)
        counter = DmaCounter(memory)
        card.memory = counter                    # what the card's DMA goes through
        return _HostSide(card, memory), card.wire, counter
    return make


def run(sim="model", *, records=128, seed=1, loss_rates=LOSS_RATES, mss=1448, version="1.3",
        cipher="AES-128-GCM"):
    """Run the bench on ``sim`` ("model" or "verilator"); return the figures (JSON types)."""
    setup = {"records": records, "record_size": TLS_MAX_PLAINTEXT, "mss": mss,
             "version": version, "cipher": cipher, "seed": seed, "dupack": 3,
             "loss_rates": list(loss_rates)}
    if sim == "model":
        figures = asyncio.run(retransmit_figures(
            _model_backend(), records=records, seed=seed, loss_rates=loss_rates, mss=mss,
            version=version, cipher=cipher))
        return {"simulator": "model", "setup": setup, "throughput": None, **figures}
    return _run_cocotb(sim, setup)


# --- under cocotb (Verilator) ----------------------------------------------------------------

def _run_cocotb(sim, setup):
    from tlsnic.cosim.build import nic_design
    from tlsnic.cosim.runner import CocotbRun
    from tlsnic.cosim.tb import CLOCK_NS
    runner = CocotbRun(nic_design(), sim=sim, waves=False)
    test_dir = runner.build_dir / f"bench-tls-tx-{os.getpid()}"
    test_dir.mkdir(parents=True, exist_ok=True)
    out = test_dir / "results.json"
    runner.test("tlsnic.cosim.bench_tls_tx", test_dir=test_dir, extra_env={
        "TLSNIC_RESULTS": str(out), "TLSNIC_BENCH_SETUP": json.dumps(setup)})
    figures = json.loads(out.read_text())
    return {"simulator": runner.sim, "clock_ns": CLOCK_NS, "setup": setup, **figures}


async def _tls_throughput(tb, counter, *, records=16, mss=1448, version="1.3",
                          cipher="AES-128-GCM"):
    """Bits per clock of 16 KB records on the wire, every segment posted at once.

    The descriptors are posted by the driver one doorbell each, so for short
    segments this is a lower bound of what the engine can do.
    """
    dev = Device(tb.bus)
    await dev.open(tx_log=10, rx_log=2)
    ktls = KtlsDriver(dev, seed=1)
    sock = KtlsSocket(ktls, TcpFlow(), iss=1, mss=mss)
    await sock.enable_tx(version, cipher, KEY[cipher], IV[version])
    sock.write(bytes(records * TLS_MAX_PLAINTEXT), record_size=TLS_MAX_PLAINTEXT)
    segs = sock.tcp.new_segments()
    start = await tb.cycles()
    await sock.send_segments(segs, flush=False)
    record_bits = 8 * (sock.tcp.write_seq - 1)
    for _ in segs:
        await tb.wire.recv(0)
    cycles = await tb.cycles() - start
    await sock.close()
    await dev.close()
    return {"records": records, "record_size": TLS_MAX_PLAINTEXT, "mss": mss, "cycles": cycles,
            "bits_per_cycle": round(record_bits / cycles, 3)}


try:
    import cocotb
except ImportError:          # the model path needs no simulator
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def bench(dut):
        from tlsnic.cosim.tb import TB
        setup = json.loads(os.environ["TLSNIC_BENCH_SETUP"])
        tb = TB(dut)
        results = {}

        async def make():
            tb.use_memory(HostMemory())
            counter = DmaCounter(tb.memory.space)
            tb.dma.read_if.target = counter
            tb.dma.write_if.target = counter
            await tb.reset()
            return tb.bus, tb.wire, counter

        _, _, counter = await make()
        dev = Device(tb.bus)
        await dev.open(tx_log=2, rx_log=2)
        has_tls_tx = bool(dev.caps.tls & CAP_TLS_TX)
        await dev.close()
        if not has_tls_tx:
            # TODO(issue 4): the TLS TX engine is being built (hdl/tls/); until
            # the card reports CAP_TLS_TX every session here would be a
            # software one, which measures nothing about the engine.
            results["throughput"] = None
            results["skipped"] = "the gateware reports no CAP_TLS_TX: no TLS TX engine yet"
        else:
            _, _, counter = await make()              # a reset card for each measurement
            results["throughput"] = await _tls_throughput(
                tb, counter, mss=setup["mss"], version=setup["version"], cipher=setup["cipher"])
            results.update(await retransmit_figures(
                make, records=setup["records"], seed=setup["seed"],
                loss_rates=tuple(setup["loss_rates"]), mss=setup["mss"],
                version=setup["version"], cipher=setup["cipher"]))
        with open(os.environ["TLSNIC_RESULTS"], "w") as f:
            json.dump(results, f)


# --- command line ---------------------------------------------------------------------------

def _print_table(figures):
    setup = figures["setup"]
    print(f"TLS TX bench on {figures['simulator']}: {setup['records']} records of "
          f"{setup['record_size']} B, TLS {setup['version']} {setup['cipher']}, "
          f"MSS {setup['mss']}, seed {setup['seed']}")
    if figures.get("skipped"):
        print(f"skipped: {figures['skipped']}")
        return
    if figures.get("throughput"):
        t = figures["throughput"]
        print(f"throughput: {t['bits_per_cycle']} bits/clock ({t['cycles']} cycles)")
    print(f"{'loss':>5} {'strategy':>8} {'rexmit B':>9} {'extra DMA rd':>12} {'per rexmit B':>12} "
          f"{'extra DMA wr':>12} {'ooo':>5} {'dumps':>6} {'dump B':>8}")
    for loss, row in figures["summary"].items():
        for name, f in row.items():
            print(f"{loss:>5} {name:>8} {f['rexmit_payload_bytes']:>9} "
                  f"{f['extra_dma_read_bytes']:>12} {f['extra_dma_read_per_rexmit_byte']!s:>12} "
                  f"{f['extra_dma_write_bytes']:>12} {f['tx_tls_ooo']:>5} "
                  f"{f['dump_packets']:>6} {f['dump_bytes']:>8}")
    bad = [name for name, r in figures["runs"].items() if not r["wire_ok"]]
    print("wire: every retransmit identical, stream decrypts" if not bad
          else f"WIRE CHECK FAILED in {', '.join(bad)}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tlsnic bench tx", description=__doc__.splitlines()[0])
    parser.add_argument("--sim", choices=("model", "verilator"), default="model")
    parser.add_argument("--records", type=int, default=128, help="16 KB records per run")
    parser.add_argument("--seed", type=int, default=1, help="seeds the loss pattern")
    parser.add_argument("--mss", type=int, default=1448)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = run(args.sim, records=args.records, seed=args.seed, mss=args.mss)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        _print_table(figures)
    runs = figures.get("runs", {})
    return 0 if all(r["wire_ok"] for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
