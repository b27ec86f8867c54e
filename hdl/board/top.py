"""Board tops: the NIC with Gigabit Ethernet over RGMII and a UART host link.

::

    board clock ─> EHXPLLL ─┬─ sync        core: Nic, UartBridge, WindowRam, MAC (NIC side)
                            ├─ rgmii_tx    125 MHz: MacTx, RgmiiTx
                            └─ rgmii_tx90  125 MHz, 90°: the TX_CLK pin (when the PHY adds no delay)
    PHY RX_CLK ─────────────── rgmii_rx    (one per port) RgmiiRx, MacRx

    UART ─> UartBridge ─┬─> Nic.csr (AXI4-Lite)
                        ├─> WindowRam <── Nic.dma (AXI4): rings and buffers live here
                        └─> board registers (ID, STATUS, window, SPEED_MODE, MAC counters)
    Nic.tx[i] ─> Mac ─> RgmiiTx ─> RGMII pins
    Nic.rx[i] <─ Mac <─ RgmiiRx <─ RGMII pins

The NIC is taken as it is: :class:`BoardTop` passes ``nic`` (a dict of
:class:`tlsnic.hdl.top.Nic` keyword arguments) through untouched, with
``ports`` set from the board, so a new engine's parameter (``rx_contexts``) is
one more key.

Clocks and resets: every domain is held in reset until the PLL locks (and
while the board's reset button is pressed), released through a
:class:`~amaranth.lib.cdc.ResetSynchronizer` in its own clock; the core's
(``sync``) reset then goes through a ``DCCA`` onto a global line. The PHY is held
in reset for 2^21 core clocks (~84 ms at 25 MHz) after lock, then runs with its strap defaults
(auto-negotiation on). The receive clock domain of each port is driven by the
PHY's ``RX_CLK`` and constrained to 125 MHz, the 1000 Mb/s rate.

The link speed the framing uses comes from the PHY's in-band status unless the
host forces it (``BoardReg.SPEED_MODE``). Without in-band status (a PHY that
does not send it reads as "link down"), 1000 Mb/s is assumed.
"""

from dataclasses import dataclass, field

from amaranth import *
from amaranth.build import Attrs, Clock
from amaranth_boards.resources import UARTResource
from amaranth.lib import cdc, io, wiring

from tlsnic.link import BOARD_ID, BoardReg, LinkStatusBits
from ..fabric import global_line
from ..top import Nic
from .mac import Mac, MacCounter
from .pll import Ecp5Pll, PllOutput, solve_pll
from .rgmii import RgmiiPins, RgmiiRx, RgmiiStatus, RgmiiTx, Speed
from .uart_bridge import UartBridge
from .window import WindowRam

__all__ = ["BoardSpec", "BOARDS", "BOARD_NIC", "BoardTop", "make_platform", "DEFAULT_BOARD",
           "LINK_IDLE_S"]

#: Quiet time after which the bridge drops a half-received request. Longer
#: than any gap a USB-UART leaves inside one write.
LINK_IDLE_S = 2e-3
RGMII_FREQ = 125e6
#: The NIC as the boards build it: both TLS engines, sharing one GCM engine
#: (:mod:`tlsnic.hdl.crypto.share`) at the boards' rate: four iterative AES
#: cores and a digit-serial GHASH, a 16-byte chunk every 4 clocks, 32 bits a
#: clock for both Gigabit directions (a full-rate engine is 114 EBR and ~40 k
#: LUT4 of the ECP5-85's 208 and 84 k); and few contexts. A board behind a
#: UART serves a handful of connections. The context tables (1670 and 1539
#: bits a tag, as a connection half and a moving half that keeps a record's
#: GCM progress, not its key or H twice,
#: :class:`~tlsnic.hdl.crypto.gcm.GcmProgress`) are all in block RAM
#: (:mod:`tlsnic.hdl.tls.table`), one block-RAM row an entry: 47 EBR for TX
#: and 43 for RX beside the engine's S-boxes (40), the window (16), the packet
#: buffers and the tag log (40), 186 of the 208. In LUT RAM the two tables
#: were 1,045 DPR16X4, 6 k logic cells. Folded into two rows an entry
#: (``table_fold=2``) they are 24 + 22 EBR, but their row selects and
#: write-data shifters were a quarter of the router's overuse; unfolded, the
#: same design came within 1.5 k overused wires of routing, folded it stayed
#: above 17 k (README, "Boards").
BOARD_NIC = {"tx_contexts": 15, "rx_contexts": 8, "shared_gcm": True, "gcm_aes_cores": 4,
             "table_fold": 1}


