"""The bus the driver talks to: registers, host memory and the interrupt line.

Every backend (the reference model in ``cosim/model.py``, cocotb over the
gateware in ``cosim/tb.py``, later a link to a real board) implements
:class:`Bus`; the driver (:mod:`tlsnic.driver.device`) uses nothing else, so it
runs unchanged on all of them.

Host memory is shared code: backends normally delegate the four memory methods
to one :class:`tlsnic.driver.hostmem.HostMemory`.
"""

from typing import Protocol, runtime_checkable

__all__ = ["Bus", "BusError", "NoProgress"]


class BusError(Exception):
    """An access the bus rejected.

    Raised for a CSR access to an address the card does not decode (SLVERR on
    AXI4-Lite) and for a host-memory access outside any allocated region.
    """


class NoProgress(Exception):
    """Waiting would never end.

    Raised by a backend that can prove nothing will change while the caller
    waits: the reference model only acts when it is called, so a wait for an
    interrupt that is not already pending is a bug in the caller (or in the
    card), never something worth hanging for.
    """


@runtime_checkable
class Bus(Protocol):
    """What the driver needs from a backend. All I/O is ``async``.

    CSR space
        ``read32`` / ``write32``: 32-bit registers at byte addresses of
        :class:`tlsnic.abi.Reg`, :class:`tlsnic.abi.Queue` blocks and the
        counters. An undecoded address raises :class:`BusError`.
    Host memory
        ``alloc`` returns a DMA address the card can reach; ``mem_read`` /
        ``mem_write`` access it from the host side. Memory is zeroed when
        allocated.
    Interrupt
        ``wait_irq`` returns once the interrupt line is asserted (at once if it
        already is). It does not acknowledge anything: the driver clears
        ``IRQ_STATUS`` itself. A backend that can never see the line rise
        raises :class:`NoProgress`; one with a time budget raises
        ``TimeoutError`` when it runs out.
    """

    async def read32(self, addr: int) -> int:
        """Read the 32-bit register at byte address ``addr``."""
        ...

    async def write32(self, addr: int, value: int) -> None:
        """Write the 32-bit register at byte address ``addr``."""
        ...

    def alloc(self, size: int, align: int = 64) -> int:
        """Allocate ``size`` bytes of zeroed host memory; return its DMA address."""
        ...

    def free(self, addr: int) -> None:
        """Release memory obtained from :meth:`alloc`."""
        ...

    async def mem_read(self, addr: int, length: int) -> bytes:
        """Read ``length`` bytes of host memory at ``addr``."""
        ...

    async def mem_write(self, addr: int, data: bytes) -> None:
        """Write ``data`` to host memory at ``addr``."""
        ...

    async def wait_irq(self) -> None:
        """Return when the interrupt line is asserted."""
        ...
