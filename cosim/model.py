"""Behavioural reference NIC: the executable specification of the host interface.

:class:`ReferenceNic` is the card as :mod:`tlsnic.abi` describes it, in plain
Python, with no notion of time: a doorbell (or a CSR write that frees room, or
a frame arriving on the wire) runs the card until it can do nothing more,
before the write returns. It implements the driver's
:class:`~tlsnic.driver.bus.Bus` itself (registers, DMA into a shared
:class:`~tlsnic.driver.hostmem.HostMemory`, the interrupt line), and its
:attr:`ReferenceNic.wire` is the network side (:class:`~tlsnic.cosim.wire_api.Wire`).

The gateware must produce the same bytes: frames on the wire, TX and RX
completions, counters. Only timing may differ (when a completion is written,
how often the interrupt line rises), so scenarios compare nothing that
depends on it.

Header parsing and the one's-complement checksums live here too
(:func:`parse_headers`, :func:`verify_checksums`, :func:`insert_checksums`);
they follow the rules of the ABI docstring line by line.
"""

import array
import collections
import dataclasses
import enum as _py_enum
import sys

from tlsnic.abi import (
    ERROR_BAD_CSR, ERROR_COMPLETION_LOST,
    COUNTER_BASE, DESC_BYTES, ID_MAGIC, MAX_FRAME, MAX_LOG_RING, QUEUE_ENABLE, VERSION,
    Counter, CsumStatus, Irq, L3Proto, L4Proto, Queue, QueueReg, Reg,
    RxCompletion, RxDescriptor, RxStatus, TxCompletion, TxDescriptor, TxFlags, TxOpcode,
    TxStatus, pack, unpack,
    CAP_TLS_1_2, CAP_TLS_1_3, CAP_TLS_AES_128_GCM, CAP_TLS_AES_256_GCM, CAP_TLS_RX, CAP_TLS_TX,
)
from tlsnic.driver.bus import BusError, NoProgress
from tlsnic.driver.hostmem import HostMemory, HostMemoryBus

from .model_tls_rx import RX_CONTROL_OPCODES, TlsRxEngine
from .model_tls_tx import TLS_CONTROL_OPCODES, TlsTxEngine
from .wire_api import Wire

__all__ = [
    "ReferenceNic", "ModelWire",
    "ParsedHeaders", "parse_headers", "verify_checksums", "insert_checksums",
    "ones_complement_sum",
]

ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_TCP = 6
IPPROTO_UDP = 17
#: Shortest valid segment and offset of the checksum field, per L4 protocol.
L4_MIN_LENGTH = {L4Proto.TCP: 20, L4Proto.UDP: 8}
L4_CSUM_OFFSET = {L4Proto.TCP: 16, L4Proto.UDP: 6}


# --- one's-complement arithmetic ---------------------------------------------------

def ones_complement_sum(data, initial=0):
    """The 16-bit one's-complement sum of ``data`` (big-endian words), folded.

    An odd trailing byte is the high byte of a last word whose low byte is 0.
    Folding the plain integer sum gives what any end-around-carry adder gives,
    so the gateware may accumulate in any order and width. The result is 0 only
    when every word is 0; otherwise 0xFFFF stands for "minus zero".
    """
    data = bytes(data)
    if len(data) % 2:
        data += b"\0"
    words = array.array("H", data)
    if sys.byteorder == "little":
        words.byteswap()   # the checksum is defined over big-endian words
    total = initial + sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _u16(frame, offset):
    return int.from_bytes(frame[offset:offset + 2], "big")


