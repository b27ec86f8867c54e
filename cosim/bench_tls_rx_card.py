"""TLS receive on the gateware: in-order bits per clock, and a lossy stream.

In order: one flow of 16 KB records (TLS 1.2 or 1.3, AES-GCM) arrives in
MSS-sized segments, all of them put on the wire at once (the AXI4-Stream
source sends them back to back); the RX ring holds a buffer for every frame,
so the host never holds the card up. The figure is TLS record bits (TCP
payload) divided by the clocks from the first frame offered to the last
completion written. The same frames are measured a second time with no
receive context (they pass as plain frames) to show what the receive engine
costs on top of the RX path.

Under loss: :func:`tlsnic.cosim.bench_tls_rx.loss_run`, the very run the
model does (same seeded losses, the kTLS receive driver in lock step), on the
gateware, so ``tlsnic bench rx`` reports the card's own resync behaviour.

Run: ``tlsnic bench rx`` (all of it) or
``python -m tlsnic.cosim.bench_tls_rx_card [--records N] [--mss N]`` (in
order only). Both build the card with the TLS receive engine, the same build
as ``tests/test_tls_rx_cosim.py``.
"""

import argparse
import json
import os
import sys

from tlsnic.abi import TxOpcode
from tlsnic.driver.device import Device
from tlsnic.driver.hostmem import HostMemory

from .scenarios_tls_rx_card import Flow

__all__ = ["run", "main"]

RX_CONTEXTS = 256
RECORD = 16384


async def _measure(tb, flow, *, with_context):
    dev = Device(tb.bus)
    segments = flow.segments()
    log = max(4, (len(segments) + 2).bit_length())
    await dev.open(tx_log=2, rx_log=log)
    if with_context:
        await dev.send_ctrl(TxOpcode.RX_SET_STATIC, 1, flow.static())
        await dev.flush_tx()
    frames = [flow.frame(offset, chunk) for offset, chunk in segments]
    start = await tb.cycles()
    for raw in frames:
        await tb.wire.send(raw)
    got = [await dev.recv() for _ in frames]
    cycles = await tb.cycles() - start
    decrypted = sum(f.dec_end - f.dec_start for f in got)
    if with_context:
        await dev.send_ctrl(TxOpcode.RX_FREE, 1)
        await dev.flush_tx()
    await dev.close()
    payload = sum(len(c) for _, c in segments)
    return {"frames": len(frames), "cycles": cycles, "payload_bytes": payload,
            "decrypted_bytes": decrypted, "bits_per_cycle": round(8 * payload / cycles, 3),
            "wire_bits_per_cycle": round(8 * sum(len(f) for f in frames) / cycles, 3)}


try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def bench(dut):
        from tlsnic.cosim.tb import TB
        from tlsnic.cosim.bench_tls_rx import loss_run
        setup = json.loads(os.environ["TLSNIC_BENCH_SETUP"])
        tb = TB(dut)
        results = {"in_order": {}, "loss": {}}
        for version, cipher in setup["suites"]:
            flow = Flow(0, version, cipher, [RECORD] * setup["records"], mss=setup["mss"])
            figures = results["in_order"][f"TLS {version} {cipher}"] = {}
            for name, with_context in (("tls", True), ("plain", False)):
                tb.use_memory(HostMemory())
                await tb.reset()
                figures[name] = await _measure(tb, flow, with_context=with_context)
        for loss in setup["loss_rates"]:
            tb.use_memory(HostMemory())
            await tb.reset()
            start = await tb.cycles()
            figures = await loss_run(tb.bus, tb.wire, loss=loss, records=setup["loss_records"],
                                     seed=setup["seed"], mss=setup["mss"])
            figures["cycles"] = await tb.cycles() - start
            results["loss"][str(loss)] = figures
        with open(os.environ["TLSNIC_RESULTS"], "w") as f:
            json.dump(results, f)


SUITES = (("1.2", "AES-128-GCM"), ("1.3", "AES-128-GCM"), ("1.2", "AES-256-GCM"),
          ("1.3", "AES-256-GCM"))


def run(sim="verilator", *, records=8, mss=1448, suites=SUITES, loss_rates=(), loss_records=300,
        seed=1):
    """Build (or reuse) the receive card, run the bench; return the figures.

    ``records`` records per in-order run, one run per ``(version, cipher)`` of
    ``suites``; then one :func:`~tlsnic.cosim.bench_tls_rx.loss_run` of
    ``loss_records`` records per rate of ``loss_rates``.
    """
    from tlsnic.cosim.build import nic_design
    from tlsnic.cosim.runner import CocotbRun
    from tlsnic.cosim.tb import CLOCK_NS
    setup = {"records": records, "record_size": RECORD, "mss": mss,
             "suites": [list(s) for s in suites], "loss_rates": list(loss_rates),
             "loss_records": loss_records, "seed": seed}
    runner = CocotbRun(nic_design(rx_contexts=RX_CONTEXTS), sim=sim, waves=False)
    test_dir = runner.build_dir / f"bench-tls-rx-{os.getpid()}"
    test_dir.mkdir(parents=True, exist_ok=True)
    out = test_dir / "results.json"
    runner.test("tlsnic.cosim.bench_tls_rx_card", test_dir=test_dir, extra_env={
        "TLSNIC_RESULTS": str(out), "TLSNIC_BENCH_SETUP": json.dumps(setup)})
    return {"simulator": runner.sim, "clock_ns": CLOCK_NS, "setup": setup,
            **json.loads(out.read_text())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=8)
    parser.add_argument("--mss", type=int, default=1448)
    parser.add_argument("--version", choices=("1.2", "1.3"), default="1.2")
    parser.add_argument("--cipher", choices=("AES-128-GCM", "AES-256-GCM"), default="AES-128-GCM")
    args = parser.parse_args(argv)
    print(json.dumps(run(records=args.records, mss=args.mss,
                         suites=[(args.version, args.cipher)]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
