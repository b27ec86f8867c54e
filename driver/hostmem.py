"""Host RAM for every backend, on cocotbext-axi's address-space models.

:class:`HostMemory` is an ``AddressSpace`` holding one ``Pool`` at
:data:`DEFAULT_BASE`; every :meth:`HostMemory.alloc` registers a fresh
``MemoryRegion`` in that pool. Addresses outside a live region are unmapped:
the address space raises on them, which is how the card sees a DMA bus error.
The models are plain async Python, so the reference model uses them directly,
and the cocotb backend attaches an ``AxiSlave`` to :attr:`HostMemory.space`
so the gateware's DMA port reaches the very same bytes.
"""

from cocotbext.axi import AddressSpace

from .bus import BusError

__all__ = ["HostMemory", "HostMemoryBus", "DEFAULT_BASE", "DEFAULT_SIZE"]

#: Where the pool starts: above 4 GiB, so ``BASE_HI`` and the upper 32 address
#: bits of every descriptor are exercised.
DEFAULT_BASE = 0x1_0000_0000
#: Pool size; regions are created lazily, so only what is allocated costs RAM.
DEFAULT_SIZE = 1 << 28


class HostMemory:
    """DMA-able host memory with an allocator.

    Parameters
    ----------
    base : int
        DMA address of the first byte of the pool.
    size : int
        Pool size in bytes (a power of two: the buddy allocator wants one).

    Attributes
    ----------
    space : cocotbext.axi.AddressSpace
        The whole 64-bit address space; attach bus slave models here.
    pool : cocotbext.axi.Pool
        The allocatable part of :attr:`space`.
    """

    def __init__(self, base=DEFAULT_BASE, size=DEFAULT_SIZE):
        self.space = AddressSpace(2**64)
        self.pool = self.space.create_pool(base, size)
        self._regions = {}   # DMA address -> (pool offset, region)

    def alloc(self, size, align=64):
        """Allocate ``size`` zeroed bytes aligned to ``align``; return the DMA address.

        The region is rounded up to a multiple of ``align`` so that a bus
        master reading whole aligned words never touches unmapped bytes.
        Buddy blocks are aligned to their own (power-of-two) size, which is
        at least ``align`` here.
        """
        if size <= 0:
            raise ValueError(f"allocation size must be positive, not {size}")
        if align <= 0 or align & (align - 1):
            raise ValueError(f"alignment must be a power of two, not {align}")
        size = -(-size // align) * align
        region = self.pool.alloc_region(size)
        addr = region.get_absolute_address(0)
        assert addr % align == 0
        self._regions[addr] = (addr - self.pool.base, region)
        return addr

    def free(self, addr):
        """Release the region that :meth:`alloc` returned at ``addr``."""
        try:
            offset, region = self._regions.pop(addr)
        except KeyError:
            raise ValueError(f"{addr:#x} is not an allocation") from None
        # cocotbext-axi's Pool has no "unregister": drop the region and give
        # the block back to the buddy allocator ourselves.
        self.pool.regions = [entry for entry in self.pool.regions if entry[3] is not region]
        self.pool.allocator.free(offset)

    def contains(self, addr, length=1):
        """True when ``[addr, addr + length)`` lies inside one live region."""
        for start, (_, region) in self._regions.items():
            if start <= addr and addr + length <= start + region.size:
                return True
        return False

    async def read(self, addr, length):
        """Read host memory; raise :class:`BusError` on an unmapped byte."""
        if length == 0:
            return b""
        try:
            return bytes(await self.space.read(addr, length))
        except BusError:
            raise
        except Exception as exc:   # cocotbext-axi raises bare Exception/ValueError
            raise BusError(f"host memory read of {length} bytes at {addr:#x}: {exc}") from None

    async def write(self, addr, data):
        """Write host memory; raise :class:`BusError` on an unmapped byte.

        The range is checked first, so a failing write changes nothing.
        """
        data = bytes(data)
        if not data:
            return
        if not self.contains(addr, len(data)):
            raise BusError(f"host memory write of {len(data)} bytes at {addr:#x}: unmapped")
        await self.space.write(addr, data)


class HostMemoryBus:
    """Mixin: the host-memory half of a :class:`~tlsnic.driver.bus.Bus`,
    delegated to ``self.memory`` (a :class:`HostMemory`)."""

    def alloc(self, size, align=64):
        return self.memory.alloc(size, align)

    def free(self, addr):
        self.memory.free(addr)

    async def mem_read(self, addr, length):
        return await self.memory.read(addr, length)

    async def mem_write(self, addr, data):
        await self.memory.write(addr, data)
