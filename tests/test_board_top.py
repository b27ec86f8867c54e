"""Board tops: every supported board elaborates and yields its build plan (no
toolchain run); the PLL solver; the synth report's verdict per clock domain.
The full YoWASP build of the default board is marked slow."""

import json
import re
import subprocess

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
    assert "select -assert-max 208 t:DP16KD" in synth_board.fit_check("LFE5UM5G-85F")
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
    targets = BoardTop(DEFAULT_BOARD, core_mhz=100).clock_targets()
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
    assert failure.utilisation == {"DP16KD": (2, 1)}
    assert failure.error == "the netlist does not fit the device: DP16KD 2 of 1"


@pytest.mark.slow
def test_full_build_of_the_default_board(tmp_path):
    """The whole YoWASP flow for the default board: bitstream written, timing met."""
    res = synth_board.build(DEFAULT_BOARD, tmp_path / "build")
    assert (tmp_path / "build" / f"tlsnic_{DEFAULT_BOARD.replace('-', '_')}.bit").exists()
    assert res["utilisation"]["LUT4"]["used"] > 0
    assert res["timing_met"], {d: f for d, f in res["domains"].items() if not f["met"]}
