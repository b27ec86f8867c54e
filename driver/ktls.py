"""Kernel TLS transmit: sessions, send tags, ifnet / software modes, retransmit recovery.

Modelled on FreeBSD ``sys/kern/uipc_ktls.c`` (``ktls_enable_tx``,
``ktls_alloc_snd_tag``, ``ktls_frame``, ``ktls_set_tx_mode``,
``ktls_output_eagain``, ``ktls_reset_send_tag``), its mlx5 driver
(``mlx5e_sq_tls_xmit``: static/progress params and DUMP WQEs for a segment
the hardware does not expect) and Linux ``tls_device`` (record list,
``tls_get_record``). The card's contract is the "TLS transmit" section of
:mod:`tlsnic.abi`.

Objects:

* :class:`KtlsDriver`: the card's kTLS support (context allocator, strategy,
  counters: FreeBSD's ``kern.ipc.tls`` stats).
* :class:`KtlsSocket`: one TCP connection with kTLS TX (``so_snd`` + ``tcpcb``).
* :class:`KtlsSession`: ``struct ktls_session``, one per mode the socket has
  had (records keep the session that framed them).
* :class:`SendTag`: ``m_snd_tag`` for a card context, and the driver's view
  of the context (``expected_seq``: mlx5 ``ptag->expected_seq``).

Retransmit strategies (``strategy=``):

``"dump"`` (mlx5)
    A segment at a record boundary needs SET_PROGRESS only; elsewhere
    SET_PROGRESS at the record start then DUMP of ``[record start, seq)`` in
    chunks of at most ``hw_mtu`` bytes; a forward gap inside the record the
    card is tracking dumps only ``[expected_seq, seq)``.
``"seek"``
    SET_PROGRESS with SEEK at the segment's seq, with TAG_VALID and the tag
    read from the context's tag log when known. In a record whose tag is
    unknown, a segment that carries tag bytes, or any segment of a record not
    yet sent whole (its tag will be computed from the bytes), falls back to
    the dump recovery; only a retransmit ahead of the tag, in a record sent
    whole before, SEEKs without a tag.
"""

import collections
import dataclasses
import errno
import ipaddress
import random

from tlsnic.abi import (
    CAP_TLS_1_2, CAP_TLS_1_3, CAP_TLS_AES_128_GCM, CAP_TLS_AES_256_GCM, CAP_TLS_TX,
    TlsCipher, TlsProgressFlags, TlsProgressParams, TlsStaticParams, TlsTagLogEntry,
    TlsVersion, TxOpcode, TxStatus, layout_bytes, pack, unpack,
)

from .fallback import seal_record
from .tcp import SEQ_MASK, TcpSender, seq_add, seq_sub
from .tls_record import (AES_GCM, CIPHERS, HEADER_LEN, TAG_LEN, TLS_CT_APPLICATION_DATA,
                         TLS_CT_HANDSHAKE, TLS_HS_KEY_UPDATE, RecordFramer, TlsSessionParams,
                         handshake_types)

__all__ = ["KtlsError", "KtlsDriver", "KtlsSocket", "KtlsSession", "SendTag",
           "MODE_IFNET", "MODE_SW", "STRATEGIES"]

MODE_IFNET = "ifnet"
MODE_SW = "sw"
STRATEGIES = ("dump", "seek")
TAG_LOG_ENTRY_BYTES = layout_bytes(TlsTagLogEntry)
CAP_CIPHER = {TlsCipher.AES_128_GCM: CAP_TLS_AES_128_GCM, TlsCipher.AES_256_GCM: CAP_TLS_AES_256_GCM}
CAP_VERSION = {TlsVersion.TLS_1_2: CAP_TLS_1_2, TlsVersion.TLS_1_3: CAP_TLS_1_3}
#: TLS minor versions by name (FreeBSD ``tls_vminor``): 1 = TLS 1.0 ... 4 = TLS 1.3.
VERSION_MINOR = {"1.0": 1, "1.1": 2, "1.2": 3, "1.3": 4}


class KtlsError(OSError):
    """An errno-style failure (``ktls_enable_tx`` and friends)."""

    def __init__(self, code, message):
        super().__init__(code, f"{errno.errorcode.get(code, code)}: {message}")


def _host_span(record, offset):
    """``(address, contiguous bytes)`` of a record's byte ``offset`` in host memory, or None."""
    if record is None or not record.host:
        return None
    for start, length, addr in record.host:
        if start <= offset < start + length:
            return addr + offset - start, start + length - offset
    return None


def _field(data):
    """Bytes as a parameter-block field value (bytes in order: byte 0 first)."""
    return int.from_bytes(bytes(data), "little")


@dataclasses.dataclass(eq=False)
class SendTag:
    """A card context and what the driver knows of it (``m_snd_tag``).

    Attributes
    ----------
    tag : int
        The context number (TX descriptor ``tag``).
    expected_seq : int or None
        The seq the card expects next (None: unknown, forces a resync).
    record_seq : int or None
        Start of the record the card is inside of.
    seek_untagged : bool
        The card entered that record by SEEK without a tag: a segment with
        its tag bytes would be dropped NO_TAG.
    tag_log_addr, tag_log_log2 : int
    ifp : int
        The port the tag was allocated on (``tag->ifp``); ``ip_output_send``
        refuses to use it on another one.
    refs : int
        ``m_snd_tag_ref`` count: one for the session holding it, one per
        descriptor posted and not reaped (mlx5: every WQE holds a reference).
    state : str
        ``"live"``, ``"released"`` (refs reached 0, FREE not yet posted),
        ``"freeing"`` (FREE posted), ``"freed"`` (context number recycled).
    """
    tag: int
    expected_seq: int = None
    record_seq: int = None
    seek_untagged: bool = False
    tag_log_addr: int = 0
    tag_log_log2: int = 0
    ifp: int = 0
    refs: int = 1
    state: str = "live"


