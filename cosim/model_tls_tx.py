"""Reference TLS transmit engine: what the card does per TLS control descriptor and tagged frame.

This is the executable specification of the "TLS transmit" section of
:mod:`tlsnic.abi` (Linux ``tls_device`` / mlx5 kTLS TX style): the host hands
the card framed plaintext records inside TCP segments, the card follows the
record boundaries by reading each header from the stream, encrypts in place
and writes every tag over its placeholder. It is written as the card's
per-frame behaviour, byte for byte, so the gateware engine can be built
against it. :class:`TlsTxEngine` is owned by
:class:`~tlsnic.cosim.model.ReferenceNic` (``tls=True``), which calls it from
``_transmit``.

Choices the ABI text leaves open, fixed here (and proposed for ``abi.py``):

* Tags ``1 .. tx_contexts`` name contexts; tag 0 is "no context" and, on a
  control descriptor, is BAD_TAG. ``SET_STATIC`` on a live context is BAD_TAG
  too (no rekey: FreeBSD ``ktls.4``, a context is set once).
* Check order. Control descriptors: opcode, tag (BAD_TAG), for DUMP the length
  (BAD_LENGTH: 0 or above MAX_FRAME), the parameter/DMA read (DMA_ERROR), the
  parameters (BAD_PARAMS), then for DUMP the failed flag (CONTEXT_FAILED) and
  the bytes. The descriptor's ``port`` and ``flags`` are ignored, and so is
  its ``length`` except for DUMP. Tagged PACKET: the plain checks (length,
  port, read), then tag (BAD_TAG), flow (BAD_FLOW), a pure ACK goes out as a
  plain frame (descriptor checksum flags), then the failed flag
  (CONTEXT_FAILED), the sequence number (OUT_OF_SEQUENCE), then the bytes
  (CONTEXT_FAILED on a bogus header, NO_TAG).
* A dropped frame or a failed DUMP changes nothing in the context (the card
  works store-and-forward: it must see the whole frame before the checksum
  can go out anyway), except that a bogus header sets the sticky failed flag.
  Nothing of a dropped frame is written to the tag log.
* Byte-string fields of the parameter blocks (key, salt/IV, addresses, the
  explicit nonce, tags) hold the bytes in order: byte 0 of the field is the
  first byte (``int.from_bytes(b, "little")`` on pack), as the ABI says of
  the key and addresses.
* ``SET_PROGRESS`` without ``SEEK`` must name a record start
  (``next_seq == record_seq``, else BAD_PARAMS) and computes the tag of that
  record from the bytes it then sees; ``TAG_VALID`` without ``SEEK`` is
  BAD_PARAMS. With ``SEEK`` and ``next_seq`` past the record start, the
  header is taken from the block (``content_type``, 0x0303,
  ``record_length``; a length out of range, or an offset at or past the
  record end, is BAD_PARAMS) and for TLS 1.2 past byte 5 the explicit nonce
  too; header or nonce bytes then seen in the stream go out unchanged and are
  not checked. ``SEEK`` always means "no GHASH" for that record, also at
  offset 0.
* A record's tag is computed when its first tag byte passes (packet or DUMP)
  and logged at that moment (``TX_TLS_RECORDS`` counts it, the log entry is
  written once the frame commits). A tag log write that fails counts in
  ``TX_DMA_ERRORS`` and does not stop the frame.
* The header's content type is not checked (TLS 1.2 carries alerts and
  handshake records in the same stream); only the version and the length,
  ``[nonce + 16 (+1 for TLS 1.3), 2**14 + 256 (+ nonce for TLS 1.2)]``.

GHASH is modelled by keeping the record's plaintext and asking ``AESGCM`` for
the tag at the end; the counter mode keystream for the bytes as they pass
comes from AES-CTR started at ``J0 + 1 + block`` (``nonce || 00000002`` for
the first payload block).
"""

import copy
import dataclasses

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tlsnic.abi import (
    MAX_FRAME, Counter, L4Proto, TlsCipher, TlsProgressFlags,
    TlsProgressParams, TlsStaticParams, TlsTagLogEntry, TlsVersion, TxOpcode, TxStatus,
    layout_bytes, pack, record_length_bounds, unpack,
)
from tlsnic.driver.bus import BusError

