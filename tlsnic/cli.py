"""The ``tlsnic`` command.

::

    tlsnic sim   [--sim model|verilator|icarus] [--scenario NAME ...] [--waves] [--list]
    tlsnic bench plain [--json] [--sim verilator|icarus]
    tlsnic bench tx    [--json] [--sim model|verilator] [--records N] [--seed S] [--mss N]
    tlsnic bench rx    [--json] [--sim verilator|model] [--records N] [--seed S] [--mss N]
    tlsnic bench gcm   [--json]
    tlsnic synth --core gcm [--device LFE5UM5G-85F] [--json]
    tlsnic synth --board NAME|list [--json OUT] [--out DIR] [--core-mhz F] [--seed N[,N...]] [--placer P] [--no-tmdriv] [--heatmap]
    tlsnic replay CAPTURE [--keylog FILE] [--psk HEX] [--sim model|verilator|icarus]
                          [--direction rx|tx|both] [--json OUT] [--waves]
    tlsnic demo
"""

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _cmd_sim(args):
    from .cosim.scenarios import SCENARIOS, run_on_model
    if args.list:
        for name, fn in SCENARIOS.items():
            doc = (fn.__doc__ or "").strip().splitlines()
            print(f"{name:22} {doc[0] if doc else ''}")
        return 0
    names = args.scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"tlsnic sim: unknown scenario(s) {', '.join(unknown)}; see `tlsnic sim --list`",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    from .cosim.scenarios import MULTI_PORT
    if args.sim == "model":
        results = {n: run_on_model(n) for n in names}
    else:
        from .cosim.cocotb_scenarios import run_on_gateware
        # One simulation per card shape: most scenarios need one port, some more.
        results = {}
        for ports in sorted({MULTI_PORT.get(n, 1) for n in names}):
            batch = [(n, n, {}) for n in names if MULTI_PORT.get(n, 1) == ports]
            results.update(run_on_gateware(batch, ports=ports, sim=args.sim, waves=args.waves,
                                           tag=f"cli{ports}"))
    failures = 0
    print(f"{'scenario':22} {'frames out':>10} {'frames in':>9} {'tx cpl':>7}  vs model")
    for name in names:
        got = results[name]
        if "error" in got:
            failures += 1
            print(f"{name:22} ERROR\n{got['error']}")
            continue
        verdict = "-" if args.sim == "model" else (
            "same" if got == run_on_model(name) else "DIFFERS")
        failures += verdict == "DIFFERS"
        wire = sum(len(v) for v in got.get("wire", {}).values())
        received = len(got.get("rx", [])) + sum(len(v) for v in got.get("rx_by_port", {}).values())
        print(f"{name:22} {wire:>10} {received:>9} "
              f"{len(got.get('tx_completions', [])):>7}  {verdict}")
    print(f"{len(names)} scenario(s) on {args.sim} in {time.perf_counter() - t0:.1f} s, "
          f"{failures} failure(s)")
    return 1 if failures else 0


def _cmd_bench(args):
    if args.what == "tx":
        from .cosim import bench_tls_tx
        sim = "model" if args.sim == "default" else args.sim
        return bench_tls_tx.main(args.extra + ["--sim", sim] + (["--json"] if args.json else []))
    if args.what == "rx":
        from .cosim import bench_tls_rx
        sim = "verilator" if args.sim == "default" else args.sim
        return bench_tls_rx.main(args.extra + ["--sim", sim] + (["--json"] if args.json else []))
    if args.sim == "model":
        print(f"tlsnic bench {args.what}: measures the gateware; --sim model is for `bench tx`",
              file=sys.stderr)
        return 2
    if args.what == "plain":
        from .cosim.bench_plain import run
        figures = run(sim=None if args.sim == "default" else args.sim)
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            print(f"plain path, {figures['simulator']}, 64-bit datapath")
            print(f"{'frame':>6} {'TX bits/clk':>12} {'RX bits/clk':>12}")
            for size in figures["tx"]:
                print(f"{size:>6} {figures['tx'][size]['bits_per_cycle']:>12} "
                      f"{figures['rx'][size]['bits_per_cycle']:>12}")
            print(f"simulation: {figures['sim']['cycles_per_second']} cycles/s")
        return 0
    if args.what == "gcm":
        from . import bench_gcm
        return bench_gcm.main(args.extra + (["--json"] if args.json else []))
    return 2


