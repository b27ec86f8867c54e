"""Amaranth -> Verilog, cached by content hash.

Generating Verilog through Yosys costs seconds and Verilator's C++ build costs
many more, so both are keyed by a hash of everything that decides the output:
the gateware sources (``hdl/`` and the host ABI), the Amaranth version, and the
construction parameters. An unchanged design is never regenerated or rebuilt.
"""

import hashlib
import importlib.metadata
import json
import os
from pathlib import Path

from amaranth.back import verilog

__all__ = ["BUILD_ROOT", "source_hash", "Design", "nic_design", "board_design", "export_verilog"]

_REPO = Path(__file__).resolve().parent.parent
#: Everything generated goes below here (ignored by git).
BUILD_ROOT = Path(os.environ.get("TLSNIC_BUILD", _REPO / "build"))


def source_hash():
    """Hash of the gateware sources: every ``.py`` under ``hdl/``, the ABI and the
    unit-test tops."""
    h = hashlib.sha256()
    files = sorted((_REPO / "hdl").rglob("*.py")) + [_REPO / "tlsnic" / "abi.py",
                                                      _REPO / "cosim" / "tops.py"]
    for path in files:
        if not path.exists():
            continue
        h.update(str(path.relative_to(_REPO)).encode())
        h.update(path.read_bytes())
    h.update(importlib.metadata.version("amaranth").encode())
    return h.hexdigest()


class Design:
    """A gateware top to export: a factory, its keyword arguments and a name.

    Parameters
    ----------
    factory : str
        ``"module:callable"`` returning a ``wiring.Component``; a string, not a
        function, so the cache key and subprocesses can name it.
    name : str
        Verilog module name of the top.
    params : dict
        Keyword arguments for the factory (JSON-serialisable).
    """
    def __init__(self, factory, name, **params):
        self.factory = factory
        self.name = name
        self.params = params

    @property
    def key(self):
        blob = json.dumps([self.factory, self.name, self.params], sort_keys=True)
        return hashlib.sha256((source_hash() + blob).encode()).hexdigest()[:16]

    def elaborate(self):
        module, _, attr = self.factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        return factory(**self.params)


def nic_design(*, ports=1, tx_contexts=256, rx_contexts=0):
    """The card (``hdl.top.Nic``) as every co-simulation builds it: one place, so
    the tests, the benches and ``tlsnic sim`` share one cached build per shape.
    ``rx_contexts`` 0 is the card without the TLS receive engine (the
    parameter is left out of the key then, so those builds stay cached)."""
    params = {"rx_contexts": rx_contexts} if rx_contexts else {}
    return Design("tlsnic.hdl.top:make_nic", "nic", ports=ports, tx_contexts=tx_contexts, **params)


def board_design(board="ecpix5-85", *, divisor=4, link_idle=640, rx_contexts=256):
    """The board top for simulation (:class:`tlsnic.hdl.board.sim.SimBoardTop`):
    the PLL's clocks and lock from the testbench, behavioural DDR registers,
    everything else as synthesized. ``divisor`` is the UART's clocks per bit
    (4, the bridge's minimum, is 31.25 Mbaud at 125 MHz) and ``link_idle`` the
    bridge's quiet time in core clocks. ``rx_contexts`` gives the card the
    TLS receive engine (the synthesized boards leave it out by default)."""
    nic = {"rx_contexts": rx_contexts} if rx_contexts else {}
    return Design("tlsnic.hdl.board.sim:make_sim_board", "board", board=board, divisor=divisor,
                  link_idle=link_idle, nic=nic)


def export_verilog(design):
    """Write ``design`` as Verilog (once per content hash); return the file path."""
    out = BUILD_ROOT / "verilog" / design.key / f"{design.name}.v"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        text = verilog.convert(design.elaborate(), name=design.name, emit_src=False)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)  # atomic: parallel test workers may race here
    return out
