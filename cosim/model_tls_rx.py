"""Reference TLS receive engine: steering, the record tracker, in-place decryption.

This is the executable specification of the "TLS receive" section of
:mod:`tlsnic.abi`, written as the card's per-frame behaviour so the gateware
can be compared with it byte for byte (completion fields, buffer bytes,
counters). :class:`TlsRxEngine` is owned by
:class:`~tlsnic.cosim.model.ReferenceNic` (``tls=True``): RX control
descriptors from ``_transmit``, every received frame from ``_rx_step``.

The tracker follows mlx5's RX TLS state machine (``mlx5e_ktls_rx``: tracking,
searching, resync request pending the stack's answer) and Linux
``tls_device``'s rule that the device decrypts only from a record start it
was told about, never from a guess:

* TRACKING: the walker knows the record it is in (where its header was, its
  number). Records are decrypted in place as their bytes pass and each tag is
  checked at its end; a record the walker entered without all of its bytes is
  *skipped* (passed as received, tag unchecked) and the next one decrypted.
* SEARCHING: the header is lost. Contiguous new bytes are scanned for a
  plausible header; the first one becomes the candidate.
* PENDING: the candidate's chain of records is followed (every header on it
  must stay plausible) while the driver looks the candidate up in its table of
  record starts and answers with RX_RESYNC.

GHASH is modelled by keeping the record's ciphertext and asking ``AESGCM`` to
open it at the end; the keystream for the bytes as they pass comes from
AES-CTR at ``J0 + 1 + block`` (the same helper as the transmit model).
"""

import dataclasses

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tlsnic.abi import (
    STEER_WAYS, Counter, L4Proto, RxTlsStatus, TlsCipher, TlsRxResyncFlags, TlsRxResyncParams,
    TlsStaticParams, TlsVersion, TxOpcode, TxStatus, flow_hash, flow_key, layout_bytes, unpack,
)

from .model_tls_tx import (
    ContextTable, EXPLICIT_NONCE_LEN, HEADER_LEN, KEY_BYTES, SEQ_MASK, TAG_LEN, ctr_xor, length_in_range,
    record_bounds, tls_aad, tls_nonce,
)

__all__ = ["TlsRxEngine", "TlsRxContext", "TlsRxRecord", "SteeringTable",
           "RX_CONTROL_OPCODES", "plausible_header", "tcp_segment"]

RX_CONTROL_OPCODES = frozenset(op.value for op in (
    TxOpcode.RX_SET_STATIC, TxOpcode.RX_RESYNC, TxOpcode.RX_FREE))
#: Bytes of a header the search window carries from one frame to the next.
WINDOW_CARRY = HEADER_LEN - 1


def _signed32(value):
    value &= SEQ_MASK
    return value - (1 << 32) if value & (1 << 31) else value


def plausible_header(version, header):
    """The ABI's plausibility test of five header bytes (search and tracking alike)."""
    content_type = header[0]
    if version is TlsVersion.TLS_1_3:
        type_ok = content_type == 23
    else:
        type_ok = 20 <= content_type <= 23
    return (type_ok and header[1:3] == b"\x03\x03"
            and length_in_range(version, int.from_bytes(header[3:5], "big")))


def tcp_segment(frame, parsed):
    """``(flow fields, seq, payload_start, payload_end)`` of a whole TCP segment, or None.

    Steering looks only at segments the parser found whole, with a data
    offset inside the segment; the flow fields are ``(ip_version, src_addr,
    dst_addr, src_port, dst_port)``.
    """
    if parsed.l4_proto is not L4Proto.TCP or not parsed.l4_valid:
        return None
    l3, l4 = parsed.l3_offset, parsed.l4_offset
    data_offset = (frame[l4 + 12] >> 4) * 4
    if not 20 <= data_offset <= parsed.l4_length:
        return None
    if parsed.ip_header_length == 40:
        ip_version, src, dst = 6, frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]
    else:
        ip_version, src, dst = 4, frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
    flow = (ip_version, bytes(src), bytes(dst),
            int.from_bytes(frame[l4:l4 + 2], "big"), int.from_bytes(frame[l4 + 2:l4 + 4], "big"))
    seq = int.from_bytes(frame[l4 + 4:l4 + 8], "big")
    return flow, seq, l4 + data_offset, l4 + parsed.l4_length