def _cmd_synth(args):
    if args.board:
        from . import synth_board
        return synth_board.main(["--board", args.board] + args.extra
                                + (["--json", args.json] if args.json else []))
    if args.core:
        from . import synth_core
        return synth_core.main(["--core", args.core] + args.extra + (["--json"] if args.json else []))
    print("tlsnic synth: give --board NAME (--board list shows them) or --core NAME (see --help)",
          file=sys.stderr)
    return 2


def _cmd_replay(args):
    from .cosim import replay
    return replay.run_cli(args)


#: The capture ``make demo`` replays: OpenSSL on loopback, TLS 1.3, both
#: directions, records across many segments (``pcap-fixtures/make_real.py``).
DEMO_CAPTURE = "real-tls13"


def _cmd_demo(args):
    """The main job: a real TLS capture through the gateware, record by record."""
    fixtures = Path(__file__).resolve().parent.parent / "pcap-fixtures"
    capture, keylog = fixtures / f"{DEMO_CAPTURE}.pcap", fixtures / f"{DEMO_CAPTURE}.keys"
    print(f"tlsnic demo = tlsnic replay pcap-fixtures/{capture.name} "
          f"--keylog pcap-fixtures/{keylog.name} --sim verilator\n"
          "a loopback capture of Python's ssl (OpenSSL) with its key log, through the NIC's\n"
          "receive and transmit paths on the gateware, every record checked against an\n"
          "independent decryption and every transmitted byte against the capture.\n")
    ns = argparse.Namespace(capture=str(capture), keylog=[str(keylog)], psk=None, sim="verilator",
                            direction="both", strategy="dump", json=None, waves=False)
    return _cmd_replay(ns)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tlsnic", description="inline-TLS NIC: gateware, driver, co-simulation")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sim", help="run driver scenarios on the model or the gateware")
    p.add_argument("--sim", choices=("model", "verilator", "icarus"), default="verilator")
    p.add_argument("--scenario", action="append", help="scenario name (repeatable); default: all")
    p.add_argument("--waves", action="store_true", help="record waves (FST under Verilator)")
    p.add_argument("--list", action="store_true", help="list scenarios")
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("bench", help="measure throughput in simulation")
    p.add_argument("what", choices=("plain", "tx", "rx", "gcm"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--sim", choices=("default", "model", "verilator", "icarus"), default="default",
                   help="plain: verilator (default) or icarus; tx: model (default) or verilator; "
                        "rx: model")
    p.set_defaults(func=_cmd_bench, passthrough=True)

    p = sub.add_parser("synth", help="synthesise with YoWASP (yosys + nextpnr-ecp5)")
    from .synth_core import CORES
    p.add_argument("--core", choices=sorted(CORES),
                   help="one core alone, its ports between registers (tlsnic.hdl.harness)")
    p.add_argument("--board", help="a whole board build; 'list' shows the boards")
    p.add_argument("--json", nargs="?", const="-",
                   help="figures as JSON: to stdout, or (with --board) to the file OUT")
    p.set_defaults(func=_cmd_synth, passthrough=True)

    p = sub.add_parser("replay", help="replay a TLS capture (pcap/pcapng + key log) through the NIC")
    p.add_argument("capture", help="pcap or pcapng file (may be gzip-compressed)")
    p.add_argument("--keylog", action="append", default=[], metavar="FILE",
                   help="NSS key log (repeatable); pcapng decryption secrets are read too")
    p.add_argument("--psk", metavar="HEX", help="pre-shared key of TLS 1.2 PSK suites")
    p.add_argument("--sim", choices=("model", "verilator", "icarus"), default="model")
    p.add_argument("--direction", choices=("rx", "tx", "both"), default="both",
                   help="rx: captured frames into the card's receive side; tx: the driver's "
                        "transmit path against the captured wire bytes")
    p.add_argument("--strategy", choices=("dump", "seek"), default="dump",
                   help="how the driver repositions the card for out-of-sequence segments")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON ('-': to stdout)")
    p.add_argument("--waves", action="store_true", help="record waves (gateware only)")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("demo", help="the main job: run it and read the report")
    p.set_defaults(func=_cmd_demo)

    # bench tx / bench gcm / synth --core take options of their own: pass unknown ones on.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
