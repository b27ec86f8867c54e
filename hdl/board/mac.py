"""Ethernet MAC between the RGMII byte streams and the NIC's 64-bit streams.

::

    PHY clock (rx)                              core clock (sync)
    RgmiiRx ─> MacRx ─────────> AsyncFIFO ─> RxFrameStore ─> rx (AXI4-Stream to the NIC)
               preamble, FCS check,          PacketBuffer: commit good
               runt / size limits;           frames, drop the rest
               the verdict rides on
               the last word

    125 MHz (tx)                                     core clock (sync)
    RgmiiTx <─ MacTx <──── AsyncFIFOBuffered <─ PacketBuffer <─ tx (AXI4-Stream from the NIC)
               preamble/SFD, pad,                store and forward
               FCS, inter-frame gap

Why it is built this way
------------------------

* **Receive decides at the frame's end.** The FCS is only known after the last
  byte, so :class:`MacRx` sends a frame's words on as they fill and its
  verdict (good FCS, 64 bytes or more, no ``RX_ER``) with the last one, and
  :class:`RxFrameStore` writes them into a :class:`PacketBuffer`
  speculatively and commits the frame or drops it. The NIC behind it never
  sees a bad frame and needs no error flag on its stream. The FCS itself is
  never written: a four-byte delay line holds the newest bytes back until the
  frame is known to go on, and the CRC is checked by residue
  (:data:`~.crc.CRC32_RESIDUE`), so no byte alignment of the FCS is needed.
* **Only framing runs on the PHY's clock.** The receive buffer (block RAM)
  is in the core domain, as the transmit one is: at 73 % of an ECP5-85 the
  placer puts block RAM wherever rows are free, and the receive clock's
  failing paths in the routed board were wire to that RAM's enables. The
  crossing FIFO is LUT RAM, written at most one word per eight PHY clocks
  (two in a row at a frame's end) and read every core clock.
* **The wire cannot wait.** Receive never back-pressures the PHY: when the
  buffer is full the frame being received is dropped and counted
  (``RX_OVERFLOW``). Frames already committed still leave in order when the NIC
  takes them again. Nothing stalls forever. With a core clock too slow to
  empty the crossing (below an eighth of the PHY's, with margin), a frame that
  finds it full is dropped and counted the same way.
* **Transmit never underruns.** Frames are stored whole in the core domain
  before any byte leaves, then cross to the 125 MHz transmit domain at one word
  per core clock, eight times the wire's byte rate, so :class:`MacTx` finds
  every word in time. Should the supply still run dry (a core clock below
  1/8 of the line rate), :class:`MacTx` ends the frame with ``TX_ER`` so the
  peer discards it, drains the rest and counts ``TX_UNDERRUN``. A frame larger
  than the buffer is dropped (``TX_OVERSIZE``) instead of blocking the NIC.
* **Counters live in the core domain.** Each event is a one-cycle pulse in its
  own domain, at most one per frame, carried across by a
  :class:`~amaranth.lib.cdc.PulseSynchronizer`.

Frame sizes follow IEEE 802.3: frames shorter than 64 bytes with FCS are runts
and dropped; transmit pads to 60 bytes before the FCS. The upper limit is the
card's :data:`tlsnic.abi.MAX_FRAME` (jumbo frames) without FCS.
"""

import enum

from amaranth import *
from amaranth.lib import cdc, data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from tlsnic import abi
from ..host.axi import AxiStreamSignature
from ..net.frame import FrameWord, WORD_BYTES, keep_count
from .crc import CRC32_ETH, CRC32_RESIDUE, crc_byte
from .packet_buffer import PacketBuffer
from .rgmii import GmiiByte

__all__ = ["MacCounter", "RxWord", "MacRx", "RxFrameStore", "MacTx", "Mac",
           "PREAMBLE", "SFD", "MIN_FRAME", "IFG_BYTES"]

