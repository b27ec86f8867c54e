"""Board tops: every supported board elaborates and yields its build plan (no
toolchain run); the PLL solver; the synth report's verdict per clock domain.
The full YoWASP build of the default board is marked slow."""

import json
import re
import subprocess
import time

import pytest
from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib.memory import Memory

from tlsnic import synth_board
from tlsnic.hdl.board.pll import PllOutput, VCO_MAX, VCO_MIN, solve_pll
from tlsnic.hdl.board.top import BOARD_NIC, BOARDS, DEFAULT_BOARD, BoardTop


@pytest.fixture(scope="module", params=sorted(BOARDS))
def board_plan(request):
    platform, plan, name = synth_board.plan(request.param)
    return request.param, platform, plan, name


def _site(platform, pin):
    """The FPGA site of a resource pin name (``"A6"``, or a connector's ``"P9_0:26"``)."""
    if ":" not in pin:
        return pin
    conn, contact = pin.split(":")
    name, number = conn.rsplit("_", 1)
    return platform.connectors[name, int(number)].mapping[contact]


def test_every_board_top_produces_its_build_plan(board_plan):
    board, platform, plan, name = board_plan
    spec = BOARDS[board]
    files = plan.files
    for suffix in (".il", ".lpf", ".ys"):
        assert f"{name}{suffix}" in files
    lpf = files[f"{name}.lpf"]
    script = files[f"build_{name}.sh"]
    # Pins: the UART and every Ethernet port's RGMII group, on the board's sites.
    for p in range(spec.eth_ports):
        res = platform.lookup("eth_rgmii", p)
        for sub in res.ios:
            if sub.name in ("mdio", "mdc", "int"):   # management interface not used (PHY straps)
                continue
            for pin in sub.ios[0].names:
                assert f'SITE "{_site(platform, pin)}"' in lpf, (board, sub.name, pin)
    uart = platform.lookup("uart", 0)
    for sub in uart.ios:
        assert f'SITE "{_site(platform, sub.ios[0].names[0])}"' in lpf
    # Clock constraints: the PLL's domains and each PHY receive clock.
    freqs = dict(re.findall(r'FREQUENCY (?:NET|PORT) "([^"]+)" ([\d.]+) HZ', lpf))
    domains = {synth_board.domain_of(net): float(f) for net, f in freqs.items()
               if not net.startswith(f"{platform.default_clk}_0__")}     # the board's oscillator
    expected = {"sync": spec.core_mhz * 1e6, "rgmii_tx": 125e6, **{f"rgmii_rx{p}": 125e6 for p in range(spec.eth_ports)}}
    if spec.tx_clk_shift:
        expected["rgmii_tx90"] = 125e6
    assert domains == expected
    # The flow the build would run.
    assert "synth_ecp5 -abc9" in files[f"{name}.ys"]
    # ... with the GCM engine's replicated enables kept apart (else one 14 k-fan-out net)
    assert "setattr -set keep 1 a:keep %ci1:+[Q] t:$dff %i" in files[f"{name}.ys"]
    assert "--timing-allow-fail" in script and f"--report {name}.report.json" in script
    # ... stopping after Yosys when the netlist cannot fit the device
    assert synth_board.fit_check(platform.device) in files[f"{name}.ys"]
    assert "\nselect -assert-max 208 t:DP16KD\n" in synth_board.fit_check("LFE5UM5G-85F")
    device_opt = {"LFE5UM5G-85F": "--um5g-85k", "LFE5UM-45F": "--um-45k"}[platform.device]
    assert device_opt in script
    # The NIC inside is the stock one, with the board's port count.
    rtlil = files[f"{name}.il"]
    assert "nic.tls_tx" in rtlil or "\\nic.tls_tx" in rtlil or "tls_tx" in rtlil
    assert rtlil.count("EHXPLLL") >= 1
    # The core's reset and the GCM engine's stall on global lines (nextpnr
    # promotes only clocks by itself; hdl/fabric.py).
    assert re.search(r"cell \\DCCA \\rst_sync_dcca", rtlil)
    assert re.search(r"cell \\DCCA \\gcm_adv_dcca", rtlil)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_board_top_passes_nic_arguments_through():
    top = BoardTop(DEFAULT_BOARD, nic={"tx_contexts": 16, "rx_contexts": 4})
    assert top.nic_params == {**BOARD_NIC, "tx_contexts": 16, "rx_contexts": 4, "ports": 1}
    assert BoardTop(DEFAULT_BOARD).nic_params == {**BOARD_NIC, "ports": 1}
    assert BOARD_NIC["rx_contexts"] and BOARD_NIC["shared_gcm"]     # both TLS engines