@dataclass(frozen=True)
class BoardSpec:
    """What :class:`BoardTop` needs to know about a board."""
    platform: str             #: ``module:Class`` in amaranth_boards
    description: str
    clk: str = "clk100"
    rst: str = "rst"          #: reset button resource (active level per the platform)
    eth_ports: int = 1
    #: Drive TX_CLK from the 90° shifted clock (PHY without TXDLY).
    tx_clk_shift: bool = True
    #: The core clock: what the board's routed build meets (README, "Boards").
    #: The TLS record walkers limit it (~22 LUT levels a step). The boards'
    #: GCM engine moves 32 bits a clock: 62.5 MHz would carry both Gigabit
    #: directions at once, 25 MHz carries 800 Mb/s of TLS between them; the
    #: NIC's 64-bit datapath carries 1.6 Gb/s.
    core_mhz: float = 25.0
    baud: int = 1_000_000
    window_size: int = 32 * 1024
    nic: dict = field(default_factory=lambda: dict(BOARD_NIC))
    #: Resources the board's platform file lacks (a host UART on a header).
    extra_resources: tuple = ()
    #: nextpnr's seeds, tried in turn until one routes with every domain met
    #: (``tlsnic synth``). At 73 % of an ECP5-85's logic cells router2
    #: either converges or runs away, and the placement seed decides which,
    #: per netlist: a board's first seed is the one that routed its current
    #: netlist (or came closest), the rest are ones that routed earlier
    #: netlists (README, "Boards").
    seeds: tuple = (2,)
    #: nextpnr's router. router2 converges in ~10-20 minutes or runs away;
    #: on a board where it keeps running away in its end game (a few dozen
    #: overused wires, then hundreds), router1, slower and negotiating one
    #: arc at a time, finishes the same placement (README, "Boards").
    router: str = "router2"

    def pll_outputs(self, core_mhz=None):
        """The clocks the PLL makes, the core's at ``core_mhz`` (default the board's)."""
        outs = [PllOutput("sync", (core_mhz or self.core_mhz) * 1e6), PllOutput("rgmii_tx", RGMII_FREQ)]
        if self.tx_clk_shift:
            outs.append(PllOutput("rgmii_tx90", RGMII_FREQ, phase=90))
        return outs

    def clock_targets(self, core_mhz=None):
        """Every clock domain's frequency in MHz, as the constraints should say."""
        targets = {o.domain: o.freq / 1e6 for o in self.pll_outputs(core_mhz)}
        targets.update({f"rgmii_rx{p}": RGMII_FREQ / 1e6 for p in range(self.eth_ports)})
        return targets