__all__ = [
    "ContextTable", "TlsTxEngine", "TlsTxContext", "TlsTxRecord", "TLS_CONTROL_OPCODES",
    "HEADER_LEN", "TAG_LEN", "EXPLICIT_NONCE_LEN", "record_bounds", "tls_nonce", "tls_aad",
    "ctr_xor", "length_in_range",
]

SEQ_MASK = 0xFFFF_FFFF
HEADER_LEN = 5
TAG_LEN = 16
EXPLICIT_NONCE_LEN = 8         # TLS 1.2 GCM (RFC 5288)
TAG_LOG_ENTRY_BYTES = layout_bytes(TlsTagLogEntry)
#: Largest ``tag_log_log2`` the card accepts (a 2 MiB log).
MAX_TAG_LOG_LOG2 = 16
KEY_BYTES = {TlsCipher.AES_128_GCM: 16, TlsCipher.AES_256_GCM: 32}
TLS_CONTROL_OPCODES = frozenset(op.value for op in (
    TxOpcode.SET_STATIC, TxOpcode.SET_PROGRESS, TxOpcode.DUMP, TxOpcode.FREE))


def _bytes(value, size):
    """A byte-string field of a parameter block (bytes in order, see above)."""
    return int(value).to_bytes(size, "little")


def _enum(shape, value):
    try:
        return value if isinstance(value, shape) else shape(value)
    except ValueError:
        return None


def record_bounds(version, length):
    """``(payload_start, tag_start, end)`` offsets of a record whose header says ``length``."""
    nonce = EXPLICIT_NONCE_LEN if version is TlsVersion.TLS_1_2 else 0
    return HEADER_LEN + nonce, HEADER_LEN + length - TAG_LEN, HEADER_LEN + length


def length_in_range(version, length):
    """The header length check of the ABI (minimum record, RFC 8446 maximum)."""
    low, high = record_length_bounds(version)
    return low <= length <= high


def ctr_xor(key, nonce, position, chunk):
    """GCM's counter mode over ``chunk`` at payload byte ``position`` (block 0 is J0 + 1).

    XOR is its own inverse: the same call encrypts (TX) and decrypts (RX).
    """
    block, skip = divmod(position, 16)
    counter = bytes(nonce) + (2 + block).to_bytes(4, "big")
    enc = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    return enc.update(bytes(skip) + bytes(chunk))[skip:]


def tls_nonce(version, salt_iv, record_number, explicit_nonce=b""):
    """The 12-byte GCM nonce of one record (RFC 5288 / RFC 8446 5.3)."""
    if version is TlsVersion.TLS_1_2:
        return bytes(salt_iv[:4]) + bytes(explicit_nonce)
    seq = record_number.to_bytes(12, "big")
    return bytes(a ^ b for a, b in zip(salt_iv, seq))


def tls_aad(version, record_number, header):
    """The additional data of one record, from its 5-byte header."""
    if version is TlsVersion.TLS_1_2:
        plaintext_len = int.from_bytes(header[3:5], "big") - EXPLICIT_NONCE_LEN - TAG_LEN
        return (record_number.to_bytes(8, "big") + header[0:1] + b"\x03\x03"
                + plaintext_len.to_bytes(2, "big"))
    return bytes(header)


@dataclasses.dataclass
class TlsTxRecord:
    """The record a context is inside of (what the hardware's record tracker holds).

    Attributes
    ----------
    seq : int
        TCP seq of the record's header.
    number : int
        Record number (the TLS sequence number).
    offset : int
        Bytes of the record already seen, header included.
    header, explicit_nonce : bytearray
        Header and (TLS 1.2) explicit nonce bytes known so far.
    plaintext : bytearray
        Every payload byte seen, in order: stands for the GHASH accumulator.
    seek : bool
        Entered by SET_PROGRESS with SEEK: no GHASH, the tag is ``tag`` or none.
    tag : bytes or None
        The computed tag, or the one SET_PROGRESS gave (TAG_VALID).
    """
    seq: int
    number: int
    offset: int = 0
    header: bytearray = dataclasses.field(default_factory=bytearray)
    explicit_nonce: bytearray = dataclasses.field(default_factory=bytearray)
    plaintext: bytearray = dataclasses.field(default_factory=bytearray)
    seek: bool = False
    tag: bytes = None

    @property
    def length(self):
        """The header's length field, once all five header bytes are known."""
        return int.from_bytes(self.header[3:5], "big") if len(self.header) == HEADER_LEN else None