PREAMBLE = 0x55
SFD = 0xD5
#: Shortest frame on the wire, FCS included.
MIN_FRAME = 64
FCS_BYTES = 4
#: Inter-frame gap in byte times.
IFG_BYTES = 12


class MacCounter(enum.IntEnum):
    """The MAC's event counters, in register order (board register block)."""
    RX_OK = 0
    RX_FCS_ERRORS = 1
    RX_RUNTS = 2
    RX_OVERSIZE = 3
    RX_OVERFLOW = 4
    RX_PHY_ERRORS = 5
    TX_OK = 6
    TX_UNDERRUN = 7
    TX_OVERSIZE = 8


class RxWord(data.Struct):
    """A word of a received frame on its way from :class:`MacRx` to
    :class:`RxFrameStore`: the frame's verdict travels with its last word."""
    word: FrameWord
    drop: 1     #: with ``word.last``: the frame is bad (or lost words), forget it


class MacRx(wiring.Component):
    """Receive framing in the PHY's receive domain (``sync`` here).

    Writes each frame's words, FCS stripped, towards a FIFO as they complete
    and the frame's verdict with its last word: good (a 64-byte frame or
    longer, FCS right, no ``RX_ER``) or ``drop``. An oversize frame is closed
    with a ``drop`` word when it passes ``max_frame`` and the rest of it is
    ignored. The wire cannot wait: a word that finds the FIFO full is lost, so
    is the rest of its frame, and the frame is closed with a ``drop`` word as
    soon as there is room (a frame that starts before then is lost whole).

    Parameters
    ----------
    max_frame : int
        Longest frame accepted, FCS not counted.

    Members
    -------
    stb, byte : In
        From :class:`~.rgmii.RgmiiRx`.
    w_data : Out(RxWord)
    w_en : Out(1)
    w_rdy : In(1)
        A FIFO's write port.
    ev_fcs, ev_runt, ev_oversize, ev_phy, ev_lost : Out(1)
        One-cycle pulses, at most one per frame; ``ev_lost``: the frame was
        lost to a full FIFO (and had no other fault).
    """
    def __init__(self, *, max_frame=abi.MAX_FRAME):
        self.max_frame = max_frame
        super().__init__({
            "stb": In(1), "byte": In(GmiiByte),
            "w_data": Out(RxWord), "w_en": Out(1), "w_rdy": In(1),
            "ev_fcs": Out(1), "ev_runt": Out(1), "ev_oversize": Out(1), "ev_phy": Out(1),
            "ev_lost": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        crc = Signal(32)
        count = Signal(range(self.max_frame + FCS_BYTES + 2))   # bytes, FCS included
        hold = Signal(32)           # the newest bytes: maybe the FCS
        held = Signal(range(5))
        word = Signal(64)
        fill = Signal(range(WORD_BYTES + 1))
        phy_error = Signal()
        # The frame's verdicts as registers, each computed with the byte that
        # settles it, so the end-of-frame decision starts from flip-flops, not
        # from a 32-bit compare of the CRC or the byte count's: that chain was
        # the receive clock's critical path (7.4 ns routed alone; 118 MHz and
        # less in the board).
        fcs_good = Signal()         # crc == CRC32_RESIDUE
        short = Signal()            # count < MIN_FRAME
        at_max = Signal()           # count == max_frame + FCS_BYTES
        lost = Signal()             # a word of this frame found the FIFO full
        owed = Signal()             # a lost frame still needs its closing drop word
        b = self.byte

        def take(m, crc_before, count_after):
            """Account for data byte ``b`` (the CRC, the count and the verdicts)."""
            crc_after = crc_byte(CRC32_ETH, crc_before, b.data)
            m.d.sync += [crc.eq(crc_after), count.eq(count_after),
                         fcs_good.eq(crc_after == CRC32_RESIDUE),
                         short.eq(count_after < MIN_FRAME),
                         at_max.eq(count_after == self.max_frame + FCS_BYTES)]

        def emit(m, data, keep, last, drop):
            """Write a word of this frame, unless the frame is lost already."""
            with m.If(~lost):
                m.d.comb += [self.w_data.word.data.eq(data), self.w_data.word.keep.eq(keep),
                             self.w_data.word.last.eq(last), self.w_data.drop.eq(drop),
                             self.w_en.eq(1)]
                with m.If(~self.w_rdy):
                    m.d.sync += lost.eq(1)

        def close(m, bad):
            """End the frame: its last word with the verdict, or, if words were
            (or this one would be) lost, a drop word owed. ``bad``: counted
            already; else the loss is counted."""
            with m.If(lost | ~self.w_rdy):
                m.d.sync += owed.eq(1)
                m.d.comb += self.ev_lost.eq(~bad)

        def release(m, byte):
            """Put the byte that left the delay line into the word being filled."""
            with m.If(fill == WORD_BYTES):
                emit(m, word, 0xFF, 0, 0)
                m.d.sync += [word.eq(byte), fill.eq(1)]
            with m.Else():
                m.d.sync += [word.word_select(fill, 8).eq(byte), fill.eq(fill + 1)]

        # The owed drop word goes out in the first cycle with room. No word of
        # a frame may go before it: a frame that starts while it is owed is
        # lost from its start (see START), so ``emit`` is idle whenever it is.
        with m.If(owed & self.w_rdy):
            m.d.comb += [self.w_data.word.last.eq(1), self.w_data.drop.eq(1), self.w_en.eq(1)]
            m.d.sync += owed.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.stb & b.dv):
                    with m.If(b.data == SFD):
                        m.next = "START"
                    with m.Elif(b.data == PREAMBLE):
                        m.next = "PREAMBLE"
                    with m.Else():
                        m.next = "DISCARD"
            with m.State("PREAMBLE"):
                with m.If(self.stb):
                    with m.If(~b.dv):
                        m.next = "IDLE"
                    with m.Elif(b.data == SFD):
                        m.next = "START"
                    with m.Elif(b.data != PREAMBLE):
                        m.next = "DISCARD"
            with m.State("START"):
                # The owed drop word, if any, is written now or the frame is lost.
                m.d.sync += [crc.eq(CRC32_ETH.init), count.eq(0), held.eq(0), fill.eq(0),
                             phy_error.eq(0), fcs_good.eq(0), short.eq(1), at_max.eq(0),
                             lost.eq(owed & ~self.w_rdy)]
                m.next = "DATA"
                # The first data byte may be here already (1000 Mb/s): take it.
                with m.If(self.stb):
                    with m.If(~b.dv):
                        m.d.comb += self.ev_runt.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        take(m, C(CRC32_ETH.init, 32), 1)
                        m.d.sync += [hold.eq(b.data), held.eq(1), phy_error.eq(b.er)]
            with m.State("DATA"):
                with m.If(self.stb & b.dv):
                    take(m, crc, count + 1)
                    m.d.sync += phy_error.eq(phy_error | b.er)
                    with m.If(at_max):
                        # Closed here, before the byte that would make it too long.
                        emit(m, word, 0, 1, 1)
                        close(m, bad=1)
                        m.d.comb += self.ev_oversize.eq(1)
                        m.next = "DISCARD"
                    with m.Elif(held == FCS_BYTES):
                        release(m, hold[:8])
                        m.d.sync += hold.eq(Cat(hold[8:], b.data))
                    with m.Else():
                        m.d.sync += [hold.word_select(held, 8).eq(b.data), held.eq(held + 1)]
                with m.Elif(self.stb):
                    # End of frame: the four held bytes are the FCS.
                    m.next = "IDLE"
                    bad = Signal()
                    m.d.comb += bad.eq(short | phy_error | ~fcs_good)
                    emit(m, word, (1 << fill) - 1, 1, bad)
                    close(m, bad)
                    with m.If(short):
                        m.d.comb += self.ev_runt.eq(1)
                    with m.Elif(phy_error):
                        m.d.comb += self.ev_phy.eq(1)
                    with m.Elif(~fcs_good):
                        m.d.comb += self.ev_fcs.eq(1)
            with m.State("DISCARD"):
                with m.If(self.stb & ~b.dv):
                    m.next = "IDLE"
        return m


class RxFrameStore(wiring.Component):
    """The receive frame buffer, in the core domain (``sync`` here).

    Takes :class:`RxWord` s from a FIFO's read port every cycle they are there
    (never holding the FIFO back) into a :class:`PacketBuffer`, commits a frame
    with a good last word and forgets one closed with ``drop``. When the buffer
    is full the frame being stored is dropped and counted, and the rest of it
    skipped; committed frames still leave in order when the NIC takes them.

    Parameters
    ----------
    depth : int
        Words of frame buffer (a power of two).

    Members
    -------
    r_data : In(RxWord)
    r_rdy : In(1)
    r_en : Out(1)
        A FIFO's read port.
    frames : Out(stream.Signature(FrameWord))
        Good frames, FCS stripped.
    ev_ok, ev_overflow : Out(1)
        One-cycle pulses, at most one per frame.
    """
    def __init__(self, *, depth=2048):
        self.depth = depth
        super().__init__({
            "r_data": In(RxWord), "r_rdy": In(1), "r_en": Out(1),
            "frames": Out(stream.Signature(FrameWord)),
            "ev_ok": Out(1), "ev_overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.buf = buf = PacketBuffer(FrameWord, self.depth)
        wiring.connect(m, buf.r, wiring.flipped(self.frames))
        w = self.r_data
        m.d.comb += [self.r_en.eq(1), buf.w_data.eq(w.word)]
        with m.FSM():
            with m.State("STORE"):
                with m.If(self.r_rdy):
                    with m.If(w.word.last & w.drop):
                        m.d.comb += buf.w_drop.eq(1)
                    with m.Elif(buf.w_full):
                        m.d.comb += [buf.w_drop.eq(1), self.ev_overflow.eq(1)]
                        with m.If(~w.word.last):
                            m.next = "SKIP"
                    with m.Else():
                        m.d.comb += [buf.w_en.eq(1), buf.w_commit.eq(w.word.last),
                                     self.ev_ok.eq(w.word.last)]
            with m.State("SKIP"):
                with m.If(self.r_rdy & w.word.last):
                    m.next = "STORE"
        return m


class MacTx(wiring.Component):
    """Transmit framing in the 125 MHz transmit domain (``sync`` here).

    Members
    -------
    frames : In(stream.Signature(FrameWord))
        Frames without FCS; a frame's words must follow each other in time
        (see the module docstring), else it is cut with ``TX_ER``.
    stb : In(1)
        From :class:`~.rgmii.RgmiiTx`: ``byte`` is taken this cycle.
    byte : Out(GmiiByte)
    ev_ok, ev_underrun : Out(1)
    """
    frames: In(stream.Signature(FrameWord))
    stb: In(1)
    byte: Out(GmiiByte)
    ev_ok: Out(1)
    ev_underrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        cur = Signal(FrameWord)
        idx = Signal(range(WORD_BYTES))
        crc = Signal(32)
        count = Signal(range(MIN_FRAME + 1))     # data bytes, saturating past the pad length
        step = Signal(range(max(IFG_BYTES, 8)))  # preamble byte / FCS byte / gap countdown
        # Bytes of ``cur`` after the one at ``idx``, counted down, so "last
        # byte of the word" is one compare of a register. It was ``idx + 1 >=
        # keep_count(cur.keep)``: a popcount and a carry chain in front of
        # ``frames.ready``, which goes on into the CDC FIFO's read pointer and
        # its LUT RAM address: the transmit clock's critical path (116.8 MHz
        # routed alone, tools/synth_board_pieces.py; 93-140 MHz in the board).
        left = Signal(range(WORD_BYTES))
        incoming = keep_count(self.frames.payload.keep)
        first_left = Mux(incoming == 0, 0, incoming - 1)
        out = self.byte

        def send(m, byte):
            m.d.comb += [out.data.eq(byte), out.dv.eq(1)]
            with m.If(self.stb):
                m.d.sync += crc.eq(crc_byte(CRC32_ETH, crc, byte))
                with m.If(count != MIN_FRAME):
                    m.d.sync += count.eq(count + 1)

        def to_fcs(m):
            m.d.sync += step.eq(0)
            with m.If(count + 1 < MIN_FRAME - FCS_BYTES):
                m.next = "PAD"
            with m.Else():
                m.next = "FCS"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.stb & (step != 0)):
                    m.d.sync += step.eq(step - 1)
                with m.If((step == 0) & self.frames.valid):
                    m.d.comb += self.frames.ready.eq(1)
                    m.d.sync += [cur.eq(self.frames.payload), idx.eq(0), left.eq(first_left),
                                 step.eq(0)]
                    m.next = "PREAMBLE"
            with m.State("PREAMBLE"):
                m.d.comb += [out.data.eq(Mux(step == 7, SFD, PREAMBLE)), out.dv.eq(1)]
                with m.If(self.stb):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == 7):
                        m.d.sync += [crc.eq(CRC32_ETH.init), count.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                send(m, cur.data.word_select(idx, 8))
                with m.If(self.stb):
                    m.d.sync += [idx.eq(idx + 1), left.eq(left - 1)]
                    with m.If(left == 0):
                        with m.If(cur.last):
                            to_fcs(m)
                        with m.Elif(self.frames.valid):
                            m.d.comb += self.frames.ready.eq(1)
                            m.d.sync += [cur.eq(self.frames.payload), idx.eq(0),
                                         left.eq(first_left)]
                        with m.Else():
                            m.next = "UNDERRUN"
            with m.State("PAD"):
                send(m, 0)
                with m.If(self.stb & (count + 1 >= MIN_FRAME - FCS_BYTES)):
                    to_fcs(m)
            with m.State("FCS"):
                m.d.comb += [out.data.eq((~crc).word_select(step[:2], 8)), out.dv.eq(1)]
                with m.If(self.stb):
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == FCS_BYTES - 1):
                        m.d.comb += self.ev_ok.eq(1)
                        # IDLE's own first cycle is a gap byte too.
                        m.d.sync += step.eq(IFG_BYTES - 1)
                        m.next = "IDLE"
            with m.State("UNDERRUN"):
                # One byte time with TX_ER: the peer's PHY turns it into an error
                # symbol and the frame is discarded whatever its FCS.
                m.d.comb += [out.dv.eq(1), out.er.eq(1)]
                with m.If(self.stb):
                    m.d.comb += self.ev_underrun.eq(1)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.frames.ready.eq(1)
                with m.If(self.frames.valid & self.frames.payload.last):
                    m.d.sync += step.eq(IFG_BYTES - 1)
                    m.next = "IDLE"
        return m


class Mac(wiring.Component):
    """One Ethernet port: receive and transmit framing plus the clock-domain crossings.

    Parameters
    ----------
    rx_domain, tx_domain : str
        The PHY receive clock domain and the 125 MHz transmit domain. The
        NIC side is ``sync``.
    rx_depth, tx_depth : int
        Frame buffer words on each side (powers of two, at least one
        :data:`~tlsnic.abi.MAX_FRAME` frame).
    cdc_depth : int
        Words of each clock-domain crossing FIFO (the transmit one has one
        more, its output register).

    Members
    -------
    rx : Out(AxiStreamSignature(64))
        Received frames, to the NIC's ``rx[i]``.
    tx : In(AxiStreamSignature(64))
        Frames to send, from the NIC's ``tx[i]``.
    rx_stb, rx_byte : In
        From :class:`~.rgmii.RgmiiRx` (``rx_domain``).
    tx_stb : In(1)
    tx_byte : Out(GmiiByte)
        To/from :class:`~.rgmii.RgmiiTx` (``tx_domain``).
    counters : Out(ArrayLayout(32, len(MacCounter)))
        Wrapping event counters, ``sync`` domain.
    """
    def __init__(self, *, rx_domain="rgmii_rx", tx_domain="rgmii_tx", rx_depth=2048,
                 tx_depth=2048, cdc_depth=16, max_frame=abi.MAX_FRAME):
        for depth in (rx_depth, tx_depth):
            assert (depth - 1) * WORD_BYTES >= max_frame, "a maximal frame must fit each buffer"
        self._rx_domain = rx_domain
        self._tx_domain = tx_domain
        self._rx_depth = rx_depth
        self._tx_depth = tx_depth
        self._cdc_depth = cdc_depth
        self._max_frame = max_frame
        super().__init__({
            "rx": Out(AxiStreamSignature(data_width=64)),
            "tx": In(AxiStreamSignature(data_width=64)),
            "rx_stb": In(1), "rx_byte": In(GmiiByte),
            "tx_stb": In(1), "tx_byte": Out(GmiiByte),
            "counters": Out(data.ArrayLayout(32, len(MacCounter))),
        })

    def elaborate(self, platform):
        m = Module()
        rxd, txd = self._rx_domain, self._tx_domain
        width = Shape.cast(FrameWord).width

        # ---- receive ----
        # Only the framing runs on the PHY's clock; the frame buffer (block
        # RAM) is on the core's, behind the crossing, as on transmit. In the
        # routed board the receive clock's failing paths ran to that RAM's
        # enables, wherever the placer had found free block RAM (7.5 ns of
        # wire at 14abc8c).
        m.submodules.rx_mac = rx_mac = DomainRenamer(rxd)(MacRx(max_frame=self._max_frame))
        m.submodules.rx_cdc = rx_cdc = fifo.AsyncFIFO(
            width=Shape.cast(RxWord).width, depth=self._cdc_depth, w_domain=rxd,
            r_domain="sync")
        m.submodules.rx_store = rx_store = RxFrameStore(depth=self._rx_depth)
        m.d.comb += [
            rx_mac.stb.eq(self.rx_stb), rx_mac.byte.eq(self.rx_byte),
            rx_cdc.w_data.eq(rx_mac.w_data), rx_cdc.w_en.eq(rx_mac.w_en),
            rx_mac.w_rdy.eq(rx_cdc.w_rdy),
            rx_store.r_data.eq(rx_cdc.r_data), rx_store.r_rdy.eq(rx_cdc.r_rdy),
            rx_cdc.r_en.eq(rx_store.r_en),
            self.rx.tvalid.eq(rx_store.frames.valid),
            self.rx.tdata.eq(rx_store.frames.payload.data),
            self.rx.tkeep.eq(rx_store.frames.payload.keep),
            self.rx.tlast.eq(rx_store.frames.payload.last),
            rx_store.frames.ready.eq(self.rx.tready),
        ]

        # ---- transmit ----
        m.submodules.tx_buf = tx_buf = PacketBuffer(FrameWord, self._tx_depth)
        tx_oversize = Signal()
        with m.FSM(name="tx_store"):
            with m.State("STORE"):
                m.d.comb += [
                    tx_buf.w_data.data.eq(self.tx.tdata), tx_buf.w_data.keep.eq(self.tx.tkeep),
                    tx_buf.w_data.last.eq(self.tx.tlast),
                    tx_buf.w_en.eq(self.tx.tvalid),
                    tx_buf.w_commit.eq(self.tx.tvalid & self.tx.tlast & ~tx_buf.w_full),
                    self.tx.tready.eq(~tx_buf.w_full),
                ]
                with m.If(self.tx.tvalid & tx_buf.w_full & tx_buf.w_alone):
                    # The open frame alone fills the buffer: it never will fit.
                    m.d.comb += [tx_buf.w_drop.eq(1), tx_oversize.eq(1), self.tx.tready.eq(1)]
                    with m.If(~self.tx.tlast):
                        m.next = "SKIP"
            with m.State("SKIP"):
                m.d.comb += self.tx.tready.eq(1)
                with m.If(self.tx.tvalid & self.tx.tlast):
                    m.next = "STORE"
        # Buffered: the word MacTx takes (and counts the bytes of) comes from a
        # register in its own domain, not through the LUT RAM's read mux from
        # a pointer, on wire that the placer stretches between the two domains
        # (the transmit clock's path in the board: 118.9 MHz placed at f1dc0e8).
        # And a two-word FIFO between them, whose ready depends on its own
        # level only: MacTx's ``ready`` (a decode of its state) no longer
        # reaches the crossing's read pointer, which addresses the LUT RAM
        # wherever it sits (85.6 and 89.0 MHz placed at 10f1c8f and 506c591
        # with the tables unfolded, where the RAM went to the NIC's side).
        m.submodules.tx_cdc = tx_cdc = fifo.AsyncFIFOBuffered(
            width=width, depth=self._cdc_depth + 1, w_domain="sync", r_domain=txd)
        m.submodules.tx_skid = tx_skid = DomainRenamer(txd)(fifo.SyncFIFOBuffered(width=width, depth=2))
        m.submodules.tx_mac = tx_mac = DomainRenamer(txd)(MacTx())
        m.d.comb += [
            tx_cdc.w_data.eq(tx_buf.r.payload), tx_cdc.w_en.eq(tx_buf.r.valid),
            tx_buf.r.ready.eq(tx_cdc.w_rdy),
            tx_skid.w_data.eq(tx_cdc.r_data), tx_skid.w_en.eq(tx_cdc.r_rdy),
            tx_cdc.r_en.eq(tx_skid.w_rdy),
            tx_mac.frames.payload.eq(tx_skid.r_data), tx_mac.frames.valid.eq(tx_skid.r_rdy),
            tx_skid.r_en.eq(tx_mac.frames.ready),
            tx_mac.stb.eq(self.tx_stb), self.tx_byte.eq(tx_mac.byte),
        ]

        # ---- counters ----
        # RX_OVERFLOW has two sources: a frame that found the core's buffer
        # full, and (with a core clock too slow for the line) one that found
        # the crossing full.
        events = [
            (MacCounter.RX_OK, "sync", rx_store.ev_ok),
            (MacCounter.RX_FCS_ERRORS, rxd, rx_mac.ev_fcs),
            (MacCounter.RX_RUNTS, rxd, rx_mac.ev_runt),
            (MacCounter.RX_OVERSIZE, rxd, rx_mac.ev_oversize),
            (MacCounter.RX_OVERFLOW, "sync", rx_store.ev_overflow),
            (MacCounter.RX_OVERFLOW, rxd, rx_mac.ev_lost),
            (MacCounter.RX_PHY_ERRORS, rxd, rx_mac.ev_phy),
            (MacCounter.TX_OK, txd, tx_mac.ev_ok),
            (MacCounter.TX_UNDERRUN, txd, tx_mac.ev_underrun),
            (MacCounter.TX_OVERSIZE, "sync", tx_oversize),
        ]
        strobes = {c: [] for c in MacCounter}
        for c, domain, pulse in events:
            if domain == "sync":
                strobes[c].append(pulse)
            else:
                ps = cdc.PulseSynchronizer(i_domain=domain, o_domain="sync")
                name = f"ps_{c.name.lower()}"
                m.submodules[name + f"_{len(strobes[c])}" * bool(strobes[c])] = ps
                m.d.comb += ps.i.eq(pulse)
                strobes[c].append(ps.o)
        for c, pulses in strobes.items():
            m.d.sync += self.counters[c].eq(self.counters[c] + sum(pulses))
        return m