class SteeringTable:
    """Flow key -> receive tag: two-choice buckets of fingerprints (see the ABI).

    Parameters
    ----------
    buckets : int
        A power of two; the card has ``rx_contexts // 2``.
    """

    def __init__(self, buckets):
        if buckets < 1 or buckets & (buckets - 1):
            raise ValueError(f"{buckets} steering buckets: a power of two is needed")
        self.buckets = [[None] * STEER_WAYS for _ in range(buckets)]

    def choices(self, fingerprint):
        """The two buckets a fingerprint may live in (possibly the same one)."""
        n = len(self.buckets)
        return fingerprint % n, (fingerprint >> 16) % n

    def find(self, fingerprint):
        """The tag whose way holds ``fingerprint``, or None."""
        for b in self.choices(fingerprint):
            for way in self.buckets[b]:
                if way is not None and way[0] == fingerprint:
                    return way[1]
        return None

    def insert(self, fingerprint, tag):
        """Place ``(fingerprint, tag)``; return OK, STEER_EXISTS or STEER_FULL."""
        if self.find(fingerprint) is not None:
            return TxStatus.STEER_EXISTS
        b0, b1 = self.choices(fingerprint)
        used = [sum(way is not None for way in self.buckets[b]) for b in (b0, b1)]
        bucket = self.buckets[b0 if used[0] <= used[1] else b1]
        if None not in bucket:
            return TxStatus.STEER_FULL
        bucket[bucket.index(None)] = (fingerprint, tag)
        return TxStatus.OK

    def remove(self, tag):
        for bucket in self.buckets:
            for i, way in enumerate(bucket):
                if way is not None and way[1] == tag:
                    bucket[i] = None

    @property
    def in_use(self):
        return sum(way is not None for bucket in self.buckets for way in bucket)


@dataclasses.dataclass
class TlsRxRecord:
    """The record the walker is in.

    ``number`` is absolute in TRACKING and counted from the candidate (0) in
    PENDING. ``ciphertext`` stands for the GHASH accumulator.
    """
    seq: int
    number: int
    skip: bool = False
    offset: int = 0
    header: bytearray = dataclasses.field(default_factory=bytearray)
    explicit_nonce: bytearray = dataclasses.field(default_factory=bytearray)
    ciphertext: bytearray = dataclasses.field(default_factory=bytearray)
    tag: bytearray = dataclasses.field(default_factory=bytearray)

    @property
    def length(self):
        return int.from_bytes(self.header[3:5], "big") if len(self.header) == HEADER_LEN else None

    def end_seq(self, version):
        """TCP seq just past the record, once its header is known."""
        return (self.seq + record_bounds(version, self.length)[2]) & SEQ_MASK

    def following(self, version):
        return TlsRxRecord(seq=self.end_seq(version), number=(self.number + 1) & ((1 << 64) - 1))


@dataclasses.dataclass
class TlsRxContext:
    """One receive context as the card holds it (key zeroed in place on RX_FREE)."""
    in_use: bool = False
    cipher: TlsCipher = None
    version: TlsVersion = None
    key: bytearray = dataclasses.field(default_factory=lambda: bytearray(32))
    salt_iv: bytearray = dataclasses.field(default_factory=lambda: bytearray(12))
    flow_key: bytes = b""
    state: RxTlsStatus = RxTlsStatus.TRACKING
    next_seq: int = 0
    record: TlsRxRecord = None
    window: bytes = b""            # SEARCHING: up to 4 bytes carried from the previous frame
    candidate_seq: int = None      # PENDING

    @property
    def aes_key(self):
        return bytes(self.key[:KEY_BYTES[self.cipher]])

    def zero(self):
        for buf in (self.key, self.salt_iv):
            buf[:] = bytes(len(buf))
        self.in_use = False
        self.flow_key = b""
        self.record = None
        self.window = b""
        self.candidate_seq = None

    def lose_sync(self):
        self.state = RxTlsStatus.SEARCHING
        self.record = None
        self.window = b""
        self.candidate_seq = None