BOARDS = {
    # The 93b98a7 netlist: seed 9 routed with every domain met; seeds 2-7
    # ran away or stalled. Seed 2 routed 3d1422f, 14abc8c and 5edc42b.
    "ecpix5-85": BoardSpec(
        "amaranth_boards.ecpix5:ECPIX585Platform",
        "LambdaConcept ECPIX-5, LFE5UM5G-85F, 1x GbE (RGMII), FT2232 UART",
        seeds=(9, 2)),
    "versa-ecp5": BoardSpec(
        "amaranth_boards.versa_ecp5:VersaECP5Platform",
        "Lattice ECP5 Versa, LFE5UM-45F, 2x GbE (RGMII), FT2232 UART",
        eth_ports=2),
    # No USB-UART on board: the host link is a 3.3 V USB-UART cable on the
    # BeagleBone cape header, UART1's pins (P9.24 TXD, P9.26 RXD). The PHY's
    # reset pin is not in amaranth-boards' ``eth_rgmii`` (prototypes used it
    # as the system reset), so the PHY is reset by the board, not by us.
    "logicbone-85": BoardSpec(
        "amaranth_boards.logicbone:Logicbone85FPlatform",
        "Logicbone 85F, LFE5UM5G-85F, 1x GbE (RGMII), UART on the P9 cape header",
        # The 93b98a7 netlist: router2 ran away from every seed (seed 4
        # came closest, 2 overused wires, then 3, 12); router1 routed seed
        # 4 with every domain met. Seed 2 routed 5edc42b with router2.
        clk="refclk", rst="button", seeds=(4, 3, 2), router="router1",
        extra_resources=(UARTResource(0, tx="24", rx="26", conn=("P9", 0),
                                      attrs=Attrs(IO_TYPE="LVCMOS33")),)),
}
DEFAULT_BOARD = "ecpix5-85"


def make_platform(board):
    """A fresh platform instance for ``board``."""
    import importlib
    spec = BOARDS[board]
    module, cls = spec.platform.split(":")
    platform = getattr(importlib.import_module(module), cls)()
    platform.add_resources(list(spec.extra_resources))
    return platform


