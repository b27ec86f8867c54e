"""The tlsnic driver: bring-up, rings, doorbells, completions, interrupts, statistics.

Shaped after taxi's ``cndm_proto`` driver model and Corundum's ``mqnic``: four
rings in host memory (TXQ, TXCQ, RXQ, RXCQ, see :mod:`tlsnic.abi`), producer
doorbells, completions owned by the host when their phase bit says so. The
driver only uses a :class:`~tlsnic.driver.bus.Bus`, so it runs on the
reference model, on the gateware under cocotb, or on a board.

Typical use::

    dev = Device(bus)
    await dev.open(tx_log=8, rx_log=8)
    index = await dev.send(frame, csum_l4=True)
    done = await dev.flush_tx()          # TxCompletionRecord list
    pkt = await dev.recv()               # RxFrame
    stats = await dev.update_stats()     # 64-bit totals
"""

import collections
import dataclasses
import enum as _py_enum

from tlsnic.abi import (
    COUNTER_BASE, DESC_BYTES, ID_MAGIC, MAX_FRAME, QUEUE_ENABLE, VERSION,
    Counter, Irq, Queue, QueueReg, Reg,
    RxCompletion, RxDescriptor, RxStatus, TxCompletion, TxDescriptor, TxFlags, TxOpcode,
    pack, unpack,
)

__all__ = ["Device", "DeviceCaps", "TxCompletionRecord", "RxFrame", "DriverError"]

INDEX_MASK = 0xFFFF   # ring indices are free-running 16-bit counters


class DriverError(Exception):
    """The card did something the ABI does not allow (or bring-up failed)."""


def _name(value):
    """An enum member's name, or a raw value as an int (for JSON)."""
    return value.name if isinstance(value, _py_enum.Enum) else int(value)


@dataclasses.dataclass(frozen=True)
class DeviceCaps:
    """What the card says about itself (the ``CAP_*`` registers)."""
    version: int
    stream_bytes: int
    dma_bytes: int
    tx_queues: int
    rx_queues: int
    ports: int
    max_log_ring: int
    tls: int
    tx_contexts: int
    rx_contexts: int
    max_frame: int


@dataclasses.dataclass(frozen=True)
class TxCompletionRecord:
    """One TX completion as the driver reaped it; ``raw`` is the 16-byte entry."""
    index: int
    opcode: object     # TxOpcode, or int for an opcode the ABI does not name
    status: object     # TxStatus, or int
    length: int
    tag: int
    aux: int
    raw: bytes

    @classmethod
    def from_raw(cls, raw):
        c = unpack(TxCompletion, raw)
        return cls(c.index, c.opcode, c.status, c.length, c.tag, c.aux, bytes(raw))

    def to_dict(self):
        """JSON-friendly form (enums by name, bytes as hex)."""
        return {"index": self.index, "opcode": _name(self.opcode), "status": _name(self.status),
                "length": self.length, "tag": self.tag, "aux": self.aux, "raw": self.raw.hex()}