@dataclasses.dataclass(eq=False)
class KtlsSession:
    """``struct ktls_session`` for TX.

    Attributes
    ----------
    refs : int
        One for ``sb_tls_info`` while this is the socket's current session,
        one per framed record not yet ACKed (each ``M_EXTPG`` mbuf holds a
        session reference). At 0 the session is freed (``ktls_free``) and
        drops its tag reference.
    reset_pending : bool
        A reset-tag task is queued or failed (``tls->reset_pending``).
    """
    params: TlsSessionParams
    mode: str
    snd_tag: SendTag = None
    framer: RecordFramer = None
    refs: int = 1
    reset_pending: bool = False
    freed: bool = False


class KtlsDriver:
    """kTLS transmit support of one :class:`~tlsnic.driver.device.Device`.

    Parameters
    ----------
    dev : Device
        Opened.
    strategy : {"dump", "seek"}
        How out-of-sequence segments are repositioned.
    hw_mtu : int
        Largest DUMP descriptor (mlx5 ``hw_mtu_msb``).
    tag_log_log2 : int
        Tag log entries per context (seek strategy).
    permitted : bool
        ``kern.ipc.tls.ifnet.permitted`` (the anchors: really 0 by default on
        FreeBSD; tests turn it on). ``force`` allocations (tag reset) ignore it.
    ifnet_max_rexmit_pct : int
        ``kern.ipc.tls.ifnet_max_rexmit_pct``.
    seed : int
        Seeds the TLS 1.2 explicit nonce counters.
    port_contexts : int, optional
        Contexts each port may hold at once. A dual-port mlx5 is two PCI
        functions, each with its own DEK pool; this partitions the card's
        one table the same way (None: one shared pool).
    async_crypto : bool
        Software-mode records are encrypted by :meth:`run_tasks` (FreeBSD's
        ktls worker threads, ``M_NOTREADY`` until then) instead of at write.

    Attributes
    ----------
    stats : dict[str, int]
        FreeBSD ``kern.ipc.tls`` counters plus the driver's own re-DMA counts;
        ``tx_tls_ooo`` is Linux's: segments the card did not expect, which the
        driver repositioned it for (``redma_bytes`` is its ``tx_tls_resync_bytes``).
    completions : list[TxCompletionRecord]
        Every TX completion this layer reaped, in order.
    tasks : collections.deque
        Queued taskqueue work (reset-tag tasks); :meth:`run_tasks` runs it.
    """

    def __init__(self, dev, *, strategy="dump", hw_mtu=1500, tag_log_log2=6, permitted=True,
                 ifnet_max_rexmit_pct=2, seed=0, port_contexts=None, async_crypto=False):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r}: one of {STRATEGIES}")
        self.dev = dev
        self.strategy = strategy
        self.hw_mtu = hw_mtu
        self.tag_log_log2 = tag_log_log2
        self.permitted = permitted
        self.ifnet_max_rexmit_pct = ifnet_max_rexmit_pct
        self.rng = random.Random(seed)
        caps = dev.caps
        self.ports = caps.ports
        self.port_contexts = port_contexts
        self.async_crypto = async_crypto
        self.cap_tls = caps.tls if caps.tls & CAP_TLS_TX else 0
        self.free_tags = list(range(1, caps.tx_contexts + 1)) if self.cap_tls else []
        self.tags_in_use = 0
        self.port_in_use = collections.Counter()
        self.completions = []
        self.tasks = collections.deque()
        self.crypto_queue = collections.deque()   # (sock, entry) waiting for software encryption
        self._posted = {}          # TXQ index -> (SendTag or None, socket, segment or None)
        self._freeing = {}         # TXQ index of a FREE -> SendTag
        self._dumping = {}         # TXQ index of a DUMP -> the record whose memory it reads
        self._to_free = []         # tags whose last reference went away
        self.stats = dict.fromkeys((
            "offload_total", "sw_tx", "ifnet_tx", "ifnet_alloc_failed", "enomem",
            "switch_to_sw", "switch_to_ifnet", "switch_failed",
            "ifnet_disable_ok", "ifnet_disable_failed",
            "ifnet_reset", "ifnet_reset_failed", "ifnet_reset_dropped",
            "tx_tls_ooo", "resync_params", "resync_seek", "resync_seek_tag", "seek_fallback_dump",
            "dump_descriptors", "redma_bytes", "drops_seen",
            "eagain", "enobufs", "reset_tasks", "tag_free_deferred", "sw_encrypted",
        ), 0)

    # --- completions -----------------------------------------------------------------

    def _hold(self, index, tag, sock=None, seg=None):
        """Descriptor ``index`` is in flight: it holds a reference on ``tag``."""
        if tag is not None:
            tag.refs += 1
        self._posted[index] = (tag, sock, seg)

    def _complete(self, done):
        for c in done:
            if c.index in self._freeing:
                self._release(self._freeing.pop(c.index))
                continue
            record = self._dumping.pop(c.index, None)
            if record is not None:
                record.dma_refs -= 1
                if not record.dma_refs and record.free_deferred:
                    self.free_record_memory(record)
            tag, sock, seg = self._posted.pop(c.index, (None, None, None))
            if c.opcode is TxOpcode.PACKET and tag is not None and c.status is not TxStatus.OK:
                self.stats["drops_seen"] += 1
                tag.expected_seq = None
            if (sock is not None and seg is not None and c.opcode is TxOpcode.PACKET
                    and c.status is TxStatus.OK):
                sock._on_wire(seg)
            if tag is not None:
                self.snd_tag_rele(tag)
        self.completions.extend(done)

    def free_record_memory(self, record):
        """Give back the host memory of an acked record that no DUMP reads any more."""
        for addr in record.owned:
            self.dev.bus.free(addr)
        record.owned = []
        record.free_deferred = False

    async def _post_frees(self):
        """FREE every tag whose last reference went away; return whether any was posted."""
        posted = False
        while self._to_free:
            tag = self._to_free.pop(0)
            index = await self.dev.send_ctrl(TxOpcode.FREE, tag.tag)
            tag.state = "freeing"
            self._freeing[index] = tag
            posted = True
        return posted

    async def poll(self):
        """Reap the completions the card has written so far, without waiting.

        Descriptors the card has not completed keep their tag references, so
        a tag released meanwhile is not FREEd yet (edge case 12).
        """
        await self.dev.reap_tx()
        done, self.dev._tx_reaped = self.dev._tx_reaped, []
        self._complete(done)
        await self._post_frees()
        return done

    async def flush(self):
        """Reap every outstanding completion; note drops so the next segment resyncs.

        Tags released on the way are FREEd and their FREE waited for.
        """
        out = []
        while True:
            done = await self.dev.flush_tx()
            self._complete(done)
            out.extend(done)
            if not await self._post_frees():
                return out

    # --- tasks ---------------------------------------------------------------------------

    async def run_tasks(self):
        """Run queued work (``taskqueue_run``): reset-tag tasks and software encryption."""
        ran = 0
        while self.tasks or self.crypto_queue:
            while self.crypto_queue:
                sock, entry = self.crypto_queue.popleft()
                sock._encrypt_entry(entry)
                ran += 1
            if self.tasks:
                await self.tasks.popleft()()
                ran += 1
        return ran

    def output_eagain(self, sock, session):
        """``ktls_output_eagain``: queue one reset-tag task; the caller sees ENOBUFS."""
        self.stats["eagain"] += 1
        if not session.reset_pending:
            session.reset_pending = True
            self.stats["reset_tasks"] += 1
            self.tasks.append(lambda: self.reset_send_tag(sock, session))
        return errno.ENOBUFS

    async def reset_send_tag(self, sock, session):
        """``ktls_reset_send_tag``: move ``session`` to a new tag on the socket's route.

        The old tag is NULLed first, so a packet racing the reset is dropped
        (EAGAIN) rather than sent on the old port, then released (freed once
        its in-flight descriptors complete). The new context is set up with
        ``force`` (ifnet permission is not asked again) at the session's first
        unacked record, with that record's number, so the card continues the
        stream; the retransmit resyncs from there. On failure the connection
        is dropped (``tcp_drop(ECONNABORTED)``) and ``reset_pending`` stays set.
        """
        old, session.snd_tag = session.snd_tag, None
        if old is not None:
            self.snd_tag_rele(old)
        if sock.error or session.freed:
            return
        seq, number = sock.first_record_of(session)
        try:
            tag = await self.alloc_snd_tag(sock, session.params, force=True, seq=seq,
                                           record_number=number)
        except KtlsError:
            self.stats["ifnet_reset_failed"] += 1
            await sock.drop(errno.ECONNABORTED)
            self.stats["ifnet_reset_dropped"] += 1
            return
        session.snd_tag = tag
        session.reset_pending = False
        self.stats["ifnet_reset"] += 1

    # --- tags --------------------------------------------------------------------------

    def supports(self, params):
        """The card can offload this suite (``IFCAP_TXTLS`` + the capability bits)."""
        cipher = params.card_cipher
        return (cipher is not None and bool(self.cap_tls & CAP_CIPHER[cipher])
                and bool(self.cap_tls & CAP_VERSION[params.version]))

    async def alloc_snd_tag(self, sock, params, *, force=False, seq=None, record_number=None):
        """``ktls_alloc_snd_tag``: a context on ``sock``'s route, set up at ``seq``.

        ``seq`` / ``record_number`` default to the socket's ``write_seq`` and
        next record number. Raises ``KtlsError(ENXIO)`` when ifnet TLS is not
        permitted (unless ``force``), the card cannot do the suite or there is
        no route; ``ENOMEM`` when every context (of the card, or of the port)
        is taken.
        """
        port = sock.route
        if not (self.permitted or force) or not self.supports(params):
            raise KtlsError(errno.ENXIO, "no ifnet TLS for this session")
        if port is None or not 0 <= port < self.ports:
            raise KtlsError(errno.ENXIO, f"no route (port {port})")
        if not self.free_tags or (self.port_contexts is not None
                                  and self.port_in_use[port] >= self.port_contexts):
            self.stats["enomem"] += 1
            raise KtlsError(errno.ENOMEM, f"no free TLS context for port {port}")
        seq = sock.tcp.write_seq if seq is None else seq
        record_number = sock.framer_seqno() if record_number is None else record_number
        tag = SendTag(self.free_tags.pop(0), tag_log_log2=self.tag_log_log2, ifp=port)
        log_bytes = TAG_LOG_ENTRY_BYTES << self.tag_log_log2
        tag.tag_log_addr = self.dev.bus.alloc(log_bytes, align=64)
        await self.dev.bus.mem_write(tag.tag_log_addr, bytes(log_bytes))
        f = sock.tcp.flow
        addr_bytes = 4 if f.ip_version == 4 else 16
        src = ipaddress.ip_address(f.src_addr).packed[:addr_bytes]
        dst = ipaddress.ip_address(f.dst_addr).packed[:addr_bytes]
        block = pack(
            TlsStaticParams, cipher=params.card_cipher, version=params.version, port=port,
            tcp_seq=seq, record_number=record_number,
            salt_iv=_field(params.iv.ljust(12, b"\0")), key=_field(params.key.ljust(32, b"\0")),
            src_port=f.src_port, dst_port=f.dst_port, ip_version=f.ip_version,
            tag_log_log2=self.tag_log_log2, tag_log_addr=tag.tag_log_addr,
            src_addr=_field(src), dst_addr=_field(dst))
        index = await self.dev.send_ctrl(TxOpcode.SET_STATIC, tag.tag, block)
        for c in await self.flush():
            if c.index == index and c.status is not TxStatus.OK:
                self.dev.bus.free(tag.tag_log_addr)
                self.free_tags.append(tag.tag)
                raise KtlsError(errno.EINVAL, f"SET_STATIC refused: {c.status}")
        tag.expected_seq = tag.record_seq = seq
        self.tags_in_use += 1
        self.port_in_use[port] += 1
        return tag

    def snd_tag_rele(self, tag):
        """``m_snd_tag_rele``: at the last reference the context is FREEd (deferred).

        mlx5 frees tags from a work queue; here the FREE goes out at the next
        :meth:`poll` / :meth:`flush`, and only once every descriptor that
        referenced the tag has completed, so the card never writes a tag log
        entry into freed memory and the number is not reused under a live frame.
        """
        tag.refs -= 1
        assert tag.refs >= 0, "send tag over-released"
        if tag.refs == 0 and tag.state == "live":
            tag.state = "released"
            self._to_free.append(tag)

    def _release(self, tag):
        """The FREE completed: the tag log memory and the number can be reused."""
        self.dev.bus.free(tag.tag_log_addr)
        self.free_tags.append(tag.tag)
        tag.state = "freed"
        self.tags_in_use -= 1
        self.port_in_use[tag.ifp] -= 1

    async def free_snd_tag(self, tag):
        """Drop the caller's reference and wait until the context is FREEd."""
        self.snd_tag_rele(tag)
        await self.flush()

    async def read_tag_log(self, tag, record_number):
        """The tag the card logged for ``record_number``, or None."""
        await self.flush()         # entries are final once their frames completed
        addr = tag.tag_log_addr + TAG_LOG_ENTRY_BYTES * (record_number % (1 << tag.tag_log_log2))
        entry = unpack(TlsTagLogEntry, await self.dev.bus.mem_read(addr, TAG_LOG_ENTRY_BYTES))
        if entry.valid and entry.record_number == record_number:
            return entry.tag.to_bytes(TAG_LEN, "little")
        return None

    # --- resync --------------------------------------------------------------------------

    async def _set_progress(self, tag, record_seq, record, next_seq, seek=False, known_tag=None):
        flags = 0
        fields = {}
        if seek:
            flags |= TlsProgressFlags.SEEK.value
            data = record.data
            fields = dict(content_type=data[0], record_length=record.length_field,
                          explicit_nonce=_field(data[HEADER_LEN:HEADER_LEN + 8].ljust(8, b"\0")))
            if known_tag is not None:
                flags |= TlsProgressFlags.TAG_VALID.value
                fields["tag"] = _field(known_tag)
        block = pack(TlsProgressParams, next_seq=next_seq, record_seq=record_seq,
                     record_number=record.seqno, flags=flags, **fields)
        self._hold(await self.dev.send_ctrl(TxOpcode.SET_PROGRESS, tag.tag, block), tag)
        tag.expected_seq = next_seq
        tag.record_seq = record_seq
        tag.seek_untagged = seek and known_tag is None

    async def _dump(self, tag, sock, start, end):
        """DUMP ``[start, end)`` of the send buffer in ``hw_mtu`` chunks.

        Each DUMP points at the record's own host memory (mlx5 DUMP WQEs
        point at the mbuf's pages): that memory must still hold the framed
        plaintext, which is why nothing encrypts it in place before the ACK.
        """
        seq = start
        while seq_sub(end, seq) > 0:
            n = min(self.hw_mtu, seq_sub(end, seq))
            entry = sock.tcp.entry_at(seq)
            span = _host_span(entry.record, seq_sub(seq, entry.seq))
            if span is None:
                index = await self.dev.send_ctrl(TxOpcode.DUMP, tag.tag, sock.tcp.bytes_at(seq, n))
            else:
                addr, avail = span
                n = min(n, avail)
                index = await self.dev.post_tx_raw(opcode=TxOpcode.DUMP, tag=tag.tag, length=n,
                                                   addr=addr)
                # The card reads the record's memory whenever it gets to the
                # DUMP: an ACK meanwhile (a spurious retransmit) must not free
                # it under the card (mlx5 holds the mbuf until the completion).
                entry.record.dma_refs += 1
                self._dumping[index] = entry.record
            self._hold(index, tag)
            self.stats["dump_descriptors"] += 1
            self.stats["redma_bytes"] += n
            seq = seq_add(seq, n)
        tag.expected_seq = end

    async def _recover_dump(self, tag, sock, seq, rec_seq, record):
        offset = seq_sub(seq, rec_seq)
        if offset == 0:
            await self._set_progress(tag, rec_seq, record, rec_seq)
            self.stats["resync_params"] += 1
            return
        if (tag.expected_seq is not None and tag.record_seq == rec_seq and not tag.seek_untagged
                and 0 <= seq_sub(tag.expected_seq, rec_seq) < offset):
            # Forward gap inside the record the card tracks: only the missing bytes.
            await self._dump(tag, sock, tag.expected_seq, seq)
            return
        await self._set_progress(tag, rec_seq, record, rec_seq)
        self.stats["resync_params"] += 1
        await self._dump(tag, sock, rec_seq, seq)

    async def _recover_seek(self, tag, sock, seg, rec_seq, record):
        offset = seq_sub(seg.seq, rec_seq)
        if offset == 0:
            await self._set_progress(tag, rec_seq, record, rec_seq)
            self.stats["resync_params"] += 1
            return
        known = await self.read_tag_log(tag, record.seqno)
        record_end = seq_sub(seq_add(rec_seq, len(record.data)), sock.tcp_iss)
        sent_whole = record_end <= sock.sent_end
        if known is None and (self._carries_tag(seg, rec_seq, record) or not sent_whole):
            # The card must compute this record's tag from the bytes: now, or,
            # for a record not yet sent whole (the transmit frontier: new data,
            # or a retransmit into the record still being sent), in a later
            # segment. SEEK would lose the GHASH of the prefix and cost a
            # longer dump at the tag segment, so the prefix is dumped now,
            # while it is shortest. Only a record already sent whole, whose
            # tag the log lacks (a new context after a reset, an entry
            # overwritten), is entered by SEEK without a tag.
            self.stats["seek_fallback_dump"] += 1
            await self._recover_dump(tag, sock, seg.seq, rec_seq, record)
            return
        await self._set_progress(tag, rec_seq, record, seg.seq, seek=True, known_tag=known)
        self.stats["resync_seek"] += 1
        self.stats["resync_seek_tag"] += known is not None

    @staticmethod
    def _carries_tag(seg, rec_seq, record):
        """The segment holds at least one tag byte of ``record``."""
        start = seq_sub(seg.seq, rec_seq)
        return start + len(seg.payload) > record.tag_offset and start < len(record.data)

    # --- transmit ----------------------------------------------------------------------

    async def xmit_ifnet(self, sock, seg, frame):
        """Post one segment of offloaded records (``mlx5e_sq_tls_xmit``)."""
        tag = seg.session.snd_tag
        rec_seq, record = sock.tcp.get_record(seg.seq)
        # The card tracks rec_seq's record only if it is there now.
        if tag.expected_seq is not None and tag.record_seq is not None:
            tracked = sock.tcp.get_record(tag.expected_seq)[0] if self._in_buffer(
                sock, tag.expected_seq) else None
            tag.record_seq = tracked
        needs = tag.expected_seq != seg.seq
        if not needs and tag.seek_untagged and tag.record_seq == rec_seq:
            needs = self._carries_tag(seg, rec_seq, record)
        if needs:
            self.stats["tx_tls_ooo"] += 1
            if self.strategy == "seek":
                await self._recover_seek(tag, sock, seg, rec_seq, record)
            else:
                await self._recover_dump(tag, sock, seg.seq, rec_seq, record)
        index = await self.dev.send(frame, port=tag.ifp, tag=tag.tag, csum_ip=True, csum_l4=True)
        self._hold(index, tag, sock, seg)
        end = seq_add(seg.seq, len(seg.payload))
        if tag.seek_untagged and seq_sub(end, rec_seq) >= len(record.data):
            tag.seek_untagged = False
        tag.expected_seq = end
        return index

    @staticmethod
    def _in_buffer(sock, seq):
        try:
            sock.tcp.get_record(seq)
            return True
        except KeyError:
            return False