# --- header parsing ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ParsedHeaders:
    """What the card's parser finds in one frame (see the ABI rules).

    Attributes
    ----------
    l3_proto, l4_proto : L3Proto, L4Proto
        As reported in RX completions.
    l3_offset : int
        Where L3 starts (14 or 18); meaningful when ``l3_proto`` is not OTHER.
    ip_header_length : int
        IHL * 4 for IPv4, 40 for IPv6, 0 otherwise.
    ip_header_fits : bool
        The whole IP header lies inside the frame.
    l4_offset, l4_length : int
        The L4 segment ``[l4_offset, l4_offset + l4_length)`` when ``l4_proto``
        is TCP or UDP (the length may be negative for a nonsensical IPv4
        total length).
    l4_valid : bool
        The segment is long enough for its protocol and ends inside the frame.
    pseudo_sum : int
        Folded one's-complement sum of the pseudo-header (valid when ``l4_valid``).
    """
    l3_proto: L3Proto = L3Proto.OTHER
    l3_offset: int = 0
    ip_header_length: int = 0
    ip_header_fits: bool = False
    l4_proto: L4Proto = L4Proto.OTHER
    l4_offset: int = 0
    l4_length: int = 0
    l4_valid: bool = False
    pseudo_sum: int = 0


def _l4_from_ip_proto(proto):
    return {IPPROTO_TCP: L4Proto.TCP, IPPROTO_UDP: L4Proto.UDP}.get(proto, L4Proto.OTHER)


def parse_headers(frame):
    """Locate L3 and L4 in ``frame`` exactly as the card does; return :class:`ParsedHeaders`."""
    frame = bytes(frame)
    size = len(frame)
    if size < 14:
        return ParsedHeaders()
    ethertype, l3 = _u16(frame, 12), 14
    if ethertype == ETHERTYPE_VLAN:
        # One 802.1Q tag is skipped; a second tag (QinQ) makes L3 "other".
        if size < 18:
            return ParsedHeaders()
        ethertype, l3 = _u16(frame, 16), 18
    if size <= l3:
        return ParsedHeaders()

    if ethertype == ETHERTYPE_IPV4:
        version, ihl = frame[l3] >> 4, frame[l3] & 0xF
        if version != 4 or ihl < 5:
            return ParsedHeaders()
        header_length = ihl * 4
        if l3 + header_length > size:
            # Recognised as IPv4 but cut short: the IP checksum is BAD and no
            # L4 verdict is possible.
            return ParsedHeaders(L3Proto.IPV4, l3, header_length, False)
        total_length = _u16(frame, l3 + 2)
        flags_fragment = _u16(frame, l3 + 6)
        is_fragment = bool(flags_fragment & 0x2000) or bool(flags_fragment & 0x1FFF)
        l4_proto = L4Proto.OTHER if is_fragment else _l4_from_ip_proto(frame[l3 + 9])
        if l4_proto is L4Proto.OTHER:
            return ParsedHeaders(L3Proto.IPV4, l3, header_length, True)
        l4_length = total_length - header_length
        valid = l4_length >= L4_MIN_LENGTH[l4_proto] and l3 + total_length <= size
        pseudo = ones_complement_sum(frame[l3 + 12:l3 + 20]
                                     + bytes([0, frame[l3 + 9]])
                                     + max(l4_length, 0).to_bytes(2, "big"))
        return ParsedHeaders(L3Proto.IPV4, l3, header_length, True,
                             l4_proto, l3 + header_length, l4_length, valid, pseudo)

    if ethertype == ETHERTYPE_IPV6:
        if frame[l3] >> 4 != 6 or l3 + 40 > size:
            return ParsedHeaders()
        payload_length = _u16(frame, l3 + 4)
        next_header = frame[l3 + 6]
        # Only TCP/UDP directly after the fixed header; extension headers
        # (and everything else) are "other".
        l4_proto = _l4_from_ip_proto(next_header)
        if l4_proto is L4Proto.OTHER:
            return ParsedHeaders(L3Proto.IPV6, l3, 40, True)
        valid = (payload_length >= L4_MIN_LENGTH[l4_proto]
                 and l3 + 40 + payload_length <= size)
        pseudo = ones_complement_sum(frame[l3 + 8:l3 + 40]
                                     + payload_length.to_bytes(4, "big")
                                     + bytes([0, 0, 0, next_header]))
        return ParsedHeaders(L3Proto.IPV6, l3, 40, True,
                             l4_proto, l3 + 40, payload_length, valid, pseudo)

    return ParsedHeaders()