class BoardTop(Elaboratable):
    """Parameters
    ----------
    board : str
        A key of :data:`BOARDS`.
    nic : dict
        Extra :class:`~tlsnic.hdl.top.Nic` arguments (over the board's defaults).
    core_mhz : float
        Core clock target (``sync``), default the board's.
    window_base : int
        DMA address of the host-memory window.
    baud : int
        Host-link baud rate, default the board's.
    link_idle_s : float
        The host link bridge's quiet time (:data:`LINK_IDLE_S`).

    Everything that touches the FPGA (pins, the PLL, clock constraints, the
    DDR register type) goes through the platform hooks ``_clock_tree``,
    ``_uart_pins``, ``_eth_pins``, ``_constrain`` and :attr:`ddr_buffer`;
    :class:`tlsnic.hdl.board.sim.SimBoardTop` overrides only those to run the
    rest, unchanged, under Verilator.
    """

    #: DDR register component of the RGMII pins (ECP5: ``IDDRX1F``/``ODDRX1F``).
    ddr_buffer = io.DDRBuffer

    def __init__(self, board=DEFAULT_BOARD, *, nic=None, core_mhz=None,
                 window_base=0x1_0000_0000, baud=None, link_idle_s=LINK_IDLE_S):
        self.board = board
        self.spec = BOARDS[board]
        self.core_mhz = core_mhz or self.spec.core_mhz
        self.nic_params = {**self.spec.nic, **(nic or {}), "ports": self.spec.eth_ports}
        self.window_base = window_base
        self.baud = baud or self.spec.baud
        self.link_idle_s = link_idle_s

    def clock_targets(self):
        """Every clock domain's frequency in MHz, as the constraints should say."""
        return self.spec.clock_targets(self.core_mhz)

    def pll_outputs(self):
        return self.spec.pll_outputs(self.core_mhz)

    def elaborate(self, platform):
        m = Module()
        spec = self.spec

        # ---- clocks and resets ----
        outputs = self.pll_outputs()
        for out in outputs:
            m.domains += ClockDomain(out.domain)
        hold, freqs = self._clock_tree(m, platform, outputs)
        for out in outputs:
            if out.domain == "sync":
                # The core's reset reaches ~8.6 k flip-flops across the die,
                # the largest net after the clock; in the fabric it was the
                # net router2 found most overused. It goes on a global line.
                released = Signal(init=1)
                m.submodules.rs_sync = cdc.AsyncFFSynchronizer(hold, released, o_domain="sync")
                m.d.comb += ResetSignal("sync").eq(global_line(m, platform, "rst_sync", released))
            else:
                m.submodules[f"rs_{out.domain}"] = cdc.ResetSynchronizer(hold, domain=out.domain)
        f_sync = freqs["sync"]

        # ---- the NIC, its host memory and the host link ----
        m.submodules.nic = nic = Nic(**self.nic_params)
        m.submodules.window = window = WindowRam(base=self.window_base, size=spec.window_size)
        divisor = round(f_sync / self.baud)
        m.submodules.bridge = bridge = UartBridge(
            divisor=divisor, window_size=spec.window_size, idle=round(self.link_idle_s * f_sync))
        wiring.connect(m, bridge.csr, nic.csr)
        wiring.connect(m, bridge.mem, window.bridge)
        wiring.connect(m, nic.dma, window.axi)
        uart = self._uart_pins(m, platform)
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        m.d.comb += [bridge.rx.eq(uart_rx.i), uart_tx.o.eq(bridge.tx)]

        # PHY reset: 2^21 core clocks after the core comes out of reset (~17
        # ms at 125 MHz, ~84 ms at 25 MHz; the PHYs ask for at least 10 ms).
        phy_timer = Signal(21)
        phy_rst = Signal(init=1)
        with m.If(phy_timer != (1 << 21) - 1):
            m.d.sync += phy_timer.eq(phy_timer + 1)
        with m.Else():
            m.d.sync += phy_rst.eq(0)

        # ---- Ethernet ports ----
        speed_mode = Signal(2)
        statuses, macs = [], []
        for p in range(spec.eth_ports):
            pins = self._eth_pins(m, platform, p)
            rxd = f"rgmii_rx{p}"
            m.domains += ClockDomain(rxd)
            rgmii = RgmiiPins(pins, rx_domain=rxd, tx_domain="rgmii_tx",
                              tx_clk_domain="rgmii_tx90" if spec.tx_clk_shift else "rgmii_tx",
                              ddr_buffer=self.ddr_buffer)
            m.submodules[f"rgmii_pins{p}"] = rgmii
            m.d.comb += ClockSignal(rxd).eq(rgmii.rx_clk)
            self._constrain(platform, pins.rx_clk, RGMII_FREQ)
            m.submodules[f"rs_{rxd}"] = cdc.ResetSynchronizer(hold, domain=rxd)
            if hasattr(pins, "rst"):
                m.submodules[f"phy_rst{p}"] = phy_rst_buf = io.Buffer("o", pins.rst)
                m.d.comb += phy_rst_buf.o.eq(phy_rst)

            rx = DomainRenamer(rxd)(RgmiiRx())
            tx = DomainRenamer("rgmii_tx")(RgmiiTx())
            mac = Mac(rx_domain=rxd, tx_domain="rgmii_tx")
            m.submodules[f"rgmii_rx{p}"] = rx
            m.submodules[f"rgmii_tx{p}"] = tx
            m.submodules[f"mac{p}"] = mac
            m.d.comb += [
                rx.ddr_data.eq(rgmii.rx_data), rx.ddr_ctl.eq(rgmii.rx_ctl),
                rgmii.tx_data.eq(tx.ddr_data), rgmii.tx_ctl.eq(tx.ddr_ctl),
                rgmii.tx_clk.eq(tx.ddr_clk),
                mac.rx_stb.eq(rx.stb), mac.rx_byte.eq(rx.byte),
                mac.tx_stb.eq(tx.stb), tx.byte.eq(mac.tx_byte),
            ]
            wiring.connect(m, nic.tx[p], mac.tx)
            wiring.connect(m, mac.rx, nic.rx[p])

            # Speed: in-band status unless forced; quasi-static, so plain
            # two-flop synchronisers carry it between domains.
            status = Signal(RgmiiStatus)
            m.submodules[f"status_sync{p}"] = cdc.FFSynchronizer(rx.status, status)
            speed = Signal(2, init=Speed.S1000.value)
            inband = status.speed.as_value()
            with m.If(speed_mode != 0):
                m.d.sync += speed.eq(speed_mode - 1)
            with m.Elif(status.link & (inband != 3)):
                m.d.sync += speed.eq(inband)
            with m.Else():
                m.d.sync += speed.eq(Speed.S1000.value)
            m.submodules[f"speed_rx{p}"] = cdc.FFSynchronizer(
                speed, rx.speed.as_value(), o_domain=rxd, init=Speed.S1000.value)
            m.submodules[f"speed_tx{p}"] = cdc.FFSynchronizer(
                speed, tx.speed.as_value(), o_domain="rgmii_tx", init=Speed.S1000.value)
            statuses.append((status, speed))
            macs.append(mac)

        # ---- board registers ----
        reg = bridge.board
        status0, speed0 = statuses[0]
        link_status = Signal(32)
        m.d.comb += link_status.eq(
            nic.irq * LinkStatusBits.IRQ | status0.link * LinkStatusBits.LINK
            | (speed0 << LinkStatusBits.SPEED_SHIFT)
            | status0.full_duplex * LinkStatusBits.FULL_DUPLEX)
        with m.Switch(reg.addr):
            constants = {
                BoardReg.ID: BOARD_ID,
                BoardReg.WINDOW_BASE_LO: self.window_base & 0xFFFF_FFFF,
                BoardReg.WINDOW_BASE_HI: self.window_base >> 32,
                BoardReg.WINDOW_SIZE: spec.window_size,
                BoardReg.PORTS: spec.eth_ports,
            }
            for r, value in constants.items():
                with m.Case(r):
                    m.d.comb += reg.rdata.eq(value)
            with m.Case(BoardReg.STATUS):
                m.d.comb += reg.rdata.eq(link_status)
            with m.Case(BoardReg.SPEED_MODE):
                m.d.comb += reg.rdata.eq(speed_mode)
                with m.If(reg.write):
                    m.d.sync += speed_mode.eq(reg.wdata)
            for p, mac in enumerate(macs):
                for c in MacCounter:
                    with m.Case(BoardReg.MAC_COUNTERS + 0x40 * p + 4 * c):
                        m.d.comb += reg.rdata.eq(mac.counters[c])
            with m.Default():
                m.d.comb += reg.rdata.eq(0)
        return m

    # ---- platform hooks (overridden by sim.SimBoardTop) ----

    def _clock_tree(self, m, platform, outputs):
        """Drive the ``ClockSignal`` of each of ``outputs`` (the PLL's); return
        the condition that holds every domain in reset and ``{domain: Hz}``."""
        spec = self.spec
        clk_res = platform.lookup(spec.clk)
        m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(spec.clk, dir="-"))
        m.submodules.rst_buf = rst_buf = io.Buffer("i", platform.request(spec.rst, dir="-"))
        pll_cfg = solve_pll(clk_res.clock.frequency, outputs)
        m.submodules.pll = pll = Ecp5Pll(pll_cfg, clk_buf.i)
        freqs = {}
        for i, out in enumerate(pll_cfg.outputs):
            freqs[out.domain] = pll_cfg.achieved(i)
            self._constrain(platform, pll.clocks[out.domain], freqs[out.domain])
        return ~pll.locked | rst_buf.i, freqs

    def _uart_pins(self, m, platform):
        """The host UART: an object with port-likes ``rx`` and ``tx``."""
        return platform.request("uart", 0, dir="-")

    def _eth_pins(self, m, platform, p):
        """Port ``p``'s ``eth_rgmii`` resource (port-likes, see :class:`RgmiiPins`)."""
        return platform.request("eth_rgmii", p, dir="-")

    def _constrain(self, platform, clock, freq):
        # ``clock``: a PLL output signal, or a clock pin. A pin is constrained
        # as a port, not through the signal its buffer drives: Yosys renames
        # that net (the receive clock became ``rgmii_rx0.rgmii_rx0_clk``) and
        # nextpnr drops a constraint on a net it cannot find, leaving the
        # domain at its 12 MHz default. nextpnr carries a port's constraint
        # through the input buffer.
        platform.add_clock_constraint(clock.io if isinstance(clock, io.PortLike) else clock, freq)