@dataclasses.dataclass
class TlsTxContext:
    """One TX context (send tag) as the card holds it.

    ``key`` and ``salt_iv`` are zeroed by FREE (the object stays in the table,
    ``in_use`` False), so tests can see that the key is gone.
    """
    in_use: bool = False
    cipher: TlsCipher = None
    version: TlsVersion = None
    key: bytearray = dataclasses.field(default_factory=lambda: bytearray(32))
    salt_iv: bytearray = dataclasses.field(default_factory=lambda: bytearray(12))
    ip_version: int = 0
    port: int = 0
    src_addr: bytes = b""
    dst_addr: bytes = b""
    src_port: int = 0
    dst_port: int = 0
    tag_log_addr: int = 0
    tag_log_log2: int = 0
    next_seq: int = 0
    failed: bool = False
    record: TlsTxRecord = None

    @property
    def aes_key(self):
        return bytes(self.key[:KEY_BYTES[self.cipher]])

    def zero(self):
        """FREE: clear the key material in place, forget the flow and the record."""
        for buf in (self.key, self.salt_iv):
            buf[:] = bytes(len(buf))
        self.in_use = False
        self.record = None
        self.failed = False


class _Failed(Exception):
    """The byte stream stopped the frame: ``status`` says why."""

    def __init__(self, status):
        self.status = status


class ContextTable:
    """What both TLS engines do with their tables of contexts and control blocks.

    A subclass has ``nic``, ``contexts`` (index ``tag - 1``, each with
    ``in_use``) and ``_handlers()`` mapping its control opcodes to coroutines.
    """

    def context(self, tag):
        """The context of ``tag`` (live or not), or None when out of range."""
        return self.contexts[tag - 1] if 1 <= tag <= len(self.contexts) else None

    def _live(self, tag):
        ctx = self.context(tag)
        return ctx if ctx is not None and ctx.in_use else None

    @property
    def in_use(self):
        """Contexts currently allocated."""
        return sum(ctx.in_use for ctx in self.contexts)

    async def control(self, desc):
        """Carry out one control descriptor; return ``(status, 0)``."""
        opcode = TxOpcode(int(getattr(desc.opcode, "value", desc.opcode)))
        return await self._handlers()[opcode](desc), 0

    async def _read_block(self, addr, size):
        """A parameter block, or None when the read fails (counted in TX_DMA_ERRORS)."""
        try:
            return await self.nic.memory.read(addr, size)
        except BusError:
            self.nic._count(Counter.TX_DMA_ERRORS)
            return None