@pytest.mark.parametrize("f_in,outs", [
    (100e6, [125e6, 125e6, 125e6]),
    (100e6, [100e6, 125e6, 125e6]),
    (30e6, [125e6, 125e6]),          # ButterStick's 30 MHz oscillator
    (100e6, [150e6, 125e6, 125e6]),
])
def test_pll_solver_hits_frequencies_within_vco_range(f_in, outs):
    cfg = solve_pll(f_in, [PllOutput(f"d{i}", f, phase=90 * (i == 2)) for i, f in enumerate(outs)])
    assert VCO_MIN <= cfg.vco <= VCO_MAX
    for i, f in enumerate(outs):
        assert abs(cfg.achieved(i) - f) / f < 0.005
    with pytest.raises(ValueError):
        solve_pll(100e6, [PllOutput("x", 1e3)])


def _report(achieved, rx_constraint=125.0):
    # Clock names as nextpnr reported them for ecpix5-85 (9825a08).
    return {"utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640}},
            "fmax": {"$glbnet$bridge.clk": {"achieved": achieved, "constraint": 125.0},
                     "$glbnet$rgmii_rx0.rgmii_rx0_clk": {"achieved": 200.0,
                                                        "constraint": rx_constraint},
                     "$glbnet$mac0.ps_tx_ok.rgmii_tx_clk": {"achieved": 137.5, "constraint": 125.0},
                     "$glbnet$pll.rgmii_tx90_clk": {"achieved": 657.0, "constraint": 125.0}}}


@pytest.mark.parametrize("net,domain", [
    ("$glbnet$bridge.clk", "sync"), ("pll.pll_sync_clk", "sync"),
    ("$glbnet$rgmii_rx0.rgmii_rx0_clk", "rgmii_rx0"), ("eth_rgmii_1__rx_clk__io", "rgmii_rx1"),
    ("$glbnet$mac0.ps_tx_ok.rgmii_tx_clk", "rgmii_tx"), ("pll.pll_rgmii_tx90_clk", "rgmii_tx90"),
])
def test_clock_nets_name_their_domains(net, domain):
    assert synth_board.domain_of(net) == domain


def test_synth_judges_a_domain_nextpnr_left_unconstrained_by_its_target(tmp_path):
    """A constraint nextpnr could not attach leaves the domain at its 12 MHz
    default: 200 MHz then 'passes' unless judged against the 125 MHz target."""
    targets = BOARDS[DEFAULT_BOARD].clock_targets(core_mhz=100)
    assert targets["rgmii_rx0"] == 125.0 and targets["sync"] == 100.0
    fig = synth_board.figures(_report(110.0, rx_constraint=12.0), board=DEFAULT_BOARD, device="x",
                              elapsed=1.0, out_dir=tmp_path, command="", targets=targets)
    assert fig["domains"]["rgmii_rx0"]["met"] and "12.0 MHz" in fig["domains"]["rgmii_rx0"]["note"]
    fig = synth_board.figures(_report(110.0, rx_constraint=12.0) | {"fmax": {}}, board=DEFAULT_BOARD,
                              device="x", elapsed=1.0, out_dir=tmp_path, command="", targets=targets)
    assert not fig["timing_met"] and fig["domains"]["sync"]["note"] == "not in nextpnr's report"
    slow = _report(110.0, rx_constraint=12.0)
    slow["fmax"]["$glbnet$rgmii_rx0.rgmii_rx0_clk"]["achieved"] = 90.0
    fig = synth_board.figures(slow, board=DEFAULT_BOARD, device="x", elapsed=1.0,
                              out_dir=tmp_path, command="", targets=targets)
    assert not fig["domains"]["rgmii_rx0"]["met"]


