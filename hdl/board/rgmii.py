"""RGMII: the board's Gigabit PHY, as a byte stream per clock domain.

RGMII carries GMII's 8-bit byte per clock on 4 wires by using both clock
edges: the low nibble on the rising edge, the high nibble on the falling edge;
``CTL`` carries ``DV``/``EN`` on the rising edge and ``DV xor ER`` on the
falling edge. At 10 and 100 Mb/s the clock runs at 2.5 / 25 MHz and each edge
pair carries one *nibble* (both edges the same), low nibble first.

Split of the work
-----------------

* :class:`RgmiiRx` and :class:`RgmiiTx` hold all the logic and see the pins
  through the two halves of a DDR register (``ddr_*[0]`` rising, ``[1]``
  falling edge). That is what ``amaranth.lib.io.DDRBuffer`` gives (ECP5:
  ``IDDRX1F`` / ``ODDRX1F``), and it is also what a unit test can drive:
  ``DDRBuffer`` cannot run under ``amaranth.sim``.
* :class:`RgmiiPins` is the thin pin layer: one ``DDRBuffer`` per pin group,
  only elaborated for a real platform.

Clocks
------

Receive runs in the PHY's ``RX_CLK`` (domain ``rx`` of the caller's choice),
whatever its rate. Transmit always runs at 125 MHz: at 10/100 Mb/s
:class:`RgmiiTx` slows the byte rate with a strobe and draws ``TX_CLK`` itself
through the clock pin's DDR register, with half-cycle (4 ns) resolution, as
Alex Forencich's ``rgmii_phy_if`` does. Only one transmit clock therefore ever
exists, and no clock multiplexer is needed.

RGMII wants the clock edge in the middle of the data eye (a 1.5–2 ns skew).
Either the PHY adds it (RTL8211 ``TXDLY``/``RXDLY``), or the transmit clock pin
is driven from a 90° phase-shifted copy of the transmit clock
(``tx_clk_domain`` of :class:`RgmiiPins`). The clock pattern crosses into that
domain through one register; it is constant at 1000 Mb/s, and at 10/100 its
period (40 / 400 ns) leaves far more margin than a cycle of uncertainty costs.

Link speed
----------

Between frames (``DV = ER = 0``) an RGMII PHY may put its status on ``RXD``
("in-band status"): bit 0 link up, bits 2:1 speed (00 = 10, 01 = 100,
10 = 1000 Mb/s), bit 3 full duplex. :class:`RgmiiRx` decodes it into
``status``; the board decides which speed the byte framing uses (``speed``
inputs), because not every PHY sends it.
"""

from amaranth.lib import enum

from amaranth import *
from amaranth.lib import data, io, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Speed", "GmiiByte", "RgmiiStatus", "RgmiiRx", "RgmiiTx", "RgmiiPins",
           "nibble_period"]


class Speed(enum.Enum, shape=2):
    """Link speed, coded as RGMII in-band status codes it."""
    S10 = 0
    S100 = 1
    S1000 = 2


class GmiiByte(data.Struct):
    """One byte time on the (virtual) GMII: data, data valid / enable, error."""
    data: 8
    dv: 1
    er: 1


class RgmiiStatus(data.Struct):
    link: 1
    speed: Speed
    full_duplex: 1


def nibble_period(speed):
    """Transmit clock cycles (125 MHz) per nibble at 10/100 Mb/s."""
    return {Speed.S100: 5, Speed.S10: 50}[speed]


class RgmiiRx(wiring.Component):
    """RGMII receive, in the PHY's receive clock domain (``sync`` here).

    Members
    -------
    ddr_data : In(ArrayLayout(4, 2))
        ``RXD`` sampled on the rising (``[0]``) and falling (``[1]``) edge.
    ddr_ctl : In(ArrayLayout(1, 2))
        ``RX_CTL`` likewise.
    speed : In(Speed)
        Framing in effect: bytes per clock (1000) or nibbles (10/100).
    stb : Out(1)
        ``byte`` holds a new byte time. Every cycle at 1000 Mb/s; at 10/100
        every second cycle inside a frame, and every cycle between frames.
    byte : Out(GmiiByte)
    status : Out(RgmiiStatus)
        Last in-band status seen between frames.
    """
    ddr_data: In(data.ArrayLayout(4, 2))
    ddr_ctl: In(data.ArrayLayout(1, 2))
    speed: In(Speed)
    stb: Out(1)
    byte: Out(GmiiByte)
    status: Out(RgmiiStatus)

    def elaborate(self, platform):
        m = Module()
        dv = self.ddr_ctl[0]
        er = self.ddr_ctl[0] ^ self.ddr_ctl[1]

        with m.If(~self.ddr_ctl[0] & ~self.ddr_ctl[1]):
            m.d.sync += self.status.eq(self.ddr_data[0])

        low = Signal(4)
        low_er = Signal()
        half = Signal()     # 10/100: the low nibble of a byte is held
        m.d.sync += self.stb.eq(0)
        with m.If(self.speed == Speed.S1000):
            m.d.sync += [
                self.stb.eq(1),
                self.byte.data.eq(Cat(self.ddr_data[0], self.ddr_data[1])),
                self.byte.dv.eq(dv),
                self.byte.er.eq(er),
                half.eq(0),
            ]
        with m.Elif(~dv):
            # Between frames every cycle is a byte time: the MAC sees the frame
            # end at once, and an odd nibble left over (a PHY error) is dropped.
            m.d.sync += [self.stb.eq(1), self.byte.dv.eq(0), self.byte.er.eq(er),
                         self.byte.data.eq(0), half.eq(0)]
        with m.Elif(~half):
            m.d.sync += [low.eq(self.ddr_data[0]), low_er.eq(er), half.eq(1)]
        with m.Else():
            m.d.sync += [
                self.stb.eq(1),
                self.byte.data.eq(Cat(low, self.ddr_data[0])),
                self.byte.dv.eq(1),
                self.byte.er.eq(low_er | er),
                half.eq(0),
            ]
        return m