def verify_checksums(frame, parsed=None):
    """RX verdicts ``(ip_csum, l4_csum)`` for ``frame``, as :class:`CsumStatus`."""
    frame = bytes(frame)
    parsed = parsed or parse_headers(frame)

    ip_csum = CsumStatus.NONE
    if parsed.l3_proto is L3Proto.IPV4:
        if not parsed.ip_header_fits:
            ip_csum = CsumStatus.BAD
        else:
            header = frame[parsed.l3_offset:parsed.l3_offset + parsed.ip_header_length]
            ip_csum = CsumStatus.GOOD if ones_complement_sum(header) == 0xFFFF else CsumStatus.BAD

    l4_csum = CsumStatus.NONE
    if parsed.l4_proto is not L4Proto.OTHER:
        if not parsed.l4_valid:
            l4_csum = CsumStatus.BAD
        else:
            segment = frame[parsed.l4_offset:parsed.l4_offset + parsed.l4_length]
            field = _u16(segment, L4_CSUM_OFFSET[parsed.l4_proto])
            if parsed.l4_proto is L4Proto.UDP and field == 0:
                # No checksum sent: allowed over IPv4, forbidden over IPv6 (RFC 8200).
                l4_csum = CsumStatus.NONE if parsed.l3_proto is L3Proto.IPV4 else CsumStatus.BAD
            elif ones_complement_sum(segment, parsed.pseudo_sum) == 0xFFFF:
                l4_csum = CsumStatus.GOOD
            else:
                l4_csum = CsumStatus.BAD
    return ip_csum, l4_csum


def insert_checksums(frame, csum_ip, csum_l4):
    """TX offload: return ``(frame', ip_done, l4_done)`` with the requested checksums filled in.

    Only the checksum fields change; a frame the rules reject for a checksum
    keeps that field as the host wrote it.
    """
    out = bytearray(frame)
    parsed = parse_headers(out)
    ip_done = l4_done = False
    if csum_ip and parsed.l3_proto is L3Proto.IPV4 and parsed.ip_header_fits:
        start = parsed.l3_offset
        out[start + 10:start + 12] = b"\0\0"   # the old contents are summed as zero
        csum = ~ones_complement_sum(out[start:start + parsed.ip_header_length]) & 0xFFFF
        out[start + 10:start + 12] = csum.to_bytes(2, "big")
        ip_done = True
    if csum_l4 and parsed.l4_proto is not L4Proto.OTHER and parsed.l4_valid:
        field = parsed.l4_offset + L4_CSUM_OFFSET[parsed.l4_proto]
        out[field:field + 2] = b"\0\0"
        segment = out[parsed.l4_offset:parsed.l4_offset + parsed.l4_length]
        csum = ~ones_complement_sum(segment, parsed.pseudo_sum) & 0xFFFF
        if parsed.l4_proto is L4Proto.UDP and csum == 0:
            csum = 0xFFFF   # 0 would mean "no checksum"
        out[field:field + 2] = csum.to_bytes(2, "big")
        l4_done = True
    return bytes(out), ip_done, l4_done


# --- the card ------------------------------------------------------------------------

def _int(value):
    """An unpacked field as a plain int (enum members and raw values alike)."""
    return value.value if isinstance(value, _py_enum.Enum) else int(value)