@dataclasses.dataclass
class _FrameResult:
    """What one frame's walk produced, for the completion."""
    span: tuple = None          # (first, end) payload offsets decrypted, contiguous
    auth_fail: bool = False
    resync_offset: int = None


class TlsRxEngine(ContextTable):
    """The card's TLS receive engine (model).

    Parameters
    ----------
    nic : ReferenceNic
        For host memory (parameter blocks), ports and counters.
    contexts : int
        Receive contexts, tags ``1..contexts`` (``CAP_CONTEXTS`` bits 31..16);
        a power of two, at least 2 (the steering table has ``contexts // 2``
        buckets).
    """

    def __init__(self, nic, contexts=256):
        if contexts < 2 or contexts & (contexts - 1) or contexts >= 1 << 16:
            raise ValueError(f"{contexts} RX contexts: a power of two in 2..32768")
        self.nic = nic
        self.contexts = [TlsRxContext() for _ in range(contexts)]
        self.steering = SteeringTable(contexts // 2)

    def _count(self, counter, amount=1):
        self.nic._count(counter, amount)

    # --- control descriptors -------------------------------------------------------------

    def _handlers(self):
        return {TxOpcode.RX_SET_STATIC: self._set_static, TxOpcode.RX_RESYNC: self._resync,
                TxOpcode.RX_FREE: self._free}

    async def _set_static(self, desc):
        ctx = self.context(desc.tag)
        if ctx is None or ctx.in_use:
            return TxStatus.BAD_TAG
        raw = await self._read_block(desc.addr, layout_bytes(TlsStaticParams))
        if raw is None:
            return TxStatus.DMA_ERROR
        p = unpack(TlsStaticParams, raw)
        if (not isinstance(p.cipher, TlsCipher) or not isinstance(p.version, TlsVersion)
                or p.ip_version not in (4, 6) or p.port >= self.nic.ports):
            return TxStatus.BAD_PARAMS
        addr_len = 4 if p.ip_version == 4 else 16
        key = flow_key(p.port, p.ip_version,
                       p.src_addr.to_bytes(16, "little")[:addr_len],
                       p.dst_addr.to_bytes(16, "little")[:addr_len], p.src_port, p.dst_port)
        status = self.steering.insert(flow_hash(key), desc.tag)
        if status is not TxStatus.OK:
            return status
        ctx.cipher, ctx.version = p.cipher, p.version
        ctx.key[:] = p.key.to_bytes(32, "little")
        ctx.salt_iv[:] = p.salt_iv.to_bytes(12, "little")
        ctx.flow_key = key
        ctx.state = RxTlsStatus.TRACKING
        ctx.next_seq = p.tcp_seq
        ctx.record = TlsRxRecord(seq=p.tcp_seq, number=p.record_number)
        ctx.window, ctx.candidate_seq = b"", None
        ctx.in_use = True
        self._count(Counter.RX_TLS_CTX)
        return TxStatus.OK

    async def _resync(self, desc):
        ctx = self._live(desc.tag)
        if ctx is None:
            return TxStatus.BAD_TAG
        raw = await self._read_block(desc.addr, layout_bytes(TlsRxResyncParams))
        if raw is None:
            return TxStatus.DMA_ERROR
        p = unpack(TlsRxResyncParams, raw)
        if ctx.state is not RxTlsStatus.PENDING or p.candidate_seq != ctx.candidate_seq:
            # The card dropped that candidate on its own (its chain broke) or
            # never had it: the answer is about bytes long gone.
            self._count(Counter.RX_TLS_RESYNC_FAIL)
            return TxStatus.RESYNC_STALE
        if getattr(p.flags, "value", p.flags) & TlsRxResyncFlags.CONFIRM.value:
            record = ctx.record
            # Numbers along the chain were counted from the candidate.
            record.number = (p.record_number + record.number) & ((1 << 64) - 1)
            # Bytes of the record the walker is in have passed undecrypted.
            record.skip = record.offset > 0
            ctx.state, ctx.candidate_seq = RxTlsStatus.TRACKING, None
            self._count(Counter.RX_TLS_RESYNC_OK)
        else:
            ctx.lose_sync()
            self._count(Counter.RX_TLS_RESYNC_FAIL)
        return TxStatus.OK

    async def _free(self, desc):
        ctx = self._live(desc.tag)
        if ctx is None:
            return TxStatus.BAD_TAG
        self.steering.remove(desc.tag)
        ctx.zero()
        self._count(Counter.RX_TLS_CTX_FREED)
        return TxStatus.OK

    # --- received frames -----------------------------------------------------------------

    def steer(self, port, frame, parsed):
        """``(tag, seq, payload_start, payload_end)`` for a frame, tag 0 when none."""
        segment = tcp_segment(frame, parsed)
        if segment is None:
            return 0, 0, 0, 0
        flow, seq, start, end = segment
        key = flow_key(port, *flow)
        tag = self.steering.find(flow_hash(key))
        if tag is None or self.contexts[tag - 1].flow_key != key:
            return 0, 0, 0, 0
        return tag, seq, start, end

    def receive(self, port, frame, parsed, checked):
        """One received frame.

        Parameters
        ----------
        checked : bool
            Checksums good (or not applicable) and the frame not truncated.

        Returns
        -------
        (fields, frame)
            The completion's TLS fields (``tag``, ``tls``, ``auth_fail``,
            ``dec_start``, ``dec_end``, ``resync``, ``resync_offset``) and the
            frame as it goes to the host buffer.
        """
        fields = dict(tag=0, tls=RxTlsStatus.NONE, auth_fail=0, dec_start=0, dec_end=0,
                      resync=0, resync_offset=0)
        tag, seq, start, end = self.steer(port, frame, parsed)
        if not tag:
            return fields, frame
        fields["tag"] = tag
        ctx = self.contexts[tag - 1]
        length = end - start
        if length == 0:
            return fields, frame
        if not checked:
            fields["tls"] = RxTlsStatus.NOT_CHECKED
            return fields, frame
        ahead = _signed32(seq - ctx.next_seq)
        if ahead + length <= 0:
            fields["tls"] = RxTlsStatus.OUT_OF_ORDER
            self._count(Counter.RX_TLS_OOO)
            return fields, frame
        new = max(0, -ahead)
        if ahead > 0:
            self._gap(ctx, seq)
        fields["tls"] = ctx.state
        payload = bytearray(frame[start:end])
        result = _FrameResult()
        if ctx.state is RxTlsStatus.SEARCHING:
            self._search(ctx, payload, new, seq, result)
        else:
            self._walk(ctx, payload, new, result)
        ctx.next_seq = (seq + length) & SEQ_MASK

        if result.span is not None:
            fields["dec_start"], fields["dec_end"] = result.span
            self._count(Counter.RX_TLS_DECRYPTED_PACKETS)
            self._count(Counter.RX_TLS_DECRYPTED_BYTES, result.span[1] - result.span[0])
        fields["auth_fail"] = int(result.auth_fail)
        if result.resync_offset is not None:
            fields["resync"] = 1
            fields["resync_offset"] = result.resync_offset & 0xFFFF
        return fields, bytes(frame[:start]) + bytes(payload) + bytes(frame[end:])

    def _gap(self, ctx, seq):
        """Bytes between ``next_seq`` and ``seq`` never came (ABI rule 3)."""
        record = ctx.record
        if ctx.state is not RxTlsStatus.SEARCHING and record.length is not None:
            distance = _signed32(seq - record.seq)
            if distance <= record_bounds(ctx.version, record.length)[2]:
                # The header survived: the rest of this record cannot be
                # checked, but the next header is where its length says.
                record.skip = True
                record.offset = distance
                if record.offset == record_bounds(ctx.version, record.length)[2]:
                    ctx.record = record.following(ctx.version)
                return
        if ctx.state is not RxTlsStatus.SEARCHING:
            self._count(Counter.RX_TLS_LOST_SYNC)
        ctx.lose_sync()

    def _search(self, ctx, payload, new, seq, result):
        """Scan ``payload[new:]`` (plus the carried window) for a plausible header."""
        window = ctx.window + bytes(payload[new:])
        base = len(ctx.window)           # window index of payload[new]
        for i in range(len(window) - HEADER_LEN + 1):
            header = window[i:i + HEADER_LEN]
            if plausible_header(ctx.version, header):
                candidate = (seq + new - base + i) & SEQ_MASK
                result.resync_offset = new - base + i
                self._count(Counter.RX_TLS_RESYNC_REQ)
                ctx.state, ctx.candidate_seq, ctx.window = RxTlsStatus.PENDING, candidate, b""
                ctx.record = TlsRxRecord(seq=candidate, number=0, offset=HEADER_LEN,
                                         header=bytearray(header))
                self._walk(ctx, payload, new + i + HEADER_LEN - base, result)
                return
        ctx.window = window[-WINDOW_CARRY:] if len(window) >= WINDOW_CARRY else window

    def _walk(self, ctx, payload, pos, result):
        """Follow records through ``payload[pos:]`` (TRACKING decrypts, PENDING follows)."""
        version = ctx.version
        while pos < len(payload):
            record = ctx.record
            decrypting = ctx.state is RxTlsStatus.TRACKING and not record.skip
            o = record.offset
            if o < HEADER_LEN:
                n = min(HEADER_LEN - o, len(payload) - pos)
                record.header += payload[pos:pos + n]
                if len(record.header) == HEADER_LEN and not plausible_header(version, record.header):
                    # The frame's decrypted span ends where this header began:
                    # its bytes in this frame are the chunk not yet counted.
                    self._count(Counter.RX_TLS_LOST_SYNC)
                    ctx.lose_sync()
                    return
            else:
                payload_start, tag_start, end = record_bounds(version, record.length)
                if o < payload_start:
                    n = min(payload_start - o, len(payload) - pos)
                    record.explicit_nonce += payload[pos:pos + n]
                elif o < tag_start:
                    n = min(tag_start - o, len(payload) - pos)
                    if decrypting:
                        chunk = bytes(payload[pos:pos + n])
                        record.ciphertext += chunk
                        payload[pos:pos + n] = ctr_xor(ctx.aes_key, self._nonce(ctx, record),
                                                       o - payload_start, chunk)
                else:
                    n = min(end - o, len(payload) - pos)
                    record.tag += payload[pos:pos + n]
                    if decrypting and o + n == end:
                        result.auth_fail |= not self._tag_good(ctx, record)
            if decrypting:
                if result.span is None:
                    result.span = (pos, pos + n)
                else:
                    assert result.span[1] == pos, "a frame's decrypted span is contiguous"
                    result.span = (result.span[0], pos + n)
            pos += n
            record.offset += n
            if record.length is not None and record.offset == record_bounds(version, record.length)[2]:
                ctx.record = record.following(version)

    def _nonce(self, ctx, record):
        return tls_nonce(ctx.version, ctx.salt_iv, record.number, record.explicit_nonce)

    def _tag_good(self, ctx, record):
        self._count(Counter.RX_TLS_RECORDS)
        try:
            AESGCM(ctx.aes_key).decrypt(
                self._nonce(ctx, record), bytes(record.ciphertext) + bytes(record.tag),
                tls_aad(ctx.version, record.number, record.header))
        except InvalidTag:
            self._count(Counter.RX_TLS_AUTH_FAIL)
            return False
        return True
