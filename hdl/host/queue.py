"""Ring registers: one queue's base, size, enable and its two indices.

A *submission* ring (TXQ, RXQ) is produced by the host: the host's index is
``PROD`` (the doorbell) and the card advances ``CONS``. A *completion* ring
(TXCQ, RXCQ) is produced by the card: the card advances ``PROD`` and the host
writes ``CONS`` back. Indices are free-running 16-bit counters (``tlsnic.abi``).
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tlsnic.abi import QueueReg, QUEUE_ENABLE, DESC_BYTES, MAX_LOG_RING

__all__ = ["Ring"]


class Ring(wiring.Component):
    """Registers and index arithmetic of one ring.

    Parameters
    ----------
    completion : bool
        A completion ring (card produces) rather than a submission ring.

    Members
    -------
    csr_offset, csr_wdata, csr_write : In
        A register write into this ring's block (``QueueReg`` offsets).
    csr_rdata : Out(32)
        Read data of the register at ``csr_offset``.
    advance : In(1)
        The card consumed (submission) or produced (completion) one entry.
    entry_addr : Out(64)
        Host address of the entry at the card's index.
    ready : Out(1)
        Enabled, and: an entry to consume (submission) / a free entry (completion).
    phase : Out(1)
        Completion rings: the phase bit to write into the entry at the card's index.
    """
    def __init__(self, *, completion):
        self.completion = completion
        super().__init__({
            "csr_offset": In(5), "csr_wdata": In(32), "csr_write": In(1), "csr_rdata": Out(32),
            "advance": In(1),
            "entry_addr": Out(64), "ready": Out(1), "phase": Out(1), "enabled": Out(1),
            "card_index": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        base = Signal(64)
        log_size = Signal(range(MAX_LOG_RING + 1))
        enable = Signal()
        host_index = Signal(16)
        card_index = self.card_index

        with m.If(self.csr_write):
            with m.Switch(self.csr_offset):
                with m.Case(QueueReg.BASE_LO):
                    with m.If(~enable):
                        m.d.sync += base[:32].eq(self.csr_wdata)
                with m.Case(QueueReg.BASE_HI):
                    with m.If(~enable):
                        m.d.sync += base[32:].eq(self.csr_wdata)
                with m.Case(QueueReg.CTRL):
                    new_enable = self.csr_wdata[31]
                    m.d.sync += enable.eq(new_enable)
                    with m.If(~enable):
                        m.d.sync += log_size.eq(Mux(self.csr_wdata[:5] > MAX_LOG_RING,
                                                    MAX_LOG_RING, self.csr_wdata[:5]))
                        # Enabling starts the card where the host is.
                        with m.If(new_enable):
                            m.d.sync += card_index.eq(host_index)
                with m.Case(QueueReg.CONS if self.completion else QueueReg.PROD):
                    m.d.sync += host_index.eq(self.csr_wdata[:16])
                with m.Default():
                    pass

        with m.Switch(self.csr_offset):
            with m.Case(QueueReg.BASE_LO):
                m.d.comb += self.csr_rdata.eq(base[:32])
            with m.Case(QueueReg.BASE_HI):
                m.d.comb += self.csr_rdata.eq(base[32:])
            with m.Case(QueueReg.CTRL):
                m.d.comb += self.csr_rdata.eq(Cat(log_size, C(0, 26), enable))
            with m.Case(QueueReg.PROD):
                m.d.comb += self.csr_rdata.eq(host_index if not self.completion else card_index)
            with m.Case(QueueReg.CONS):
                m.d.comb += self.csr_rdata.eq(card_index if not self.completion else host_index)
            with m.Default():
                pass

        with m.If(self.advance):
            m.d.sync += card_index.eq(card_index + 1)

        mask = Signal(16)
        m.d.comb += mask.eq((1 << log_size) - 1)
        size = Signal(17)
        m.d.comb += size.eq(1 << log_size)
        m.d.comb += [
            self.enabled.eq(enable),
            self.entry_addr.eq(base + ((card_index & mask) * DESC_BYTES)),
            self.phase.eq(~(card_index >> log_size)[0]),
        ]
        if self.completion:
            in_use = Signal(16)
            m.d.comb += in_use.eq(card_index - host_index)
            m.d.comb += self.ready.eq(enable & (in_use < size))
        else:
            m.d.comb += self.ready.eq(enable & (card_index != host_index))
        return m
