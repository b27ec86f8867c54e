"""ECP5 ``EHXPLLL`` configuration: dividers for a set of output clocks.

The PLL's VCO runs at ``f_in / CLKI_DIV * CLKFB_DIV * CLKOP_DIV`` (feedback
from ``CLKOP``), between 400 and 800 MHz; each output divides the VCO by its
own ``CLKO*_DIV`` (1..128) and can be delayed by whole VCO cycles (``CPHASE``)
and eighths of one (``FPHASE``). The search below is what ``ecppll`` does, for
up to four outputs from one VCO, preferring exact frequencies, then a high VCO
(less jitter).
"""

from dataclasses import dataclass

from amaranth import *

__all__ = ["PllOutput", "PllConfig", "solve_pll", "Ecp5Pll"]

VCO_MIN, VCO_MAX = 400e6, 800e6
PFD_MIN = 3.125e6
OUTPUT_PORTS = ("CLKOP", "CLKOS", "CLKOS2", "CLKOS3")


@dataclass(frozen=True)
class PllOutput:
    domain: str
    freq: float
    phase: float = 0.0     #: degrees of the output clock


@dataclass
class PllConfig:
    f_in: float
    clki_div: int
    clkfb_div: int
    divs: list             #: per output, in OUTPUT_PORTS order
    outputs: list

    @property
    def vco(self):
        return self.f_in / self.clki_div * self.clkfb_div * self.divs[0]

    def achieved(self, i):
        return self.vco / self.divs[i]


def solve_pll(f_in, outputs, tolerance=0.005):
    """Dividers for ``outputs`` (a list of :class:`PllOutput`, at most four; the
    first is the feedback output). Raises ``ValueError`` when no setting comes
    within ``tolerance`` (relative) of every frequency."""
    assert 1 <= len(outputs) <= 4
    best = None
    for clki in range(1, 129):
        pfd = f_in / clki
        if pfd < PFD_MIN:
            break
        for fb in range(1, 81):
            f_op = pfd * fb
            for op_div in range(1, 129):
                vco = f_op * op_div
                if vco < VCO_MIN:
                    continue
                if vco > VCO_MAX:
                    break
                divs = [op_div] + [max(1, min(128, round(vco / o.freq))) for o in outputs[1:]]
                err = max(abs(vco / d - o.freq) / o.freq for d, o in zip(divs, outputs))
                key = (round(err, 6), -round(vco / 1e3), clki)
                if err <= tolerance and (best is None or key < best[0]):
                    best = (key, PllConfig(f_in, clki, fb, divs, list(outputs)))
    if best is None:
        raise ValueError(f"no EHXPLLL setting gives {[o.freq for o in outputs]} from {f_in} Hz")
    return best[1]


class Ecp5Pll(Elaboratable):
    """The ``EHXPLLL`` instance for a :class:`PllConfig`; drives each output's
    ``ClockSignal`` and a ``locked`` signal."""

    def __init__(self, config, clk_in):
        self.config = config
        self.clk_in = clk_in
        self.locked = Signal()
        #: Output clock per domain (for clock constraints).
        self.clocks = {o.domain: Signal(name=f"pll_{o.domain}_clk") for o in config.outputs}

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        params = dict(
            a_FREQUENCY_PIN_CLKI=f"{cfg.f_in / 1e6:.6f}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=cfg.clki_div, p_CLKFB_DIV=cfg.clkfb_div, p_FEEDBK_PATH="CLKOP",
            i_CLKI=self.clk_in, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
            i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_LOCK=self.locked,
        )
        clkop = self.clocks[cfg.outputs[0].domain]
        params["i_CLKFB"] = clkop
        for i, (port, out, div) in enumerate(zip(OUTPUT_PORTS, cfg.outputs, cfg.divs)):
            letter = port[4:] or "P"          # CLKOP -> P, CLKOS2 -> S2
            steps = out.phase / 360 * div     # phase in VCO cycles
            params[f"p_CLKO{letter}_ENABLE"] = "ENABLED"
            params[f"p_CLKO{letter}_DIV"] = div
            params[f"p_CLKO{letter}_CPHASE"] = div - 1 + int(steps)
            params[f"p_CLKO{letter}_FPHASE"] = round((steps - int(steps)) * 8) % 8
            params[f"a_FREQUENCY_PIN_CLKO{letter}"] = f"{cfg.achieved(i) / 1e6:.6f}"
            sig = self.clocks[out.domain]
            params[f"o_{port}"] = sig
            m.d.comb += ClockSignal(out.domain).eq(sig)
        m.submodules.pll = Instance("EHXPLLL", **params)
        return m