def test_synth_fails_naming_the_domain_when_timing_is_not_met(monkeypatch, capsys, tmp_path):
    def fake_build(board, out_dir=None, **kw):
        return synth_board.figures(_report(97.3), board=board, device="LFE5UM5G-85F-8BG554",
                                   elapsed=1.0, out_dir=tmp_path, command=kw.get("command", ""))
    monkeypatch.setattr(synth_board, "build", fake_build)
    out = tmp_path / "fig.json"
    assert synth_board.main(["--board", DEFAULT_BOARD, "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert "timing not met in clock domain 'sync'" in err and "97.3 MHz" in err
    fig = json.loads(out.read_text())
    assert fig["domains"]["rgmii_rx0"]["met"] and not fig["domains"]["sync"]["met"]
    assert fig["timing_met"] is False


def test_synth_passes_when_every_domain_meets_its_constraint(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(synth_board, "build", lambda board, out_dir=None, **kw: synth_board.figures(
        _report(131.0), board=board, device="x", elapsed=1.0, out_dir=tmp_path, command=""))
    assert synth_board.main(["--board", DEFAULT_BOARD]) == 0
    assert "sync" in capsys.readouterr().out


def test_synth_says_what_does_not_fit(monkeypatch, capsys, tmp_path):
    """A failed nextpnr run is reported with its error and the utilisation it
    measured, not as a traceback (the logs are the tools' own format)."""
    name = "tlsnic_" + DEFAULT_BOARD.replace("-", "_")
    (tmp_path / f"{name}.rpt").write_text("Yosys log\n")
    (tmp_path / f"{name}.tim").write_text(
        "Info: Device utilisation:\n"
        "Info: \t          TRELLIS_IO:      17/    365     4%\n"
        "Info: \t              DP16KD:     212/    208   101%\n"
        "Info: \t        TRELLIS_COMB:   87488/  83640   104%\n"
        "ERROR: Unable to place cell 'window.mem.0.2', no BELs remaining to implement cell type 'DP16KD'\n")
    failure = synth_board._diagnose(tmp_path, name)
    assert failure.stage == "nextpnr" and "DP16KD" in failure.error
    assert failure.utilisation["TRELLIS_COMB"] == (87488, 83640)

    def fail(board, out_dir=None, **kw):
        raise failure
    monkeypatch.setattr(synth_board, "build", fail)
    out = tmp_path / "figures.json"
    assert synth_board.main(["--board", DEFAULT_BOARD, "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert "nextpnr failed" in err and "TRELLIS_COMB" in err and "DOES NOT FIT" in err
    blob = json.loads(out.read_text())
    assert blob["failed"] == "nextpnr" and blob["utilisation"]["DP16KD"] == {"used": 212, "available": 208}


class _TwoBlockRams(Elaboratable):
    """Two 1 k x 16 memories, written and read at one address each: two DP16KD
    after ``synth_ecp5``."""

    def __init__(self):
        self.addr = [Signal(10, name=f"addr{n}") for n in range(2)]
        self.data = [Signal(16, name=f"data{n}") for n in range(2)]
        self.q = [Signal(16, name=f"q{n}") for n in range(2)]
        self.ports = [*self.addr, *self.data, *self.q]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        for n in range(2):
            m.submodules[f"mem{n}"] = mem = Memory(shape=16, depth=1024, init=[])
            w, r = mem.write_port(), mem.read_port()
            m.d.comb += [w.addr.eq(self.addr[n]), w.data.eq(self.data[n]), w.en.eq(1),
                         r.addr.eq(self.addr[n]), self.q[n].eq(r.data)]
        return m


@pytest.mark.parametrize("block_rams", [1, 2])
def test_a_netlist_that_cannot_fit_stops_after_yosys_saying_what_overflows(tmp_path, block_rams):
    """Yosys's netlist is checked against the device before nextpnr runs (it
    would place a design at 145 % without end), and the failure names the
    resource with its count."""
    design = _TwoBlockRams()
    (tmp_path / "tiny.il").write_text(rtlil.convert(design, name="tiny", ports=design.ports))
    capacity = {**synth_board.ECP5_CAPACITY["85F"], "DP16KD": block_rams}
    script = f"read_rtlil tiny.il; synth_ecp5 -top tiny\n{synth_board.fit_check(capacity)}\n"
    (tmp_path / "tiny.ys").write_text(script)
    run = subprocess.run([synth_board._tool_env()["YOSYS"], "-q", "-l", "tiny.rpt", "tiny.ys"],
                         cwd=tmp_path, capture_output=True)
    if block_rams == 2:
        assert run.returncode == 0, (tmp_path / "tiny.rpt").read_text()[-2000:]
        return
    assert run.returncode != 0
    failure = synth_board._diagnose(tmp_path, "tiny")
    assert failure.stage == "yosys"
    # Every resource counted, the one over named.
    assert failure.utilisation["DP16KD"] == (2, 1)
    assert failure.utilisation.keys() == {"DP16KD", "MULT18X18D", "TRELLIS_FF", "TRELLIS_COMB"}
    assert failure.error == "the netlist does not fit the device: DP16KD 2 of 1"


def test_placement_watch_drops_a_seed_whose_placement_left_a_domain_far_too_slow():
    """logicbone-85 at d5a9bdd, seed 2: ``rgmii_rx0`` placed at 85.57 MHz."""
    placed = [
        "Info: Max frequency for clock                  '$glbnet$pll.rgmii_tx90_clk': 956.94 MHz (PASS at 125.00 MHz)",
        "Info: Max frequency for clock          '$glbnet$mac0.ps_tx_ok.rgmii_tx_clk': 110.00 MHz (FAIL at 125.00 MHz)",
        "Info: Max frequency for clock '$glbnet$mac0.ps_rx_fcs_errors.rgmii_rx0_clk': 85.57 MHz (FAIL at 125.00 MHz)",
    ]
    watch = synth_board.PlacementWatch()
    assert watch.feed(placed[0]) is None and watch.feed(placed[1]) is None     # 88 %: routing may save it
    assert watch.feed(placed[2]) == ("placement left rgmii_rx0 at 85.57 MHz against 125, "
                                     "below 80%: not routed")
    # After routing has begun, the figures are the router's business.
    watch = synth_board.PlacementWatch()
    assert watch.feed("Info: Routing globals...") is None
    assert watch.feed(placed[2]) is None


# router2's overused wires per iteration, ecpix5-85 at a449a28, seed 3: down to
# 353 at iteration 23, then up without end (stopped at 52).
_SEED3_OVERUSED = [84460, 49441, 28558, 16532, 10382, 7056, 4761, 3629, 2718, 2048, 1572, 1254,
                   1089, 892, 728, 617, 596, 523, 473, 434, 397, 355, 353, 365, 386, 406, 411,
                   399, 447, 476, 496, 532, 568, 549, 541, 566, 591, 591, 690, 696, 671, 704,
                   772, 781, 851, 920, 939, 1046, 1154, 1200, 1274, 1295]


def _iteration_line(it, overused):
    return f"Info:     iter={it} wires=1164673 overused={overused} overuse={overused} archfail=NA"


def test_router_watch_stops_a_run_that_climbs_away_from_its_minimum():
    watch = synth_board.RouterWatch()
    verdicts = [(it, watch.feed(_iteration_line(it, n))) for it, n in enumerate(_SEED3_OVERUSED, 1)]
    first = next(it for it, v in verdicts if v)
    assert first == 49         # 1,154 > 3 x 353, 26 iterations after the minimum
    assert verdicts[first - 1][1] == ("router2 ran away: 353 overused wires at its best "
                                      "(iteration 23), 1154 at iteration 49")
    # A run that dips, climbs a while (2.5 x) and converges is left alone, and
    # lines that are not router2's iterations are ignored.
    watch = synth_board.RouterWatch()
    curve = [5000, 900, 160] + [400] * 30 + [200, 20, 0]
    assert not any(watch.feed(_iteration_line(it, n)) for it, n in enumerate(curve, 1))
    assert watch.feed("Info: Max frequency for clock '$glbnet$bridge.clk': 33.91 MHz") is None
    # One that turns back from thousands (ecpix5-85 at 5488415, seed 7) has
    # run away once it is a quarter up five iterations on.
    watch = synth_board.RouterWatch()
    curve = [83594, 49446, 29126, 17368, 11009, 8007, 6259, 4968, 4378, 3765, 3622, 3693, 3705,
             4001, 4210, 4542, 4859, 5172, 5728]
    verdicts = [watch.feed(_iteration_line(it, n)) for it, n in enumerate(curve, 1)]
    assert verdicts.index(next(v for v in verdicts if v)) + 1 == 16
    assert verdicts[15] == ("router2 ran away: 3622 overused wires at its best (iteration 11), "
                            "4542 at iteration 16")
    # One that flattens out high (ecpix5-85 at a449a28, seed 5, then level)
    # has stalled after 40 iterations without a new minimum.
    watch = synth_board.RouterWatch()
    curve = [82738, 49945, 30347, 18864, 12777, 9322, 7687, 6583, 5816, 5525, 5427] + [5900] * 40
    verdicts = [watch.feed(_iteration_line(it, n)) for it, n in enumerate(curve, 1)]
    assert verdicts.index(next(v for v in verdicts if v)) + 1 == 51
    assert verdicts[50] == ("router2 stalled: 5427 overused wires at its best (iteration 11), "
                            "none fewer in 40 iterations")
    # The end game (ecpix5-85 at 0b9e6da, seed 2, --no-tmdriv, iterations
    # 84-128): a handful of wires traded back and forth is not a run away,
    # however many times its minimum; 150 iterations (of seconds each)
    # without fewer than 2 stall.
    watch = synth_board.RouterWatch()
    curve = [3, 3, 6, 3, 3, 2, 2, 4, 2, 2, 2, 2, 4, 3, 3, 3, 3, 3, 3, 4, 4, 2, 3, 2, 2, 4, 5, 6, 7,
             8, 6, 9, 5, 7, 6, 4, 4, 3, 7, 7, 6, 5, 12, 16, 15]
    verdicts = [watch.feed(_iteration_line(it, n)) for it, n in enumerate(curve, 84)]
    assert not any(verdicts)
    verdicts = [watch.feed(_iteration_line(it, 35)) for it in range(129, 270)]
    assert verdicts.index(next(v for v in verdicts if v)) + 129 == 258
    assert next(v for v in verdicts if v).startswith("router2 stalled: 2 overused wires at its best (iteration 108)")


_FAKE_YOSYS = """\
import sys
from pathlib import Path
Path(sys.argv[-1]).with_suffix(".json").write_text("{}")
with open("yosys.runs", "a") as f:
    f.write("run\\n")
"""

_FAKE_NEXTPNR = """\
import json, os, shutil, sys, time
args = sys.argv[1:]
opt = lambda k: args[args.index(k) + 1]
mode = dict(kv.split(":") for kv in os.environ["FAKE_SEEDS"].split(","))[opt("--seed")]
if mode == "misplaced":         # a domain far too slow after placement: the watch must stop it
    with open(opt("--log"), "w") as log:
        log.write("Info: Max frequency for clock '$glbnet$bridge.clk': 12.00 MHz (FAIL at 25.00 MHz)\\n")
    time.sleep(60)
    sys.exit(3)
with open(opt("--log"), "w") as log:
    log.write("Info: Device utilisation:\\nInfo: \\t        TRELLIS_COMB:   61234/  83640    73%\\n")
    curve = [1000, 400, 100, 50] + ([60 * i for i in range(2, 30)] if mode == "runaway" else [20, 0])
    for i, n in enumerate(curve, 1):
        log.write(f"Info:     iter={i} wires=1000 overused={n} overuse={n} archfail=NA\\n")
    log.flush()
    if mode == "runaway":
        time.sleep(60)          # router2 would go on: the watch must stop it
        sys.exit(3)
if mode == "hang":
    open("nextpnr.pid", "w").write(str(os.getpid()))
    time.sleep(60)
shutil.copy(os.environ["FAKE_REPORT_" + mode], opt("--report"))
with open(opt("--textcfg"), "w") as cfg:
    cfg.write("config for seed " + opt("--seed"))
"""
_FAKE_ECPPACK = """\
import sys
args = sys.argv[1:]
cfg = open(args[args.index("--input") + 1]).read()
open(args[args.index("--bit") + 1], "w").write("bitstream from " + cfg)
"""


@pytest.fixture
def fake_toolchain(tmp_path, monkeypatch):
    """Yosys, nextpnr and ecppack stand-ins, so the seed sweep runs in seconds:
    ``FAKE_SEEDS`` says per seed whether nextpnr runs away (and must be
    stopped), routes missing timing (``slow``) or routes meeting it (``met``)."""
    import sys
    tools = tmp_path / "tools"
    tools.mkdir()
    for var, body in (("YOSYS", _FAKE_YOSYS), ("NEXTPNR_ECP5", _FAKE_NEXTPNR), ("ECPPACK", _FAKE_ECPPACK)):
        exe = tools / var.lower()
        exe.write_text(f"#!{sys.executable}\n{body}")
        exe.chmod(0o755)
        monkeypatch.setenv(var, str(exe))
    for mode, achieved in (("slow", 20.0), ("met", 31.0)):
        report = _report(achieved)
        report["fmax"]["$glbnet$bridge.clk"]["constraint"] = 25.0
        (tools / f"{mode}.json").write_text(json.dumps(report))
        monkeypatch.setenv(f"FAKE_REPORT_{mode}", str(tools / f"{mode}.json"))
    monkeypatch.setattr(synth_board, "_POLL_S", 0.05)
    return lambda modes: monkeypatch.setenv("FAKE_SEEDS", ",".join(f"{s}:{m}" for s, m in modes.items()))


def _sweep(tmp_path, seeds):
    return synth_board.build(DEFAULT_BOARD, tmp_path / "build", seeds=seeds, design=Module())


def test_synth_tries_seeds_until_one_routes_with_timing_met(fake_toolchain, tmp_path):
    fake_toolchain({2: "runaway", 3: "slow", 4: "met", 5: "met"})
    t0 = time.monotonic()
    res = _sweep(tmp_path, (2, 3, 4, 5))
    assert time.monotonic() - t0 < 30             # the run-away nextpnr was stopped, not waited for
    assert res["seed"] == 4 and res["timing_met"]
    assert [a["seed"] for a in res["attempts"]] == [2, 3, 4]
    assert res["attempts"][0]["result"].startswith("router2 ran away: 50 overused wires at its best")
    assert res["attempts"][1]["result"] == "routed, timing not met in sync"
    name = "tlsnic_" + DEFAULT_BOARD.replace("-", "_")
    out = tmp_path / "build"
    assert (out / f"{name}.bit").read_text() == "bitstream from config for seed 4"
    assert (out / f"{name}.seed2.tim").exists() and (out / f"{name}.seed3.report.json").exists()


def test_a_board_is_built_with_its_own_seeds_unless_told(fake_toolchain, tmp_path):
    first, second = BOARDS[DEFAULT_BOARD].seeds[:2]
    fake_toolchain({first: "runaway", second: "met", 99: "met"})
    res = synth_board.build(DEFAULT_BOARD, tmp_path / "build", design=Module())
    assert [a["seed"] for a in res["attempts"]] == [first, second] and res["seed"] == second
    assert _sweep(tmp_path, (99,))["seed"] == 99


def test_a_seed_whose_placement_misses_a_domain_far_is_not_routed(fake_toolchain, tmp_path):
    fake_toolchain({2: "misplaced", 3: "met"})
    t0 = time.monotonic()
    res = _sweep(tmp_path, (2, 3))
    assert time.monotonic() - t0 < 30
    assert res["seed"] == 3 and res["attempts"][0] == {
        "seed": 2, "router": "router2",
        "result": "placement left sync at 12.00 MHz against 25, below 80%: not routed"}


def test_synth_without_a_seed_meeting_timing_reports_the_last_routed_one(fake_toolchain, tmp_path):
    fake_toolchain({2: "slow", 3: "runaway"})
    res = _sweep(tmp_path, (2, 3))
    assert res["seed"] == 2 and not res["timing_met"]
    assert [a["result"][:15] for a in res["attempts"]] == ["routed, timing ", "router2 ran awa"]
    name = "tlsnic_" + DEFAULT_BOARD.replace("-", "_")
    assert (tmp_path / "build" / f"{name}.bit").read_text() == "bitstream from config for seed 2"


def test_a_second_build_of_the_same_design_keeps_the_yosys_netlist(fake_toolchain, tmp_path):
    """Yosys is deterministic: a sweep of more seeds in the same folder skips
    it, and a changed design does not."""
    fake_toolchain({2: "slow", 3: "met"})
    runs = tmp_path / "build" / "yosys.runs"
    _sweep(tmp_path, (2,))
    _sweep(tmp_path, (3,))
    assert runs.read_text().count("run") == 1
    changed = Module()
    changed.d.sync += Signal(name="other").eq(1)
    synth_board.build(DEFAULT_BOARD, tmp_path / "build", seeds=(3,), design=changed)
    assert runs.read_text().count("run") == 2


def test_a_killed_build_stops_its_nextpnr(fake_toolchain, tmp_path):
    """SIGTERM to ``tlsnic synth`` (a job killed, a CI timeout) ends the nextpnr
    it was running, not only itself."""
    import os, signal, sys
    fake_toolchain({2: "hang"})
    out = tmp_path / "build"
    script = ("from amaranth.hdl import Module\n"
              "from tlsnic import synth_board\n"
              "synth_board.stop_tools_on_sigterm()\n"
              f"synth_board.build({DEFAULT_BOARD!r}, {str(out)!r}, seeds=(2,), design=Module())\n")
    build = subprocess.Popen([sys.executable, "-c", script])
    pid_file = out / "nextpnr.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert build.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    nextpnr = int(pid_file.read_text())
    build.send_signal(signal.SIGTERM)
    assert build.wait(timeout=30) == 128 + signal.SIGTERM
    for _ in range(100):            # reaped by the build; gone once it exits
        try:
            os.kill(nextpnr, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("nextpnr outlived the build that ran it")


def test_synth_fails_clearly_when_every_seed_runs_away(fake_toolchain, tmp_path):
    fake_toolchain({2: "runaway", 7: "runaway"})
    with pytest.raises(synth_board.BuildFailed) as failed:
        _sweep(tmp_path, (2, 7))
    e = failed.value
    assert e.stage == "nextpnr" and e.error.startswith("seed 2: router2 ran away") and "; seed 7: " in e.error
    assert e.utilisation["TRELLIS_COMB"] == (61234, 83640)


@pytest.mark.slow
def test_full_build_of_the_default_board(tmp_path):
    """The whole YoWASP flow for the default board: bitstream written, timing met."""
    res = synth_board.build(DEFAULT_BOARD, tmp_path / "build")
    assert (tmp_path / "build" / f"tlsnic_{DEFAULT_BOARD.replace('-', '_')}.bit").exists()
    assert res["utilisation"]["LUT4"]["used"] > 0
    assert res["timing_met"], {d: f for d, f in res["domains"].items() if not f["met"]}


@pytest.mark.parametrize("timing_driven", [True, False])
def test_the_plan_asks_nextpnr_for_timing_driven_placement_unless_told_not_to(timing_driven):
    _, p, name = synth_board.plan(DEFAULT_BOARD, timing_driven=timing_driven, design=Module())
    nextpnr = next(l for l in p.files[f"build_{name}.sh"].splitlines() if l.startswith('"$NEXTPNR_ECP5"'))
    assert ("--no-tmdriv" in nextpnr.split()) is not timing_driven


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_the_plan_routes_with_the_boards_router_unless_told(board):
    def router(**kw):
        _, p, name = synth_board.plan(board, design=Module(), **kw)
        nextpnr = next(l for l in p.files[f"build_{name}.sh"].splitlines()
                       if l.startswith('"$NEXTPNR_ECP5"')).split()
        return nextpnr[nextpnr.index("--router") + 1]
    assert router() == BOARDS[board].router
    assert router(router="router1") == "router1" and router(router="router2") == "router2"