class RgmiiTx(wiring.Component):
    """RGMII transmit at 125 MHz (``sync`` here) for every link speed.

    Members
    -------
    speed : In(Speed)
    stb : Out(1)
        ``byte`` is taken this cycle: every cycle at 1000 Mb/s, one cycle in
        10 (100 Mb/s) or 100 (10 Mb/s). The MAC advances only on it.
    byte : In(GmiiByte)
        ``dv`` is the transmit enable, ``er`` the transmit error.
    ddr_data : Out(ArrayLayout(4, 2))
    ddr_ctl : Out(ArrayLayout(1, 2))
    ddr_clk : Out(ArrayLayout(1, 2))
        The ``TX_CLK`` pattern: ``(1, 0)`` at 1000 Mb/s, a slow square wave
        (50% duty) rising a quarter into each nibble at 10/100.
    """
    speed: In(Speed)
    stb: Out(1)
    byte: In(GmiiByte)
    ddr_data: Out(data.ArrayLayout(4, 2))
    ddr_ctl: Out(data.ArrayLayout(1, 2))
    ddr_clk: Out(data.ArrayLayout(1, 2))

    def elaborate(self, platform):
        m = Module()
        n100, n10 = nibble_period(Speed.S100), nibble_period(Speed.S10)
        # ``speed`` comes from a synchronizer beside the control registers,
        # far from the pins; every output register here depends on it, and
        # read directly it was the routed board's failing transmit path (3.7
        # ns of its 9.4 ns were the wire from it, 5edc42b). A copy here, a
        # clock later, is what the logic reads.
        speed = Signal(Speed, init=Speed.S1000)
        m.d.sync += speed.eq(self.speed)
        # At 10/100 a byte is two nibbles of n cycles: ``hi`` says which
        # nibble, ``in_nib`` counts the cycles within it (0 .. n-1). Kept
        # apart rather than one count of 2n, they need no subtraction, and
        # every decision is a register against a constant for each speed.
        in_nib = Signal(range(n10))
        hi = Signal()
        cur = Signal(GmiiByte)

        def per_speed(f):
            """``f`` of the nibble period, for the current speed (10 or 100)."""
            return Mux(speed == Speed.S100, f(n100), f(n10))

        # ``stb`` is a register, set for the cycle in which the next byte
        # starts: it goes on through the MAC's ``ready`` into the transmit
        # FIFO's read enable (decoded from ``speed`` it was the board's
        # failing transmit path at 3d1422f, 8 ns of wire).
        stb = Signal(init=1)
        m.d.comb += self.stb.eq(stb)

        with m.If(speed == Speed.S1000):
            m.d.sync += [
                stb.eq(1),
                self.ddr_data[0].eq(self.byte.data[0:4]),
                self.ddr_data[1].eq(self.byte.data[4:8]),
                self.ddr_ctl[0].eq(self.byte.dv),
                self.ddr_ctl[1].eq(self.byte.dv ^ self.byte.er),
                self.ddr_clk[0].eq(1), self.ddr_clk[1].eq(0),
                in_nib.eq(0), hi.eq(0),
            ]
        with m.Else():
            nib_end = per_speed(lambda n: in_nib == n - 1)
            m.d.sync += [in_nib.eq(Mux(nib_end, 0, in_nib + 1)), hi.eq(hi ^ nib_end),
                         stb.eq(hi & nib_end)]
            first = ~hi & (in_nib == 0)
            byte = Signal(GmiiByte)
            m.d.comb += byte.eq(Mux(first, self.byte, cur))
            with m.If(first):
                m.d.sync += cur.eq(self.byte)
            nibble = Mux(hi, byte.data[4:8], byte.data[0:4])

            # Half-cycle h (0 .. 2n-1) of the nibble: the clock is high for
            # q <= h < q + n, q = n // 2, so the PHY's rising edge (TXD, TX_EN)
            # comes a quarter and its falling edge (TX_ER) three quarters into
            # the nibble, both far from the moment the data changes.
            def clock_high(h):
                return per_speed(lambda n: (h >= n // 2) & (h < n // 2 + n))
            m.d.sync += [
                self.ddr_data[0].eq(nibble), self.ddr_data[1].eq(nibble),
                self.ddr_ctl[0].eq(byte.dv), self.ddr_ctl[1].eq(byte.dv ^ byte.er),
                self.ddr_clk[0].eq(clock_high(2 * in_nib)),
                self.ddr_clk[1].eq(clock_high(2 * in_nib + 1)),
            ]
        return m


class RgmiiPins(wiring.Component):
    """The DDR registers between :class:`RgmiiRx`/:class:`RgmiiTx` and the pins.

    Parameters
    ----------
    pins : the ``eth_rgmii`` resource, requested with ``dir="-"``.
        Subsignal names differ between boards (``tx_ctl`` or ``tx_ctrl``).
    rx_domain, tx_domain : str
    tx_clk_domain : str
        Domain of the ``TX_CLK`` pin's register: ``tx_domain`` when the PHY
        adds the transmit delay, a 90° shifted 125 MHz domain otherwise.
    ddr_buffer : type
        The DDR register component, :class:`amaranth.lib.io.DDRBuffer` (the
        platform's primitive) unless a simulation top substitutes a
        behavioural one (:class:`tlsnic.hdl.board.sim.SimDDRBuffer`).
    """

    def __init__(self, pins, *, rx_domain="rgmii_rx", tx_domain="rgmii_tx", tx_clk_domain=None,
                 ddr_buffer=io.DDRBuffer):
        self._pins = pins
        self._ddr = ddr_buffer
        self._rx_domain = rx_domain
        self._tx_domain = tx_domain
        self._tx_clk_domain = tx_clk_domain or tx_domain
        super().__init__({
            "rx_data": Out(data.ArrayLayout(4, 2)), "rx_ctl": Out(data.ArrayLayout(1, 2)),
            "tx_data": In(data.ArrayLayout(4, 2)), "tx_ctl": In(data.ArrayLayout(1, 2)),
            "tx_clk": In(data.ArrayLayout(1, 2)),
            "rx_clk": Out(1),
        })

    def _pin(self, *names):
        for name in names:
            if hasattr(self._pins, name):
                return getattr(self._pins, name)
        raise AttributeError(f"RGMII resource has none of {names}")

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx_clk = rx_clk = io.Buffer("i", self._pin("rx_clk"))
        m.d.comb += self.rx_clk.eq(rx_clk.i)
        bufs = {
            "rxd": self._ddr("i", self._pin("rx_data"), i_domain=self._rx_domain),
            "rxc": self._ddr("i", self._pin("rx_ctl", "rx_ctrl"), i_domain=self._rx_domain),
            "txd": self._ddr("o", self._pin("tx_data"), o_domain=self._tx_domain),
            "txc": self._ddr("o", self._pin("tx_ctl", "tx_ctrl"), o_domain=self._tx_domain),
            "txk": self._ddr("o", self._pin("tx_clk"), o_domain=self._tx_clk_domain),
        }
        for name, buf in bufs.items():
            m.submodules[name] = buf
        # One more register on the way out, whose only load is its output
        # DDR register: the placer can put it beside the pin, so the wire
        # across the die (from wherever the MAC sits) has a whole clock with
        # no logic on it. Without it ``rgmii_tx`` came out between 93 and
        # 140 MHz after placement, by where the pins and the MAC landed.
        # Data, control and the clock pattern are delayed alike.
        tx_data, tx_ctl, tx_clk = (Signal.like(self.tx_data), Signal.like(self.tx_ctl),
                                   Signal.like(self.tx_clk))
        m.d[self._tx_domain] += [tx_data.eq(self.tx_data), tx_ctl.eq(self.tx_ctl),
                                 tx_clk.eq(self.tx_clk)]
        m.d.comb += [
            self.rx_data.eq(bufs["rxd"].i), self.rx_ctl.eq(bufs["rxc"].i),
            bufs["txd"].o.eq(tx_data), bufs["txc"].o.eq(tx_ctl),
        ]
        if self._tx_clk_domain == self._tx_domain:
            m.d.comb += bufs["txk"].o.eq(tx_clk)
        else:
            # The one crossing into the shifted domain (see the module docstring).
            clk_pattern = Signal.like(self.tx_clk)
            m.d[self._tx_clk_domain] += clk_pattern.eq(tx_clk)
            m.d.comb += bufs["txk"].o.eq(clk_pattern)
        return m
