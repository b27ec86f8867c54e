"""FPGA fabric resources that a design asks for by name, chosen by platform.

A global line: the ECP5's clock distribution (a ``DCCA`` buffer onto one of
the eight global lines that may drive fabric pins) reaches the clock, reset
and clock-enable input of every slice without the fabric's routing. nextpnr
promotes clocks to global lines by itself, nothing else; a register that
enables or resets thousands of flip-flops (a pipeline's stall, a reset) is
otherwise a tree of general wires across the region it spans, and on the
boards such nets were the most overused of the router's (README, "Boards").
Without an ECP5 (simulation, ``platform`` None) the signal is used as it is.
"""

from amaranth import *

__all__ = ["Ecp5Fabric", "has_global_lines", "global_line"]


class Ecp5Fabric:
    """The platform a core built alone for an ECP5 elaborates for.

    ``tlsnic synth --core`` builds one core without a board; this says which
    fabric it is on, which is all that :func:`global_line` asks of a platform.
    """

    family = "ecp5"


def has_global_lines(platform):
    """Whether :func:`global_line` puts a signal on a global line for ``platform``."""
    return getattr(platform, "family", None) == "ecp5"


def global_line(m, platform, name, signal):
    """``signal`` on a global line (see the module docstring), or ``signal``."""
    if not has_global_lines(platform):
        return signal
    line = Signal(name=f"{name}_global")
    m.submodules[f"{name}_dcca"] = Instance("DCCA", i_CLKI=signal, i_CE=C(1), o_CLKO=line)
    return line