class TlsTxEngine(ContextTable):
    """The card's TLS transmit engine (model).

    Parameters
    ----------
    nic : ReferenceNic
        For host memory (parameter blocks, DUMP bytes, the tag log) and counters.
    contexts : int
        Number of TX contexts, tags ``1..contexts`` (``CAP_CONTEXTS`` bits 15..0).

    Attributes
    ----------
    contexts : list[TlsTxContext]
        Index ``tag - 1``.
    """

    def __init__(self, nic, contexts=256):
        if not 0 < contexts < 1 << 16:
            raise ValueError(f"{contexts} contexts: CAP_CONTEXTS holds 1..65535")
        self.nic = nic
        self.contexts = [TlsTxContext() for _ in range(contexts)]

    # --- control descriptors -------------------------------------------------------------

    def _handlers(self):
        return {TxOpcode.SET_STATIC: self._set_static, TxOpcode.SET_PROGRESS: self._set_progress,
                TxOpcode.DUMP: self._dump, TxOpcode.FREE: self._free}

    async def _set_static(self, desc):
        ctx = self.context(desc.tag)
        if ctx is None or ctx.in_use:
            self.nic._count(Counter.TX_TLS_DROP_BAD_FLOW)
            return TxStatus.BAD_TAG
        raw = await self._read_block(desc.addr, layout_bytes(TlsStaticParams))
        if raw is None:
            return TxStatus.DMA_ERROR
        p = unpack(TlsStaticParams, raw)
        cipher, version = _enum(TlsCipher, p.cipher), _enum(TlsVersion, p.version)
        if (cipher is None or version is None or p.ip_version not in (4, 6)
                or p.port >= self.nic.ports
                or p.tag_log_log2 > MAX_TAG_LOG_LOG2 or p.tag_log_addr % 32):
            return TxStatus.BAD_PARAMS
        addr_len = 4 if p.ip_version == 4 else 16
        ctx.cipher, ctx.version = cipher, version
        ctx.key[:] = _bytes(p.key, 32)
        ctx.salt_iv[:] = _bytes(p.salt_iv, 12)
        ctx.ip_version = p.ip_version
        ctx.port = p.port
        ctx.src_addr = _bytes(p.src_addr, 16)[:addr_len]
        ctx.dst_addr = _bytes(p.dst_addr, 16)[:addr_len]
        ctx.src_port, ctx.dst_port = p.src_port, p.dst_port
        ctx.tag_log_addr, ctx.tag_log_log2 = p.tag_log_addr, p.tag_log_log2
        ctx.next_seq = p.tcp_seq
        ctx.record = TlsTxRecord(seq=p.tcp_seq, number=p.record_number)
        ctx.failed = False
        ctx.in_use = True
        self.nic._count(Counter.TX_TLS_CTX)
        return TxStatus.OK

    async def _set_progress(self, desc):
        ctx = self._live(desc.tag)
        if ctx is None:
            self.nic._count(Counter.TX_TLS_DROP_BAD_FLOW)
            return TxStatus.BAD_TAG
        raw = await self._read_block(desc.addr, layout_bytes(TlsProgressParams))
        if raw is None:
            return TxStatus.DMA_ERROR
        p = unpack(TlsProgressParams, raw)
        flags = int(p.flags.value if hasattr(p.flags, "value") else p.flags)
        seek = bool(flags & TlsProgressFlags.SEEK.value)
        tag_valid = bool(flags & TlsProgressFlags.TAG_VALID.value)
        offset = (p.next_seq - p.record_seq) & SEQ_MASK
        record = TlsTxRecord(seq=p.record_seq, number=p.record_number, offset=offset, seek=seek)
        if not seek:
            if offset or tag_valid:
                return TxStatus.BAD_PARAMS
        else:
            if offset:
                if not length_in_range(ctx.version, p.record_length):
                    return TxStatus.BAD_PARAMS
                if offset >= record_bounds(ctx.version, p.record_length)[2]:
                    return TxStatus.BAD_PARAMS
                record.header[:] = (bytes([p.content_type]) + b"\x03\x03"
                                    + p.record_length.to_bytes(2, "big"))
                if ctx.version is TlsVersion.TLS_1_2 and offset > HEADER_LEN:
                    record.explicit_nonce[:] = _bytes(p.explicit_nonce, EXPLICIT_NONCE_LEN)
            if tag_valid:
                record.tag = _bytes(p.tag, TAG_LEN)
        ctx.record = record
        ctx.next_seq = p.next_seq
        ctx.failed = False
        self.nic._count(Counter.TX_TLS_RESYNC)
        return TxStatus.OK

    async def _dump(self, desc):
        ctx = self._live(desc.tag)
        if ctx is None:
            self.nic._count(Counter.TX_TLS_DROP_BAD_FLOW)
            return TxStatus.BAD_TAG
        if not 0 < desc.length <= MAX_FRAME:
            self.nic._count(Counter.TX_DESC_ERRORS)
            return TxStatus.BAD_LENGTH
        data = await self._read_block(desc.addr, desc.length)
        if data is None:
            return TxStatus.DMA_ERROR
        if ctx.failed:
            return TxStatus.CONTEXT_FAILED
        status = await self._run_bytes(ctx, data, None)
        if status is TxStatus.OK:
            self.nic._count(Counter.TX_TLS_DUMP_PACKETS)
            self.nic._count(Counter.TX_TLS_DUMP_BYTES, len(data))
        return status

    async def _free(self, desc):
        ctx = self._live(desc.tag)
        if ctx is None:
            self.nic._count(Counter.TX_TLS_DROP_BAD_FLOW)
            return TxStatus.BAD_TAG
        ctx.zero()
        self.nic._count(Counter.TX_TLS_CTX_FREED)
        return TxStatus.OK

    # --- tagged frames ---------------------------------------------------------------------

    async def transmit(self, desc, frame):
        """A PACKET with ``tag != 0`` whose bytes were read.

        Returns
        -------
        (status, frame, force_csum)
            ``frame`` is what goes on the wire (None when dropped);
            ``force_csum`` says the TCP and IPv4 checksums must be filled
            whatever the descriptor's flags (TLS bytes were rewritten).
        """
        from .model import parse_headers   # the model imports this module

        ctx = self._live(desc.tag)
        if ctx is None:
            self.nic._count(Counter.TX_TLS_DROP_BAD_FLOW)
            return TxStatus.BAD_TAG, None, False
        if desc.port != ctx.port:
            # The route moved the flow to another port: this tag is not valid
            # there (FreeBSD ip_output_send: tag->ifp != ifp -> EAGAIN).
            self.nic._count(Counter.TX_TLS_DROP_BAD_FLOW)
            return TxStatus.WRONG_PORT, None, False
        parsed = parse_headers(frame)
        if not self._of_flow(ctx, frame, parsed):
            self.nic._count(Counter.TX_TLS_DROP_BAD_FLOW)
            return TxStatus.BAD_FLOW, None, False
        l4 = parsed.l4_offset
        payload_start = l4 + (frame[l4 + 12] >> 4) * 4
        payload_end = l4 + parsed.l4_length
        if payload_start == payload_end:
            # A pure ACK (or FIN/RST) on a tagged descriptor: no TLS bytes, so
            # it goes out as a plain frame (mlx5: tisn 0), its seq unchecked.
            return TxStatus.OK, frame, False
        if ctx.failed:
            self.nic._count(Counter.TX_TLS_DROP_NO_SYNC_DATA)
            return TxStatus.CONTEXT_FAILED, None, False
        seq = int.from_bytes(frame[l4 + 4:l4 + 8], "big")
        if seq != ctx.next_seq:
            # Never sent in the clear: the driver must reposition the context.
            self.nic._count(Counter.TX_TLS_OOO)
            return TxStatus.OUT_OF_SEQUENCE, None, False
        out = bytearray()
        status = await self._run_bytes(ctx, frame[payload_start:payload_end], out)
        if status is not TxStatus.OK:
            self.nic._count(Counter.TX_TLS_DROP_NO_SYNC_DATA)
            return status, None, False
        self.nic._count(Counter.TX_TLS_ENCRYPTED_PACKETS)
        self.nic._count(Counter.TX_TLS_ENCRYPTED_BYTES, len(out))
        return TxStatus.OK, frame[:payload_start] + bytes(out) + frame[payload_end:], True

    @staticmethod
    def _of_flow(ctx, frame, parsed):
        """A valid TCP segment of the context's flow (addresses, ports, IP version)."""
        if parsed.l4_proto is not L4Proto.TCP or not parsed.l4_valid:
            return False
        l3, l4 = parsed.l3_offset, parsed.l4_offset
        data_offset = (frame[l4 + 12] >> 4) * 4
        if not 20 <= data_offset <= parsed.l4_length:
            return False
        if ctx.ip_version == 4:
            if parsed.ip_header_length == 40:
                return False
            src, dst = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
        else:
            if parsed.ip_header_length != 40:
                return False
            src, dst = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]
        return (src == ctx.src_addr and dst == ctx.dst_addr
                and int.from_bytes(frame[l4:l4 + 2], "big") == ctx.src_port
                and int.from_bytes(frame[l4 + 2:l4 + 4], "big") == ctx.dst_port)

    # --- the record tracker ----------------------------------------------------------------

    async def _run_bytes(self, ctx, data, out):
        """Pass ``data`` (at ``ctx.next_seq``) through the context; commit on success.

        ``out`` collects the wire bytes (packet) or is None (DUMP: nothing is
        sent and no tag is needed). Returns the status; on CONTEXT_FAILED the
        failed flag is set, on any failure nothing else changes.
        """
        record = copy.deepcopy(ctx.record)
        tag_logs = []
        try:
            record = self._advance(ctx, record, bytes(data), out, tag_logs)
        except _Failed as failure:
            if failure.status is TxStatus.CONTEXT_FAILED:
                ctx.failed = True
            return failure.status
        ctx.record = record
        ctx.next_seq = (ctx.next_seq + len(data)) & SEQ_MASK
        for number, tag in tag_logs:
            self.nic._count(Counter.TX_TLS_RECORDS)
            entry = pack(TlsTagLogEntry, record_number=number,
                         tag=int.from_bytes(tag, "little"), valid=1)
            addr = ctx.tag_log_addr + TAG_LOG_ENTRY_BYTES * (number % (1 << ctx.tag_log_log2))
            try:
                await self.nic.memory.write(addr, entry)
            except BusError:
                self.nic._count(Counter.TX_DMA_ERRORS)
        return TxStatus.OK

    def _nonce(self, ctx, record):
        return tls_nonce(ctx.version, ctx.salt_iv, record.number, record.explicit_nonce)

    def _advance(self, ctx, record, data, out, tag_logs):
        """Walk ``data`` through the record regions; return the record state after it."""
        pos = 0
        while pos < len(data):
            o = record.offset
            if o < HEADER_LEN:
                n = min(HEADER_LEN - o, len(data) - pos)
                chunk = data[pos:pos + n]
                if len(record.header) < HEADER_LEN:
                    record.header += chunk
                    if len(record.header) == HEADER_LEN:
                        if (record.header[1:3] != b"\x03\x03"
                                or not length_in_range(ctx.version, record.length)):
                            raise _Failed(TxStatus.CONTEXT_FAILED)
                if out is not None:
                    out += chunk     # the header goes out in the clear
            else:
                payload_start, tag_start, end = record_bounds(ctx.version, record.length)
                if o < payload_start:
                    n = min(payload_start - o, len(data) - pos)
                    chunk = data[pos:pos + n]
                    if len(record.explicit_nonce) < EXPLICIT_NONCE_LEN:
                        record.explicit_nonce += chunk
                    if out is not None:
                        out += chunk     # the explicit nonce too
                elif o < tag_start:
                    n = min(tag_start - o, len(data) - pos)
                    chunk = data[pos:pos + n]
                    if not record.seek:
                        record.plaintext += chunk
                    if out is not None:
                        out += self._ctr(ctx, record, o - payload_start, chunk)
                else:
                    n = min(end - o, len(data) - pos)
                    if record.tag is None and not record.seek:
                        record.tag = self._compute_tag(ctx, record)
                        tag_logs.append((record.number, record.tag))
                    if out is not None:
                        if record.tag is None:
                            raise _Failed(TxStatus.NO_TAG)
                        out += record.tag[o - tag_start:o - tag_start + n]
            pos += n
            record.offset += n
            if record.length is not None and record.offset == record_bounds(ctx.version, record.length)[2]:
                record = TlsTxRecord(seq=(record.seq + record.offset) & SEQ_MASK,
                                     number=(record.number + 1) & ((1 << 64) - 1))
        return record

    def _ctr(self, ctx, record, position, chunk):
        return ctr_xor(ctx.aes_key, self._nonce(ctx, record), position, chunk)

    def _compute_tag(self, ctx, record):
        payload_start, tag_start, _ = record_bounds(ctx.version, record.length)
        assert len(record.plaintext) == tag_start - payload_start
        sealed = AESGCM(ctx.aes_key).encrypt(
            self._nonce(ctx, record), bytes(record.plaintext),
            tls_aad(ctx.version, record.number, record.header))
        return sealed[-TAG_LEN:]