@dataclasses.dataclass
class _QueueState:
    """The card's view of one ring (what the gateware keeps per queue)."""
    is_completion: bool
    base: int = 0
    log_size: int = 0
    enabled: bool = False
    host_index: int = 0   # PROD of TXQ/RXQ, CONS of TXCQ/RXCQ: written by the host
    card_index: int = 0   # CONS of TXQ/RXQ, PROD of TXCQ/RXCQ: advanced by the card

    @property
    def size(self):
        return 1 << self.log_size

    def slot_addr(self, index):
        return self.base + DESC_BYTES * (index % self.size)

    def has_work(self):
        """A work queue holds a descriptor the card has not taken."""
        return self.enabled and self.card_index != self.host_index

    def has_room(self):
        """A completion queue has an entry the host has released."""
        return self.enabled and ((self.card_index - self.host_index) & 0xFFFF) < self.size

    def phase(self):
        """Phase bit for the entry at ``card_index``: the inverted wrap bit."""
        return ((self.card_index >> self.log_size) & 1) ^ 1


class ReferenceNic(HostMemoryBus):
    """The reference card; also the :class:`~tlsnic.driver.bus.Bus` the driver uses.

    Parameters
    ----------
    memory : HostMemory, optional
        Host RAM shared with the driver; a fresh one by default.
    ports : int
        Number of Ethernet ports (``CAP_QUEUES`` bits 23..16).
    stream_bytes, dma_bytes : int
        Datapath widths reported in ``CAP_DATAPATH``; they change nothing in
        the model's behaviour and are there so it can mirror a gateware build.
    tls : bool
        Build the TLS transmit engine (:mod:`.model_tls_tx`). Off by default,
        like the gateware so far: ``CAP_TLS`` and ``CAP_CONTEXTS`` read 0, the
        TLS opcodes are BAD_OPCODE and a tagged PACKET is BAD_TAG
        (never sent: the tag's flow must not leave in the clear).
    tx_contexts : int
        TX contexts of the TLS engine (``CAP_CONTEXTS`` bits 15..0).
    rx_contexts : int
        With ``tls``: receive contexts of the TLS receive engine
        (:mod:`.model_tls_rx`, ``CAP_CONTEXTS`` bits 31..16); 0 builds none
        (``CAP_TLS_RX`` clear, the RX opcodes BAD_OPCODE, frames never steered).

    Attributes
    ----------
    wire : ModelWire
        The network side.
    memory : HostMemory
    counters : list[int]
        The 32-bit hardware counters, indexed by :class:`~tlsnic.abi.Counter`.
    """

    def __init__(self, memory=None, *, ports=1, stream_bytes=8, dma_bytes=8,
                 tls=False, tx_contexts=256, rx_contexts=0):
        self.memory = memory if memory is not None else HostMemory()
        self.tls_tx = TlsTxEngine(self, tx_contexts) if tls else None
        self.tls_rx = TlsRxEngine(self, rx_contexts) if tls and rx_contexts else None
        self.ports = ports
        self.stream_bytes = stream_bytes
        self.dma_bytes = dma_bytes
        self.queues = {q: _QueueState(is_completion=q in (Queue.TXCQ, Queue.RXCQ)) for q in Queue}
        self.scratch = 0
        self.irq_status = 0
        self.irq_enable = 0
        self.error_status = 0
        self.counters = [0] * len(Counter)
        self.ingress = collections.deque()                 # (port, frame), arrival order
        self.egress = [collections.deque() for _ in range(ports)]
        self.wire = ModelWire(self)

    # --- Bus: interrupt ---------------------------------------------------------------

    @property
    def irq(self):
        """The interrupt line."""
        return bool(self.irq_status & self.irq_enable)

    async def wait_irq(self):
        if not self.irq:
            # Nothing happens in the model unless someone calls it, so waiting
            # here would wait forever.
            raise NoProgress(
                f"interrupt line low (IRQ_STATUS={self.irq_status:#x}, "
                f"IRQ_ENABLE={self.irq_enable:#x}) and the model cannot change by itself")

    # --- Bus: registers ---------------------------------------------------------------

    def _decode_queue(self, addr):
        block, offset = addr & ~0xFF, addr & 0xFF
        if block in Queue._value2member_map_ and offset in QueueReg._value2member_map_:
            return Queue(block), QueueReg(offset)
        return None, None

    def _bad_address(self, what, addr):
        self.error_status |= ERROR_BAD_CSR
        raise BusError(f"CSR {what} at undecoded address {addr:#x} (SLVERR)")

    async def read32(self, addr):
        if addr % 4:
            self._bad_address("read", addr)
        if addr in Reg._value2member_map_:
            reg = Reg(addr)
            return {
                Reg.ID: ID_MAGIC,
                Reg.VERSION: VERSION,
                Reg.CAP_DATAPATH: self.stream_bytes | (self.dma_bytes << 8),
                Reg.CAP_QUEUES: 1 | (1 << 8) | (self.ports << 16) | (MAX_LOG_RING << 24),
                Reg.CAP_TLS: self._cap_tls(),
                Reg.CAP_CONTEXTS: ((len(self.tls_tx.contexts) if self.tls_tx else 0)
                                   | (len(self.tls_rx.contexts) << 16 if self.tls_rx else 0)),
                Reg.CAP_MAX_FRAME: MAX_FRAME,
                Reg.SCRATCH: self.scratch,
                Reg.IRQ_STATUS: self.irq_status,
                Reg.IRQ_ENABLE: self.irq_enable,
                Reg.ERROR_STATUS: self.error_status,
            }[reg]
        queue, reg = self._decode_queue(addr)
        if queue is not None:
            q = self.queues[queue]
            if reg is QueueReg.BASE_LO:
                return q.base & 0xFFFF_FFFF
            if reg is QueueReg.BASE_HI:
                return q.base >> 32
            if reg is QueueReg.CTRL:
                return q.log_size | (QUEUE_ENABLE if q.enabled else 0)
            host_reg = QueueReg.CONS if q.is_completion else QueueReg.PROD
            return q.host_index if reg is host_reg else q.card_index
        counter = (addr - COUNTER_BASE) // 4
        if 0 <= counter < len(Counter):
            return self.counters[counter]
        self._bad_address("read", addr)

    async def write32(self, addr, value):
        value &= 0xFFFF_FFFF
        if addr % 4:
            self._bad_address("write", addr)
        if addr in Reg._value2member_map_:
            reg = Reg(addr)
            if reg is Reg.SCRATCH:
                self.scratch = value
            elif reg is Reg.IRQ_STATUS:
                self.irq_status &= ~value
            elif reg is Reg.IRQ_ENABLE:
                self.irq_enable = value & ((1 << len(Irq)) - 1)
            elif reg is Reg.ERROR_STATUS:
                self.error_status &= ~value
            # identification and capability registers are read-only
            return
        queue, reg = self._decode_queue(addr)
        if queue is not None:
            await self._write_queue(self.queues[queue], reg, value)
            return
        if 0 <= (addr - COUNTER_BASE) // 4 < len(Counter):
            return   # counters are read-only
        self._bad_address("write", addr)

    async def _write_queue(self, q, reg, value):
        if reg is QueueReg.BASE_LO and not q.enabled:
            q.base = (q.base & ~0xFFFF_FFFF) | value
        elif reg is QueueReg.BASE_HI and not q.enabled:
            q.base = (q.base & 0xFFFF_FFFF) | (value << 32)
        elif reg is QueueReg.CTRL:
            enable = bool(value & QUEUE_ENABLE)
            if not q.enabled:
                q.log_size = value & 0x1F
                if enable:
                    q.card_index = q.host_index
            q.enabled = enable
            await self._run()
        elif reg is (QueueReg.CONS if q.is_completion else QueueReg.PROD):
            q.host_index = value & 0xFFFF
            await self._run()   # a doorbell, or room freed in a completion queue

    # --- processing -------------------------------------------------------------------

    def _count(self, counter, amount=1):
        self.counters[counter] = (self.counters[counter] + amount) & 0xFFFF_FFFF

    async def _run(self):
        """Do everything the card can do now."""
        progress = True
        while progress:
            progress = await self._tx_step() | await self._rx_step()

    def _cap_tls(self):
        if self.tls_tx is None:
            return 0
        return (CAP_TLS_AES_128_GCM | CAP_TLS_AES_256_GCM | CAP_TLS_1_2 | CAP_TLS_1_3
                | CAP_TLS_TX | (CAP_TLS_RX if self.tls_rx else 0))

    async def _read_ring_entry(self, queue, q, index):
        """The entry's bytes, or None when the read fails (``tlsnic.abi``: the
        entry then completes with DMA_ERROR)."""
        try:
            return await self.memory.read(q.slot_addr(index), DESC_BYTES)
        except BusError:
            return None

    async def _write_completion(self, queue, irq, layout, **fields):
        q = self.queues[queue]
        raw = pack(layout, phase=q.phase(), **fields)
        try:
            await self.memory.write(q.slot_addr(q.card_index), raw)
        except BusError:
            # Lost: nobody can be told through the ring itself.
            self.error_status |= ERROR_COMPLETION_LOST
        q.card_index = (q.card_index + 1) & 0xFFFF
        self.irq_status |= 1 << irq

    async def _tx_step(self):
        txq, txcq = self.queues[Queue.TXQ], self.queues[Queue.TXCQ]
        if not (txq.has_work() and txcq.has_room()):
            return False
        index = txq.card_index
        raw = await self._read_ring_entry(Queue.TXQ, txq, index)
        txq.card_index = (index + 1) & 0xFFFF
        if raw is None:
            # Nothing of a descriptor that could not be read is trusted.
            desc = unpack(TxDescriptor, bytes(DESC_BYTES))
            self._count(Counter.TX_DMA_ERRORS)
            status, sent = TxStatus.DMA_ERROR, 0
        else:
            desc = unpack(TxDescriptor, raw)
            status, sent = await self._transmit(desc)
        await self._write_completion(
            Queue.TXCQ, Irq.TXCQ, TxCompletion,
            index=index, opcode=_int(desc.opcode), status=status,
            length=sent, tag=desc.tag, aux=0)
        return True

    async def _transmit(self, desc):
        """Carry out one TX descriptor; return ``(status, bytes sent)``."""
        opcode = _int(desc.opcode)
        if opcode == TxOpcode.NOP.value:
            return TxStatus.OK, 0
        if opcode in TLS_CONTROL_OPCODES and self.tls_tx is not None:
            return await self.tls_tx.control(desc)
        if opcode in RX_CONTROL_OPCODES and self.tls_rx is not None:
            return await self.tls_rx.control(desc)
        if opcode != TxOpcode.PACKET.value:
            self._count(Counter.TX_DESC_ERRORS)
            return TxStatus.BAD_OPCODE, 0
        if not 0 < desc.length <= MAX_FRAME:
            self._count(Counter.TX_DESC_ERRORS)
            return TxStatus.BAD_LENGTH, 0
        if desc.port >= self.ports:
            self._count(Counter.TX_DESC_ERRORS)
            return TxStatus.BAD_PORT, 0
        try:
            frame = await self.memory.read(desc.addr, desc.length)
        except BusError:
            self._count(Counter.TX_DMA_ERRORS)
            return TxStatus.DMA_ERROR, 0
        flags = _int(desc.flags)
        csum_ip, csum_l4 = bool(flags & TxFlags.CSUM_IP.value), bool(flags & TxFlags.CSUM_L4.value)
        if desc.tag and self.tls_tx is None:
            # A card without TLS contexts has no tag to honour: sending the
            # frame anyway would put a tagged flow's plaintext on the wire.
            self._count(Counter.TX_TLS_DROP_BAD_FLOW)
            return TxStatus.BAD_TAG, 0
        if desc.tag:
            status, frame, force_csum = await self.tls_tx.transmit(desc, frame)
            if frame is None:
                return status, 0
            # Encrypted bytes invalidate whatever checksum the host wrote.
            csum_ip, csum_l4 = csum_ip or force_csum, csum_l4 or force_csum
        frame, ip_done, l4_done = insert_checksums(frame, csum_ip, csum_l4)
        self._count(Counter.TX_CSUM_IP, ip_done)
        self._count(Counter.TX_CSUM_L4, l4_done)
        self.egress[desc.port].append(frame)
        self._count(Counter.TX_PACKETS)
        self._count(Counter.TX_BYTES, len(frame))
        return TxStatus.OK, len(frame)

    async def _rx_step(self):
        rxq, rxcq = self.queues[Queue.RXQ], self.queues[Queue.RXCQ]
        # Back-pressure: the frame waits (nothing dropped) until there is both
        # a buffer and a completion entry for it.
        if not (self.ingress and rxq.has_work() and rxcq.has_room()):
            return False
        port, frame = self.ingress.popleft()
        index = rxq.card_index
        raw = await self._read_ring_entry(Queue.RXQ, rxq, index)
        rxq.card_index = (index + 1) & 0xFFFF

        # A giant frame is cut at MAX_FRAME on entry (so it can never wedge the
        # card's packet FIFO); what is kept is parsed, checksummed and delivered.
        wire_length = min(len(frame), 0xFFFF)
        kept = frame[:MAX_FRAME]
        parsed = parse_headers(kept)
        ip_csum, l4_csum = verify_checksums(kept, parsed)
        desc = None if raw is None else unpack(RxDescriptor, raw)
        if desc is None:
            status = RxStatus.DMA_ERROR     # no buffer to put it in: the frame is gone
        elif min(len(kept), desc.length) == len(frame):
            status = RxStatus.OK
        else:
            status = RxStatus.TRUNCATED
        tls_fields = {}
        if self.tls_rx is not None:
            # Only a whole frame with good checksums moves a receive context;
            # its buffer is known before its bytes are decrypted into it.
            checked = status is RxStatus.OK and CsumStatus.BAD not in (ip_csum, l4_csum)
            tls_fields, kept = self.tls_rx.receive(port, kept, parsed, checked)
        if desc is not None:
            try:
                await self.memory.write(desc.addr, kept[:min(len(kept), desc.length)])
            except BusError:
                status = RxStatus.DMA_ERROR

        if status is RxStatus.DMA_ERROR:
            self._count(Counter.RX_DMA_ERRORS)
        else:
            self._count(Counter.RX_PACKETS)
            self._count(Counter.RX_BYTES, wire_length)
            self._count(Counter.RX_TRUNCATED, status is RxStatus.TRUNCATED)
        self._count(Counter.RX_CSUM_BAD, CsumStatus.BAD in (ip_csum, l4_csum))
        await self._write_completion(
            Queue.RXCQ, Irq.RXCQ, RxCompletion,
            index=index, status=status, port=port, length=wire_length,
            ip_csum=ip_csum, l4_csum=l4_csum,
            l3_proto=parsed.l3_proto, l4_proto=parsed.l4_proto, **tls_fields)
        return True

    async def _receive_from_wire(self, frame, port):
        frame = bytes(frame)
        if not 0 <= port < self.ports:
            raise ValueError(f"no port {port} (the card has {self.ports})")
        if not len(frame):
            raise ValueError("an empty frame cannot be put on the wire")
        self.ingress.append((port, frame))
        await self._run()


class ModelWire(Wire):
    """The model's network side: frames move the moment they are sent."""

    def __init__(self, nic):
        self.nic = nic

    async def send(self, frame, port=0):
        await self.nic._receive_from_wire(frame, port)

    async def recv(self, port=0):
        if not self.nic.egress[port]:
            raise NoProgress(f"no frame was transmitted on port {port}, and the model "
                             "transmits only when the driver rings a doorbell")
        return self.nic.egress[port].popleft()

    def pending(self, port=0):
        return len(self.nic.egress[port])

    def backlog(self):
        """Frames sent to the card that it has not taken yet (model only)."""
        return len(self.nic.ingress)