@dataclasses.dataclass(frozen=True)
class RxFrame:
    """One received frame: the bytes placed in the buffer and its completion.

    ``data`` holds ``min(length, buffer size)`` bytes, or nothing when the
    status is ``DMA_ERROR`` (the buffer contents are undefined then).
    """
    data: bytes
    index: int
    status: object
    port: int
    length: int
    ip_csum: object
    l4_csum: object
    l3_proto: object
    l4_proto: object
    tag: int
    tls: object         # RxTlsStatus, or int
    auth_fail: bool
    dec_start: int
    dec_end: int
    resync_offset: object   # int (two's complement decoded), or None without a candidate
    raw: bytes

    def to_dict(self):
        """JSON-friendly form (enums by name, bytes as hex)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("status", "ip_csum", "l4_csum", "l3_proto", "l4_proto", "tls"):
            out[key] = _name(out[key])
        out["data"] = self.data.hex()
        out["raw"] = self.raw.hex()
        return out


class _Ring:
    """The host's side of one ring: memory, registers, the host's index.

    For a work queue (TXQ/RXQ) ``index`` is the producer the host rings; for a
    completion queue it is the consumer the host writes back.
    """

    def __init__(self, bus, block, log_size):
        self.bus = bus
        self.block = block
        self.log_size = log_size
        self.size = 1 << log_size
        self.index = 0
        self.base = None

    def reg(self, offset):
        return self.block + offset

    def slot_addr(self, index):
        return self.base + DESC_BYTES * (index % self.size)

    async def create(self):
        """Allocate zeroed ring memory and program the (disabled) queue."""
        self.base = self.bus.alloc(self.size * DESC_BYTES, align=max(64, DESC_BYTES))
        # Zero explicitly: a reused buffer on some backend may not be, and a
        # stale phase bit would read as a completion.
        await self.bus.mem_write(self.base, bytes(self.size * DESC_BYTES))
        await self.bus.write32(self.reg(QueueReg.CTRL), self.log_size)
        await self.bus.write32(self.reg(QueueReg.BASE_LO), self.base & 0xFFFF_FFFF)
        await self.bus.write32(self.reg(QueueReg.BASE_HI), self.base >> 32)
        await self.write_index()

    async def write_index(self):
        host_reg = QueueReg.CONS if self.block in (Queue.TXCQ, Queue.RXCQ) else QueueReg.PROD
        await self.bus.write32(self.reg(host_reg), self.index)

    async def enable(self):
        await self.bus.write32(self.reg(QueueReg.CTRL), self.log_size | QUEUE_ENABLE)

    async def disable(self):
        await self.bus.write32(self.reg(QueueReg.CTRL), self.log_size)

    def destroy(self):
        if self.base is not None:
            self.bus.free(self.base)
            self.base = None


#: Byte offset of the 8-byte word of a completion entry that holds ``phase``
#: (its top bit, in every completion layout).
_PHASE_WORD = DESC_BYTES - 8


class _CompletionRing(_Ring):
    """A completion ring: entries are the host's when their phase bit says so."""

    def __init__(self, bus, block, log_size, layout):
        super().__init__(bus, block, log_size)
        self.layout = layout
        assert unpack(layout, (1 << 8 * DESC_BYTES - 1).to_bytes(DESC_BYTES, "little")).phase

    async def create(self):
        """As :meth:`_Ring.create`, then mark every entry stale.

        An entry is stale when its phase bit is the wrap bit of the index the
        host will read it at on the first pass. From index 0 that is all zeros
        already; from any other start some slots need a 1.
        """
        await super().create()
        for index in range(self.index, self.index + self.size):
            stale = (index >> self.log_size) & 1
            if stale:
                await self.bus.mem_write(self.slot_addr(index), pack(self.layout, phase=stale))

    async def take(self, limit=None):
        """Return the raw entries the host owns, advancing ``index`` past them.

        ``CONS`` is not written here: the caller publishes it once per batch.

        Each entry is read in two steps, as mlx5 reads a CQE's owner byte
        before the rest (with ``dma_rmb()`` between): the 8 bytes that hold the
        phase bit, then, if the host owns the entry, all of it. The card
        writes an entry in one burst, in address order, so its phase word
        lands last: once that reads new, the whole entry is. Read in one
        piece, the entry could be torn: its first word read before the card's
        write and its phase word after (the board's host window serves reads
        and writes independently), stale bytes under a valid phase.
        """
        entries = []
        while limit is None or len(entries) < limit:
            addr = self.slot_addr(self.index)
            if not self.owned(bytes(_PHASE_WORD) + await self.bus.mem_read(addr + _PHASE_WORD, 8)):
                break
            entries.append(await self.bus.mem_read(addr, DESC_BYTES))
            self.index = (self.index + 1) & INDEX_MASK
        return entries

    def owned(self, raw):
        """True when the entry at ``index`` was written on the current pass.

        The card writes the inverted wrap bit of its producer, so the host
        expects ``((cons >> n) & 1) ^ 1``: a zeroed ring reads as empty, and
        last pass's entries read as stale.
        """
        return unpack(self.layout, raw).phase == ((self.index >> self.log_size) & 1) ^ 1