class KtlsSocket:
    """One TCP connection with kTLS transmit (the socket, its ``so_snd`` and ``tcpcb``).

    Parameters
    ----------
    ktls : KtlsDriver
    flow : TcpFlow
    iss, mss, rcv_nxt : int
        See :class:`~tlsnic.driver.tcp.TcpSender`.
    route : int
        The egress port (``inp_route.ro_nh->nh_ifp``); tests change it to
        model a route change.

    Attributes
    ----------
    error : int
        ``so_error`` once the connection was dropped (0 while alive).
    """

    def __init__(self, ktls, flow, *, iss=0, mss=1448, rcv_nxt=1, route=0):
        self.ktls = ktls
        self.tcp = TcpSender(flow, iss=iss, mss=mss, rcv_nxt=rcv_nxt)
        self.route = route
        self.tcp_iss = iss & SEQ_MASK
        self.session = None          # sb_tls_info: the session new records use
        self.sessions = []           # live sessions (old ones until their records are ACKed)
        self.t_nic_ktls_xmit = False
        self.t_nic_ktls_xmit_dis = False
        self.error = 0
        self.shut_wr = False
        self.fin_seq = None
        self._sb_released = False    # sb_tls_info's session reference was dropped (FIN, close)
        self._unmapped = []          # ifnet records whose bytes are not in host memory yet
        self._out = []               # [start, end) offsets from iss that went out at least once
        #: Offset from iss of the end of the furthest segment handed to the
        #: card (or sent in software): records ending there were sent whole.
        self.sent_end = 0
        self._records = []           # (start offset, end offset, plaintext length) per record

    @property
    def framer(self):
        return self.session.framer if self.session else None

    def framer_seqno(self):
        return self.framer.next_seqno if self.framer else 0

    # --- ktls_enable_tx --------------------------------------------------------------

    @staticmethod
    def validate(version, cipher, key, iv):
        """``ktls_create_session`` checks; return ``TlsSessionParams`` or raise EINVAL."""
        if isinstance(version, str):
            version = VERSION_MINOR.get(version, version)
        minor = version.value if isinstance(version, TlsVersion) else version
        if isinstance(cipher, str) and "CBC" in cipher.upper():
            # FreeBSD's software kTLS does AES-CBC (TLS 1.0 with its empty
            # fragments, 1.1, 1.2); this driver and card are AEAD only. Say so,
            # instead of "unknown", so the caller keeps the session in user space.
            raise KtlsError(errno.EINVAL, f"{cipher}: CBC suites (TLS 1.0 empty fragments, "
                            f"MAC-then-encrypt) are not supported; kTLS here offers "
                            f"{', '.join(CIPHERS)} only")
        if cipher not in CIPHERS:
            raise KtlsError(errno.EINVAL, f"unknown cipher suite {cipher!r}")
        if minor in (1, 2):
            raise KtlsError(errno.EINVAL, f"{cipher} needs TLS 1.2 or 1.3, not TLS 1.{minor - 1}")
        if minor not in (3, 4):
            raise KtlsError(errno.EINVAL, f"unknown TLS version minor {minor!r}")
        version = TlsVersion(minor)
        if len(key) != CIPHERS[cipher]:
            raise KtlsError(errno.EINVAL, f"{cipher} key of {len(key)} bytes, needs {CIPHERS[cipher]}")
        iv_len = 4 if version is TlsVersion.TLS_1_2 and cipher in AES_GCM else 12
        if len(iv) != iv_len:
            raise KtlsError(errno.EINVAL, f"iv of {len(iv)} bytes, needs {iv_len}")
        return version, bytes(key), bytes(iv)

    async def enable_tx(self, version, cipher, key, iv, rec_seq=0, mode=MODE_IFNET):
        """``setsockopt(TCP_TXTLS_ENABLE)``: create the TX session.

        Tries ifnet (when ``mode`` asks for it), else software: an unsupported
        but valid suite, ifnet not permitted, or no free context (ENOMEM, tag
        exhaustion: edge case 12) all give a software session. Bad parameters
        raise ``EINVAL``; a second call ``EALREADY`` whatever the keys (no
        rekey: FreeBSD ``ktls.4``, keys are set once per direction; edge 19).
        """
        if self.session is not None or self.sessions:
            raise KtlsError(errno.EALREADY, "TX TLS already enabled (keys are set once)")
        version, key, iv = self.validate(version, cipher, key, iv)
        params = TlsSessionParams(version, cipher, key, iv, rec_seq)
        session = KtlsSession(params, MODE_SW, framer=RecordFramer(params, self.ktls.rng))
        self.session = session
        if mode == MODE_IFNET:
            try:
                session.snd_tag = await self.ktls.alloc_snd_tag(self, params)
                session.mode = MODE_IFNET
                self.t_nic_ktls_xmit = True
            except KtlsError as error:
                if error.errno == errno.ENOMEM:
                    self.ktls.stats["ifnet_alloc_failed"] += 1
        self.ktls.stats["offload_total"] += 1
        self.ktls.stats["ifnet_tx" if session.mode == MODE_IFNET else "sw_tx"] += 1
        self.sessions.append(session)
        return session

    # --- session and record lifetime ----------------------------------------------------

    def _session_rele(self, session):
        """``ktls_free`` at the last reference: the session lets go of its tag.

        ``t_nic_ktls_xmit`` clears here, when the ifnet session is destroyed,
        not at the mode switch (anchor 9).
        """
        session.refs -= 1
        assert session.refs >= 0, "session over-released"
        if session.refs:
            return
        session.freed = True
        if session in self.sessions:
            self.sessions.remove(session)
        if session.snd_tag is not None:
            self.ktls.snd_tag_rele(session.snd_tag)
            session.snd_tag = None
        if session.mode == MODE_IFNET:
            self.t_nic_ktls_xmit = False

    def _free_record(self, record):
        if record.dma_refs:
            record.free_deferred = True      # a DUMP in the ring still reads it
        else:
            self.ktls.free_record_memory(record)
        record.host = None
        if record in self._unmapped:
            self._unmapped.remove(record)
        self._session_rele(record.session)

    def first_record_of(self, session):
        """``(seq, record number)`` where a new context for ``session`` starts.

        The session's first unacked record: everything before it is ACKed
        and never sent again. A session with none starts at ``write_seq``.
        """
        for entry in self.tcp.entries:
            if entry.record is not None and entry.record.session is session:
                return entry.seq, entry.record.seqno
        return self.tcp.write_seq, session.framer.next_seqno

    # --- data path -----------------------------------------------------------------------

    def _check_writable(self, data, record_type):
        if self.error:
            raise KtlsError(self.error, "connection dropped")
        if self.shut_wr:
            raise KtlsError(errno.EPIPE, "send side shut down")
        session = self.session
        if (session.params.version is TlsVersion.TLS_1_3 and record_type == TLS_CT_HANDSHAKE
                and TLS_HS_KEY_UPDATE in handshake_types(data)):
            # Edge case 19, choice: reject. After a KeyUpdate the peer expects
            # the next traffic secret, which kTLS can never install (no rekey,
            # EALREADY); forcing software would not help, since the software
            # session cannot be rekeyed either. Refused before framing, so no
            # record number or nonce is spent and nothing is queued.
            raise KtlsError(errno.EINVAL, "TLS 1.3 KeyUpdate: kTLS sessions cannot rekey")

    def write(self, data, record_size=None, record_type=TLS_CT_APPLICATION_DATA):
        """``sosend``: frame ``data`` into records of the current session and queue them.

        ``data`` is copied (FreeBSD ``m_uiotombuf`` into anonymous pages), so
        the caller may reuse its buffer at once.
        """
        self._check_writable(data, record_type)
        session = self.session
        records = session.framer.frame_stream(bytes(data), record_size, record_type, session)
        for record in records:
            self._queue_record(record)
            if session.mode == MODE_IFNET:
                self._unmapped.append(record)     # copied to host memory at the next output
        return records

    async def sendfile(self, addr, length, record_size=None):
        """``sendfile``: records over the caller's host pages ``[addr, addr + length)``.

        Zero copy: in ifnet mode each record's payload span *is* the caller's
        memory (the header/nonce and trailer sit in driver buffers, like the
        ``m_epg_hdr`` / ``m_epg_trail`` of an ``M_EXTPG`` mbuf), and the card
        and every DUMP read it there; the card never writes it back. In
        software mode the record is sealed into a separate buffer, never in
        place (FreeBSD encrypts non-anonymous pages into new ones), so the
        same pages sent twice (an application retry) are encrypted once per
        send, from plaintext each time.
        """
        data = await self.ktls.dev.bus.mem_read(addr, length)
        self._check_writable(data, TLS_CT_APPLICATION_DATA)
        session = self.session
        records = session.framer.frame_stream(data, record_size, TLS_CT_APPLICATION_DATA, session)
        offset = 0
        for record in records:
            self._queue_record(record)
            if session.mode == MODE_IFNET:
                hlen = session.params.header_len
                plen = len(record.plaintext)
                tail = record.data[hlen + plen:]
                head_addr = self.ktls.dev.bus.alloc(hlen)
                await self.ktls.dev.bus.mem_write(head_addr, record.data[:hlen])
                record.owned.append(head_addr)
                record.host = [(0, hlen, head_addr)]
                if plen:
                    record.host.append((hlen, plen, addr + offset))
                tail_addr = self.ktls.dev.bus.alloc(len(tail))
                await self.ktls.dev.bus.mem_write(tail_addr, tail)
                record.owned.append(tail_addr)
                record.host.append((hlen + plen, len(tail), tail_addr))
            offset += len(record.plaintext)
        return records

    def _queue_record(self, record):
        session = record.session
        session.refs += 1                 # the mbuf's session reference
        start = seq_sub(self.tcp.write_seq, self.tcp_iss)
        if session.mode == MODE_SW and self.ktls.async_crypto:
            entry = self.tcp.append(record.data, record, ready=False)
            self.ktls.crypto_queue.append((self, entry))
        else:
            if session.mode == MODE_SW:
                record.wire = seal_record(session.params, record)
            self.tcp.append(record.wire if record.wire is not None else record.data, record)
        self._records.append((start, start + len(record.data), len(record.plaintext)))

    def _encrypt_entry(self, entry):
        """``ktls_encrypt`` on a worker: seal into a new buffer, then ``sbready``."""
        if self.error or entry not in self.tcp.entries:
            return
        record = entry.record
        record.wire = seal_record(record.session.params, record)
        self.tcp.mark_ready(entry, record.wire)
        self.ktls.stats["sw_encrypted"] += 1

    async def _map_records(self):
        """Copy newly written ifnet records into host memory (what the card DMAs)."""
        while self._unmapped:
            record = self._unmapped.pop(0)
            addr = self.ktls.dev.bus.alloc(len(record.data))
            await self.ktls.dev.bus.mem_write(addr, record.data)
            record.owned.append(addr)
            record.host = [(0, len(record.data), addr)]

    def _on_wire(self, seg):
        """A completion said these bytes really left (OK, not dropped)."""
        start = seq_sub(seg.seq, self.tcp_iss)
        end = start + len(seg.payload)
        if end > start:
            self._out.append((start, end))

    def bytes_out(self):
        """Stream bytes from the start that have all been on the wire at least once."""
        reach = 0
        for start, end in sorted(self._out):
            if start > reach:
                break
            reach = max(reach, end)
        return reach

    def plaintext_sent(self):
        """Application bytes of records every byte of which a completion reported sent.

        What the socket may report as sent: never a record still in the
        crypto queue, in the NIC ring, or dropped by the card or by EAGAIN.
        """
        reach = self.bytes_out()
        return sum(plain for start, end, plain in self._records if end <= reach)

    async def send_segments(self, segs, *, flush=True):
        """Send these segments (from :class:`TcpSender`; tests pick some to model local loss).

        ``ip_output_send``: a segment of an ifnet session goes out only with
        that session's tag (the mbuf's session, not the socket's) and only
        if the tag belongs to the route's port; otherwise EAGAIN, one
        reset-tag task, and ``tcp_output`` sees ENOBUFS: the segment and the
        rest are not sent (``snd_nxt`` goes back), cwnd drops to one MSS, and
        the retransmit timer takes over.
        """
        if self.error:
            raise KtlsError(self.error, "connection dropped")
        await self._map_records()
        for i, seg in enumerate(segs):
            frame = self.tcp.build_frame(seg.seq, seg.payload)
            session = seg.session
            if session is not None and session.mode == MODE_IFNET:
                tag = session.snd_tag
                if tag is None or tag.ifp != self.route:
                    self.ktls.output_eagain(self, session)
                    self.ktls.stats["enobufs"] += 1
                    self.tcp.rollback(segs[i:])
                    self.tcp.snd_cwnd = self.tcp.mss
                    del segs[i:]
                    break
                await self.ktls.xmit_ifnet(self, seg, frame)
            else:
                index = await self.ktls.dev.send(frame, port=self.route, csum_ip=True,
                                                 csum_l4=True)
                self.ktls._hold(index, None, self, seg)
            self.sent_end = max(self.sent_end,
                                seq_sub(seq_add(seg.seq, len(seg.payload)), self.tcp_iss))
            self.account_for_send(len(seg.payload), seg.is_rxt)
        if flush:
            await self.ktls.flush()
            await self._maybe_fin()
        return segs

    def account_for_send(self, length, is_rxt):
        """``tcp_account_for_send``: the retransmit share check (D30908).

        Only while the socket transmits through the NIC and has not been
        disabled yet, only for a retransmit of data: ``pct`` in FreeBSD's
        integer arithmetic, no minimum sample (edge case 22). Over
        ``ifnet_max_rexmit_pct`` the socket is disabled for good and switched
        to software (``ktls_disable_ifnet``), once.
        """
        if not (self.t_nic_ktls_xmit and not self.t_nic_ktls_xmit_dis and is_rxt and length):
            return
        rxt, snd = self.tcp.t_snd_rxt_bytes, self.tcp.t_sndbytes
        pct = (1000 * rxt) // (10 * (rxt + snd))
        if pct > self.ktls.ifnet_max_rexmit_pct:
            self.t_nic_ktls_xmit_dis = True
            self.disable_ifnet()

    def disable_ifnet(self):
        """``ktls_disable_ifnet_help``: ``ktls_set_tx_mode(SW)`` for future records."""
        try:
            self.set_tx_mode(MODE_SW)
            self.ktls.stats["ifnet_disable_ok"] += 1
        except KtlsError:
            self.ktls.stats["ifnet_disable_failed"] += 1

    def _swap_session(self, current, clone):
        """Under the send I/O lock: install ``clone`` for future records.

        The framer (record number, TLS 1.2 nonce counter) is copied *here*,
        at the swap, not when the clone was made: a record framed with the
        old session while the clone was being set up (the tag allocation
        sleeps) would otherwise hand its nonce to the clone too (edge 9).
        """
        clone.framer = current.framer.clone()
        clone.framer.params = clone.params
        self.session = clone
        self.sessions.append(clone)
        self._session_rele(current)          # sb_tls_info no longer points at it

    def set_tx_mode(self, mode):
        """``ktls_set_tx_mode(SW)``: clone the session into software for records framed from now on.

        Records already queued keep their session (and tag) until ACKed
        (edge 10); the tag goes when the last of them is ACKed. Switching to
        ifnet allocates a tag and sleeps: use :meth:`ktls_set_tx_mode`.
        """
        current = self.session
        if current is None or current.mode == mode:
            return current
        if mode == MODE_IFNET:
            self._check_ifnet_switch()
            raise KtlsError(errno.EOPNOTSUPP, "switching to ifnet sleeps: await ktls_set_tx_mode")
        clone = KtlsSession(dataclasses.replace(current.params), MODE_SW)
        self._swap_session(current, clone)
        self.ktls.stats["switch_to_sw"] += 1
        return clone

    def _check_ifnet_switch(self):
        if self.t_nic_ktls_xmit:
            raise KtlsError(errno.EALREADY, "already transmitting through the NIC")
        if self.t_nic_ktls_xmit_dis:
            raise KtlsError(errno.ENXIO, "ifnet TLS was disabled on this connection")

    async def ktls_set_tx_mode(self, mode):
        """``ktls_set_tx_mode`` for either direction (``TCP_TXTLS_MODE``).

        To ifnet: refused while an ifnet session still lives (EALREADY: the
        card holds one context per connection) or after the retransmit
        disable (ENXIO); a tag is allocated on the route at ``write_seq``,
        and if the socket's session changed meanwhile the switch fails
        (EBUSY, ``switch_failed``).
        """
        current = self.session
        if current is None or current.mode == mode:
            return current
        if mode == MODE_SW:
            return self.set_tx_mode(mode)
        self._check_ifnet_switch()
        clone = KtlsSession(dataclasses.replace(current.params), MODE_IFNET)
        try:
            clone.snd_tag = await self.ktls.alloc_snd_tag(self, clone.params)
        except KtlsError:
            self.ktls.stats["switch_failed"] += 1
            raise
        if self.session is not current:
            self.ktls.stats["switch_failed"] += 1
            await self.ktls.free_snd_tag(clone.snd_tag)
            raise KtlsError(errno.EBUSY, "session changed during the switch")
        # The static params named the write_seq of the allocation; records
        # framed meanwhile moved it, so the first segment resyncs.
        if clone.snd_tag.expected_seq != self.tcp.write_seq:
            clone.snd_tag.expected_seq = None
        self._swap_session(current, clone)
        self.t_nic_ktls_xmit = True
        self.ktls.stats["switch_to_ifnet"] += 1
        return clone

    async def output(self):
        """``tcp_output``: send new data (up to the window and the first M_NOTREADY byte)."""
        if self.error:
            raise KtlsError(self.error, "connection dropped")
        return await self.send_segments(self.tcp.new_segments())

    async def retransmit(self, seq=None, length=None):
        """Retransmit ``[seq, seq + length)`` (default: one MSS at ``snd_una``)."""
        return await self.send_segments(self.tcp.rexmit_segments(seq, length))

    async def rexmt_timer(self):
        """``tcp_timer_rexmt``: back to ``snd_una`` with one MSS of window, then output."""
        if self.error:
            return []
        self.tcp.timeout()
        return await self.output()

    async def send_ack(self):
        """A pure ACK on the offloaded path (edge case 13: goes out with the tag, unchanged)."""
        frame = self.tcp.build_frame(self.tcp.snd_nxt)
        tag = self.session.snd_tag if self.session and self.session.snd_tag else None
        if tag is not None and tag.ifp != self.route:
            tag = None                    # an ACK needs no crypto: never EAGAIN for it
        index = await self.ktls.dev.send(frame, port=self.route, tag=tag.tag if tag else 0,
                                         csum_ip=True, csum_l4=True)
        self.ktls._hold(index, tag)
        await self.ktls.flush()

    def ack(self, seq):
        """Cumulative ACK: released records drop their session references.

        A tag whose last reference goes is FREEd at the next
        :meth:`KtlsDriver.poll` / :meth:`KtlsDriver.flush`.
        """
        for entry in self.tcp.ack(seq):
            if entry.record is not None:
                self._free_record(entry.record)

    async def _maybe_fin(self):
        """After :meth:`shutdown`: FIN once every byte has really been on the wire."""
        if (not self.shut_wr or self.fin_seq is not None or self.error
                or self.tcp.snd_nxt != self.tcp.write_seq
                or self.bytes_out() < seq_sub(self.tcp.write_seq, self.tcp_iss)):
            return False
        self.fin_seq = self.tcp.fin_segment()
        frame = self.tcp.build_frame(self.fin_seq, flags="FA")
        index = await self.ktls.dev.send(frame, port=self.route, csum_ip=True, csum_l4=True)
        self.ktls._hold(index, None)
        # Nothing can be framed after the FIN: sb_tls_info lets go, and the
        # session (with its tag) lives exactly as long as its unacked records.
        self._release_sb_tls_info()
        await self.ktls.flush()
        return True

    def _release_sb_tls_info(self):
        if self.session is not None and not self._sb_released:
            self._sb_released = True
            self._session_rele(self.session)

    async def shutdown(self):
        """``soshutdown(SHUT_WR)``: send what is queued, then FIN.

        Records still in the software crypto queue are encrypted and sent,
        records in the NIC ring are waited for (their completions), and the
        FIN goes out only after every byte has been on the wire; if some
        could not go (EAGAIN on a route change), the FIN waits for the
        retransmit timer to get them out. Returns whether the FIN was sent.
        """
        self.shut_wr = True
        await self.ktls.run_tasks()
        if not self.error:
            await self.output()           # sends the FIN too once all is out
            await self._maybe_fin()
        return self.fin_seq is not None

    async def drop(self, error):
        """``tcp_drop``: the connection is gone with ``error``; everything queued is freed."""
        self.error = error
        await self._teardown()

    async def _teardown(self):
        await self.ktls.flush()           # in-flight descriptors hold their tags until done
        for entry in self.tcp.entries:
            if entry.record is not None:
                self._free_record(entry.record)
        self.tcp.entries.clear()
        self._unmapped.clear()
        self._release_sb_tls_info()
        self.ktls.crypto_queue = collections.deque(
            (s, e) for s, e in self.ktls.crypto_queue if s is not self)
        await self.ktls.flush()           # FREE the tags whose last reference went

    async def close(self):
        """``tcp_close`` / ``sofree``: free every session and card context now.

        Unacked records are discarded (the connection is over); each tag is
        FREEd after the descriptors referencing it complete.
        """
        await self._teardown()
        self.t_nic_ktls_xmit = False
