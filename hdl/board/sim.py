"""The board top for simulation: :class:`BoardTop` with its FPGA primitives swapped out.

:class:`SimBoardTop` is :class:`~tlsnic.hdl.board.top.BoardTop` itself (a
subclass overriding only the platform hooks), exported to Verilog with its
pins as top-level ports, so Verilator can run it under cocotb. Two things of
the real top have no simulation model and are substituted, nothing else:

* **The PLL** (``EHXPLLL``): each of its output clocks (``sync``,
  ``rgmii_tx``, ``rgmii_tx90``) is a top-level input, ``clk_<domain>``,
  driven by the testbench, and its ``LOCK`` output is the input
  ``pll_locked``. The reset tree behind it (the reset button and a
  ``ResetSynchronizer`` per domain) is the real one.
* **The DDR I/O registers** (``IDDRX1F`` / ``ODDRX1F`` behind
  ``amaranth.lib.io.DDRBuffer``): :class:`SimDDRBuffer` is a behavioural DDR
  register of the same interface, a few flip-flops on each edge. Input: the
  rising-edge sample and the sample of the falling edge after it are
  presented together on ``i[0]`` / ``i[1]`` one clock later. Output: ``o[0]``
  and ``o[1]`` are registered on the rising edge and drive the pin for the
  high and the low half of the next cycle. (The ECP5 output primitive has two
  more pipeline stages; a constant latency on every RGMII output pin changes
  nothing the PHY can see.)

The single-data-rate pins (``RX_CLK``, the UART, the PHY reset, the reset
button) go through ``amaranth.lib.io.Buffer`` on an ``io.SimulationPort``,
which is a wire. Everything else, RGMII framing, the MAC and its CDC FIFOs,
the UART bridge, the window RAM, the board registers and the NIC with its TLS
engines, is elaborated from the same code as the synthesized top.

Top-level ports (``p`` is the Ethernet port number)::

    clk_sync clk_rgmii_tx [clk_rgmii_tx90]  pll_locked rst     in
    uart_rx in, uart_tx out
    eth<p>_rx_clk eth<p>_rxd[4] eth<p>_rx_ctl                  in  (from the PHY)
    eth<p>_tx_clk eth<p>_txd[4] eth<p>_tx_ctl eth<p>_phy_rst   out (to the PHY)
"""

from types import SimpleNamespace

from amaranth import *
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from .top import DEFAULT_BOARD, LINK_IDLE_S, BoardTop

__all__ = ["SimDDRBuffer", "SimBoardTop", "make_sim_board"]


class SimDDRBuffer(io.DDRBuffer):
    """Behavioural stand-in for :class:`amaranth.lib.io.DDRBuffer` on an
    ``io.SimulationPort`` (input or output only; see the module docstring)."""

    def elaborate(self, platform):
        m = Module()
        port = self.port
        domain = self.i_domain if self.direction is io.Direction.Input else self.o_domain
        neg = f"{domain}_ddr_neg"
        m.domains += ClockDomain(neg, clk_edge="neg", reset_less=True, local=True)
        m.d.comb += ClockSignal(neg).eq(ClockSignal(domain))
        width = len(port)
        if self.direction is io.Direction.Input:
            rise, fall = Signal(width), Signal(width)
            m.d[domain] += rise.eq(port.i)
            m.d[neg] += fall.eq(port.i)
            m.d[domain] += [self.i[0].eq(rise), self.i[1].eq(fall)]
        elif self.direction is io.Direction.Output:
            high, low, low_n = Signal(width), Signal(width), Signal(width)
            m.d[domain] += [high.eq(self.o[0]), low.eq(self.o[1])]
            m.d[neg] += low_n.eq(low)
            m.d.comb += [port.o.eq(Mux(ClockSignal(domain), high, low_n)),
                         port.oe.eq(self.oe.replicate(width))]
        else:
            raise NotImplementedError("SimDDRBuffer: bidirectional pins are not used here")
        return m


def _eth_signature(p):
    return {
        f"eth{p}_rx_clk": In(1), f"eth{p}_rxd": In(4), f"eth{p}_rx_ctl": In(1),
        f"eth{p}_tx_clk": Out(1), f"eth{p}_txd": Out(4), f"eth{p}_tx_ctl": Out(1),
        f"eth{p}_phy_rst": Out(1),
    }


class SimBoardTop(BoardTop, wiring.Component):
    """:class:`BoardTop` with a testbench in place of the PLL and the DDR
    primitives. Parameters as :class:`BoardTop`; ``divisor`` (UART clocks per
    bit) gives the baud rate, and ``link_idle`` the bridge's quiet time in
    core clocks, so that a simulation need not run 1 Mbaud and 2 ms."""

    ddr_buffer = SimDDRBuffer

    def __init__(self, board=DEFAULT_BOARD, *, divisor=None, link_idle=None, **kwargs):
        BoardTop.__init__(self, board, **kwargs)
        f_sync = self.core_mhz * 1e6
        if divisor is not None:
            self.baud = f_sync / divisor
        if link_idle is not None:
            self.link_idle_s = link_idle / f_sync
        members = {f"clk_{out.domain}": In(1) for out in self.pll_outputs()}
        members.update({"pll_locked": In(1), "rst": In(1), "uart_rx": In(1, init=1),
                        "uart_tx": Out(1, init=1)})
        for p in range(self.spec.eth_ports):
            members.update(_eth_signature(p))
        wiring.Component.__init__(self, members)

    def _clock_tree(self, m, platform, outputs):
        for out in outputs:
            m.d.comb += ClockSignal(out.domain).eq(getattr(self, f"clk_{out.domain}"))
        return ~self.pll_locked | self.rst, {out.domain: out.freq for out in outputs}

    def _uart_pins(self, m, platform):
        rx, tx = io.SimulationPort("i", 1), io.SimulationPort("o", 1)
        m.d.comb += [rx.i.eq(self.uart_rx), self.uart_tx.eq(tx.o)]
        return SimpleNamespace(rx=rx, tx=tx)

    def _eth_pins(self, m, platform, p):
        ins = {"rx_clk": 1, "rx_data": 4, "rx_ctl": 1}
        outs = {"tx_clk": 1, "tx_data": 4, "tx_ctl": 1, "rst": 1}
        names = {"rx_data": "rxd", "tx_data": "txd", "rst": "phy_rst"}
        pins = {}
        for name, width in ins.items():
            pins[name] = io.SimulationPort("i", width)
            m.d.comb += pins[name].i.eq(getattr(self, f"eth{p}_{names.get(name, name)}"))
        for name, width in outs.items():
            pins[name] = io.SimulationPort("o", width)
            m.d.comb += getattr(self, f"eth{p}_{names.get(name, name)}").eq(pins[name].o)
        return SimpleNamespace(**pins)

    def _constrain(self, platform, clock, freq):
        pass


def make_sim_board(board=DEFAULT_BOARD, **params):
    """Factory for :class:`tlsnic.cosim.build.Design`."""
    return SimBoardTop(board, **params)
