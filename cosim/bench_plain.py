"""Plain-path throughput of the gateware, measured in simulation.

TX: a ring full of descriptors is written to host memory and announced with a
single doorbell, so the driver's CSR traffic does not pace the card; the
figure is frame bits put on the wire per clock, from the doorbell to the last
``tlast``. RX: RX buffers are posted, then frames arrive back to back; the
figure is frame bits accepted per clock from the first beat to the last
completion written. Frame counts are large against the 16 KiB packet FIFO, so
both are steady-state rates including descriptor fetch and completion writes.

Also reported: simulated cycles per second of wall-clock time (Verilator),
measured over the whole run.
"""

import json
import os
import time

import cocotb
from cocotb.triggers import ClockCycles

from tlsnic.abi import TxDescriptor, TxOpcode, TxFlags, Queue, QueueReg, pack
from tlsnic.cosim.tb import TB, CLOCK_NS
from tlsnic.driver.device import Device

SIZES = (64, 1500, 9000)


def _frame(size, seed):
    """A TCP/IPv4 frame of exactly ``size`` bytes."""
    from scapy.all import Ether, IP, TCP, Raw
    payload = bytes((seed + i) & 0xFF for i in range(size - 54))
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1000, dport=443)
                 / Raw(payload))


async def _bench_tx(tb, size, count):
    dev = Device(tb.bus)
    await dev.open(tx_log=10, rx_log=4)
    frame = _frame(size, 1)
    buf = tb.memory.alloc(len(frame))
    await tb.memory.write(buf, frame)
    ring = dev.txq
    for i in range(count):
        desc = pack(TxDescriptor, opcode=TxOpcode.PACKET, flags=TxFlags.CSUM_IP | TxFlags.CSUM_L4,
                    length=len(frame), addr=buf)
        await tb.memory.write(ring.slot_addr(i), desc)
    sink = tb.tx[0]
    start = await tb.cycles()
    await tb.bus.write32(Queue.TXQ + QueueReg.PROD, count)
    for _ in range(count):
        await sink.recv()
    cycles = await tb.cycles() - start
    tb.memory.free(buf)
    # Let the last completions land before the next reset.
    await ClockCycles(tb.dut.clk, 200)
    return {"frames": count, "bytes": size, "cycles": cycles,
            "bits_per_cycle": round(8 * size * count / cycles, 3)}


async def _bench_rx(tb, size, count):
    dev = Device(tb.bus)
    await dev.open(tx_log=4, rx_log=10, use_irq=False)
    frame = _frame(size, 2)
    source = tb.rx[0]
    start = await tb.cycles()
    for _ in range(count):
        await source.send(frame)
    rxcq_prod = Queue.RXCQ + QueueReg.PROD
    # Poll the completion producer sparsely: the CSR reads are not on the data path.
    while (await tb.bus.read32(rxcq_prod)) != count:
        await ClockCycles(tb.dut.clk, 64)
    cycles = await tb.cycles() - start
    return {"frames": count, "bytes": size, "cycles": cycles,
            "bits_per_cycle": round(8 * size * count / cycles, 3)}


@cocotb.test()
async def bench(dut):
    tb = TB(dut)
    results = {"tx": {}, "rx": {}}
    wall = time.perf_counter()
    cycles0 = await tb.cycles()
    for size in SIZES:
        count = max(32, min(400, 300_000 // size))
        await tb.reset()
        results["tx"][str(size)] = await _bench_tx(tb, size, count)
        await tb.reset()
        results["rx"][str(size)] = await _bench_rx(tb, size, count)
    wall = time.perf_counter() - wall
    total = await tb.cycles() - cycles0
    results["sim"] = {"cycles": total, "seconds": round(wall, 2),
                      "cycles_per_second": round(total / wall)}
    with open(os.environ["TLSNIC_RESULTS"], "w") as f:
        json.dump(results, f)


def run(sim=None):
    """Build the NIC, run the bench, return the figures."""
    from tlsnic.cosim.build import nic_design
    from tlsnic.cosim.runner import CocotbRun
    run = CocotbRun(nic_design(), sim=sim, waves=False)
    test_dir = run.build_dir / f"bench-plain-{os.getpid()}"
    test_dir.mkdir(parents=True, exist_ok=True)
    out = test_dir / "results.json"
    run.test("tlsnic.cosim.bench_plain", test_dir=test_dir,
             extra_env={"TLSNIC_RESULTS": str(out)})
    figures = json.loads(out.read_text())
    figures["simulator"] = run.sim
    figures["clock_ns"] = CLOCK_NS
    return figures