class Device:
    """Driver for one tlsnic card.

    Parameters
    ----------
    bus : Bus
        The backend.
    poll_budget : int
        In polling mode (``use_irq=False``), how many idle polls (CSR reads of
        a completion queue's producer) a wait may take before it gives up with
        ``TimeoutError``.

    Attributes
    ----------
    caps : DeviceCaps
        Read at :meth:`open`.
    stats : dict[str, int]
        64-bit totals of the hardware counters, by lower-case counter name;
        refreshed by :meth:`update_stats`.
    irq_events : int
        Interrupts taken (for information: it depends on timing).
    """

    def __init__(self, bus, *, poll_budget=10_000):
        self.bus = bus
        self.poll_budget = poll_budget
        self.caps = None
        self.use_irq = True
        self.stats = {c.name.lower(): 0 for c in Counter}
        self._counter_last = [0] * len(Counter)
        self.irq_events = 0
        self._idle_polls = 0      # consecutive polls that found nothing
        self._open = False

    # --- bring-up ------------------------------------------------------------------

    async def open(self, *, tx_log=8, rx_log=8, txcq_log=None, rxcq_log=None,
                   rx_buf_size=MAX_FRAME, rx_fill=None, use_irq=True, start_index=0):
        """Bring the card up.

        Checks identity and the bus, reads capabilities, creates and enables the
        four rings (completion rings first, so the card never has work without
        a place to report it), posts RX buffers and enables interrupts.

        Parameters
        ----------
        tx_log, rx_log : int
            log2 of the TXQ / RXQ entries.
        txcq_log, rxcq_log : int, optional
            log2 of the completion rings; the queue's size by default. A smaller
            completion ring exercises the card's stall on a full one.
        rx_buf_size : int
            Size of each RX buffer the driver posts.
        rx_fill : int, optional
            How many RX buffers to keep posted (default: the whole RXQ).
            ``0`` posts none: frames wait on the wire until :meth:`set_rx_fill`
            or :meth:`post_rx_raw` provides buffers.
        use_irq : bool
            Wait with interrupts; otherwise poll.
        start_index : int
            First index of every ring. Enabling a queue copies the host's index
            into the card's, so any start is legal; one just below 2**16 makes
            the 16-bit index wrap happen within a few frames (for tests).
        """
        ident = await self.bus.read32(Reg.ID)
        if ident != ID_MAGIC:
            raise DriverError(f"ID reads {ident:#010x}, expected {ID_MAGIC:#010x}: no tlsnic here")
        version = await self.bus.read32(Reg.VERSION)
        if version >> 16 != VERSION >> 16:
            raise DriverError(f"card ABI {version >> 16}.{version & 0xFFFF} is not "
                              f"{VERSION >> 16}.x, which this driver speaks")
        datapath = await self.bus.read32(Reg.CAP_DATAPATH)
        queues = await self.bus.read32(Reg.CAP_QUEUES)
        contexts = await self.bus.read32(Reg.CAP_CONTEXTS)
        self.caps = DeviceCaps(
            version=version,
            stream_bytes=datapath & 0xFF, dma_bytes=(datapath >> 8) & 0xFF,
            tx_queues=queues & 0xFF, rx_queues=(queues >> 8) & 0xFF,
            ports=(queues >> 16) & 0xFF, max_log_ring=queues >> 24,
            tls=await self.bus.read32(Reg.CAP_TLS),
            tx_contexts=contexts & 0xFFFF, rx_contexts=contexts >> 16,
            max_frame=await self.bus.read32(Reg.CAP_MAX_FRAME),
        )
        for pattern in (0xA5A5_5A5A, 0x5A5A_A5A5, 0xFFFF_FFFF, 0):
            await self.bus.write32(Reg.SCRATCH, pattern)
            got = await self.bus.read32(Reg.SCRATCH)
            if got != pattern:
                raise DriverError(f"SCRATCH reads {got:#010x} after writing {pattern:#010x}")

        txcq_log = tx_log if txcq_log is None else txcq_log
        rxcq_log = rx_log if rxcq_log is None else rxcq_log
        for log in (tx_log, rx_log, txcq_log, rxcq_log):
            if not 0 <= log <= self.caps.max_log_ring:
                raise ValueError(f"ring of 2**{log} entries: the card allows 2**0..2**{self.caps.max_log_ring}")

        # Quiet interrupts and clear anything left from before.
        await self.bus.write32(Reg.IRQ_ENABLE, 0)
        await self.bus.write32(Reg.IRQ_STATUS, 0xFFFF_FFFF)

        self.txq = _Ring(self.bus, Queue.TXQ, tx_log)
        self.txcq = _CompletionRing(self.bus, Queue.TXCQ, txcq_log, TxCompletion)
        self.rxq = _Ring(self.bus, Queue.RXQ, rx_log)
        self.rxcq = _CompletionRing(self.bus, Queue.RXCQ, rxcq_log, RxCompletion)
        for ring in (self.txq, self.txcq, self.rxq, self.rxcq):
            ring.index = start_index & INDEX_MASK
            await ring.create()
        for ring in (self.txcq, self.rxcq, self.txq, self.rxq):
            await ring.enable()

        # TX bookkeeping: the TXQ index of the oldest descriptor not yet
        # completed, and what each in-flight slot owns.
        self._tx_clean = self.txq.index
        self._tx_buffers = {}          # TXQ index -> driver-owned buffer address
        self._tx_reaped = []           # completions reaped since the last flush_tx
        # RX bookkeeping.
        self._rx_clean = self.rxq.index
        self._rx_slots = {}            # RXQ index -> (addr, length, owned by the driver)
        self._rx_spare = []            # driver-owned buffers waiting to be reposted
        self._rx_ready = collections.deque()
        self.rx_buf_size = rx_buf_size
        self.rx_fill = self.rxq.size if rx_fill is None else min(rx_fill, self.rxq.size)
        self._open = True
        await self._refill_rx()

        self.use_irq = use_irq
        if use_irq:
            await self.bus.write32(Reg.IRQ_ENABLE, (1 << Irq.TXCQ) | (1 << Irq.RXCQ))

    async def close(self):
        """Disable the queues and free all host memory the driver holds."""
        if not self._open:
            return
        await self.bus.write32(Reg.IRQ_ENABLE, 0)
        for ring in (self.txq, self.rxq, self.txcq, self.rxcq):
            await ring.disable()
        for addr in self._tx_buffers.values():
            self.bus.free(addr)
        for addr, _, owned in self._rx_slots.values():
            if owned:
                self.bus.free(addr)
        for addr in self._rx_spare:
            self.bus.free(addr)
        for ring in (self.txq, self.rxq, self.txcq, self.rxcq):
            ring.destroy()
        self._tx_buffers, self._rx_slots, self._rx_spare = {}, {}, []
        self._open = False

    # --- waiting -------------------------------------------------------------------

    async def _wait_event(self, cq_block):
        """Wait until the card may have written a completion.

        Callers scan their completion ring before waiting and again after, so
        acknowledging every ``IRQ_STATUS`` bit here loses nothing: an event
        that lands between the scan and the wait keeps the line high.
        """
        if self.use_irq:
            await self.bus.wait_irq()
            status = await self.bus.read32(Reg.IRQ_STATUS)
            if status:
                await self.bus.write32(Reg.IRQ_STATUS, status)
            self.irq_events += 1
        else:
            self._idle_polls += 1
            if self._idle_polls > self.poll_budget:
                raise TimeoutError(f"no completion on {Queue(cq_block).name} after "
                                   f"{self.poll_budget} polls")
            # A CSR read lets time pass on a timed backend; the phase bit in
            # host memory stays the authority on what is new.
            await self.bus.read32(cq_block + QueueReg.PROD)

    # --- TX ------------------------------------------------------------------------

    @property
    def tx_in_flight(self):
        """Descriptors posted and not yet completed."""
        return (self.txq.index - self._tx_clean) & INDEX_MASK

    async def _wait_tx_slot(self):
        while self.tx_in_flight >= self.txq.size:
            if not await self.reap_tx():
                await self._wait_event(Queue.TXCQ)

    async def _post_tx(self, fields, buffer=None):
        index = self.txq.index
        await self.bus.mem_write(self.txq.slot_addr(index), pack(TxDescriptor, **fields))
        if buffer is not None:
            self._tx_buffers[index] = buffer
        self.txq.index = (index + 1) & INDEX_MASK
        await self.txq.write_index()   # doorbell
        return index

    async def send(self, frame, port=0, csum_ip=False, csum_l4=False, tag=0):
        """Queue ``frame`` for transmission on ``port``; return its TXQ index.

        Waits (reaping completions) while the TXQ is full. The frame is copied
        into a fresh host buffer, freed when its completion is reaped.
        """
        frame = bytes(frame)
        limit = self.caps.max_frame if self.caps else MAX_FRAME
        if not 0 < len(frame) <= limit:
            raise ValueError(f"frame of {len(frame)} bytes: the card sends 1..{limit}"
                             " (use post_tx_raw to test bad lengths)")
        await self._wait_tx_slot()
        buffer = self.bus.alloc(len(frame))
        await self.bus.mem_write(buffer, frame)
        flags = (TxFlags.CSUM_IP.value if csum_ip else 0) | (TxFlags.CSUM_L4.value if csum_l4 else 0)
        return await self._post_tx(dict(opcode=TxOpcode.PACKET, flags=flags, length=len(frame),
                                        tag=tag, port=port, addr=buffer), buffer)

    async def send_ctrl(self, opcode, tag, data=b"", length=None):
        """Queue a TLS control descriptor (:class:`~tlsnic.abi.TxOpcode` SET_STATIC,
        SET_PROGRESS, DUMP, FREE) for context ``tag``; return its TXQ index.

        ``data`` (a parameter block, or the record bytes of a DUMP) is copied
        into a host buffer freed when the completion is reaped. ``length``
        defaults to ``len(data)``.
        """
        await self._wait_tx_slot()
        buffer = None
        if data:
            buffer = self.bus.alloc(len(data))
            await self.bus.mem_write(buffer, bytes(data))
        length = len(data) if length is None else length
        return await self._post_tx(dict(opcode=opcode, length=length, tag=tag,
                                        addr=buffer or 0), buffer)

    async def post_tx_raw(self, **fields):
        """Post a TX descriptor with exactly ``fields`` (see :class:`~tlsnic.abi.TxDescriptor`).

        Nothing is checked and nothing is allocated: for tests of what the card
        does with bad descriptors. Unnamed fields are zero (a NOP). Returns the
        TXQ index.
        """
        await self._wait_tx_slot()
        return await self._post_tx(fields)

    async def reap_tx(self):
        """Collect the TX completions the card has written; return how many.

        Completions must come in TXQ order, one per descriptor; anything else
        is a :class:`DriverError`. Reaped records accumulate for :meth:`flush_tx`.
        """
        entries = await self.txcq.take(limit=self.tx_in_flight)
        for raw in entries:
            record = TxCompletionRecord.from_raw(raw)
            expected = self._tx_clean
            if record.index != expected:
                raise DriverError(f"TX completion for index {record.index}, expected {expected}")
            buffer = self._tx_buffers.pop(expected, None)
            if buffer is not None:
                self.bus.free(buffer)
            self._tx_clean = (expected + 1) & INDEX_MASK
            self._tx_reaped.append(record)
        if entries:
            self._idle_polls = 0
            await self.txcq.write_index()
        return len(entries)

    async def flush_tx(self):
        """Wait until every posted descriptor has completed.

        Returns the :class:`TxCompletionRecord` list reaped since the previous
        call, in TXQ order.
        """
        while self.tx_in_flight:
            if not await self.reap_tx():
                await self._wait_event(Queue.TXCQ)
        reaped, self._tx_reaped = self._tx_reaped, []
        return reaped

    # --- RX ------------------------------------------------------------------------

    @property
    def rx_posted(self):
        """RX buffers the card holds."""
        return (self.rxq.index - self._rx_clean) & INDEX_MASK

    async def _post_rx(self, addr, length, owned):
        index = self.rxq.index
        await self.bus.mem_write(self.rxq.slot_addr(index),
                                 pack(RxDescriptor, length=length, addr=addr))
        self._rx_slots[index] = (addr, length, owned)
        self.rxq.index = (index + 1) & INDEX_MASK

    async def _refill_rx(self):
        posted = 0
        while self.rx_posted < self.rx_fill:
            addr = self._rx_spare.pop() if self._rx_spare else self.bus.alloc(self.rx_buf_size)
            await self._post_rx(addr, self.rx_buf_size, owned=True)
            posted += 1
        if posted:
            await self.rxq.write_index()   # one doorbell per batch

    async def set_rx_fill(self, count):
        """Keep ``count`` driver buffers posted from now on (posting them at once)."""
        self.rx_fill = min(count, self.rxq.size)
        await self._refill_rx()

    async def post_rx_raw(self, addr, length):
        """Post a caller-owned RX buffer (any address, any length) and ring the doorbell.

        For tests: a buffer with a guard after it, or one outside host memory.
        The driver never frees it. Returns the RXQ index.
        """
        if self.rx_posted >= self.rxq.size:
            raise DriverError("RXQ full: open with a smaller rx_fill to make room")
        index = self.rxq.index
        await self._post_rx(addr, length, owned=False)
        await self.rxq.write_index()
        return index

    async def reap_rx(self):
        """Collect RX completions into the ready queue and refill; return how many."""
        entries = await self.rxcq.take(limit=self.rx_posted)
        for raw in entries:
            c = unpack(RxCompletion, raw)
            expected = self._rx_clean
            if c.index != expected:
                raise DriverError(f"RX completion for index {c.index}, expected {expected}")
            addr, buf_length, owned = self._rx_slots.pop(expected)
            data = b""
            if c.status is not RxStatus.DMA_ERROR:
                data = await self.bus.mem_read(addr, min(c.length, buf_length))
            if owned:
                self._rx_spare.append(addr)
            self._rx_clean = (expected + 1) & INDEX_MASK
            self._rx_ready.append(RxFrame(
                data=bytes(data), index=c.index, status=c.status, port=c.port,
                length=c.length, ip_csum=c.ip_csum, l4_csum=c.l4_csum,
                l3_proto=c.l3_proto, l4_proto=c.l4_proto, tag=c.tag, tls=c.tls,
                auth_fail=bool(c.auth_fail), dec_start=c.dec_start, dec_end=c.dec_end,
                resync_offset=(c.resync_offset - ((c.resync_offset & 0x8000) << 1)
                               if c.resync else None),
                raw=bytes(raw)))
        if entries:
            self._idle_polls = 0
            await self.rxcq.write_index()
            await self._refill_rx()
        return len(entries)

    async def recv(self):
        """Return the next received frame as an :class:`RxFrame`, waiting for one."""
        while not self._rx_ready:
            if not await self.reap_rx():
                await self._wait_event(Queue.RXCQ)
        return self._rx_ready.popleft()

    async def poll_rx(self):
        """Return every frame received so far, without waiting."""
        await self.reap_rx()
        ready = list(self._rx_ready)
        self._rx_ready.clear()
        return ready

    # --- statistics ----------------------------------------------------------------

    async def update_stats(self):
        """Fold the 32-bit hardware counters into the 64-bit :attr:`stats`; return a copy.

        Each counter contributes ``(now - last) mod 2**32``, which is right as
        long as it is read at least once per wrap.
        """
        for counter in Counter:
            now = await self.bus.read32(COUNTER_BASE + 4 * counter)
            delta = (now - self._counter_last[counter]) & 0xFFFF_FFFF
            self._counter_last[counter] = now
            name = counter.name.lower()
            self.stats[name] = (self.stats[name] + delta) & 0xFFFF_FFFF_FFFF_FFFF
        return dict(self.stats)
