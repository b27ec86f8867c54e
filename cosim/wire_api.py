"""The network side of the card, as a test sees it.

A :class:`Wire` stands where the cables would be: a test puts frames into the
card's ports with :meth:`Wire.send` and takes what the card transmitted with
:meth:`Wire.recv`. The reference model provides one (``ReferenceNic.wire``);
the cocotb backend provides another over the gateware's streams
(``cosim/tb.py``). Scenarios use only this interface, so they run on both.
"""

import abc

__all__ = ["Wire"]


class Wire(abc.ABC):
    """Frames in and out of the card's Ethernet ports (no preamble, no FCS)."""

    @abc.abstractmethod
    async def send(self, frame: bytes, port: int = 0) -> None:
        """Offer ``frame`` to the card's receive side of ``port``.

        Returns once the frame is queued for the port; the card takes it when
        it can (it back-pressures while it has no RX buffer or no RX completion
        entry), and frames of one port enter in the order they were sent.
        """

    @abc.abstractmethod
    async def recv(self, port: int = 0) -> bytes:
        """Return the next frame the card transmitted on ``port``.

        Waits for one if none is there yet. A backend that can tell none will
        ever come raises :class:`tlsnic.driver.bus.NoProgress`; one with a time
        budget raises ``TimeoutError``.
        """

    @abc.abstractmethod
    def pending(self, port: int = 0) -> int:
        """Number of transmitted frames on ``port`` waiting for :meth:`recv`."""
