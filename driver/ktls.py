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
    read from the context's tag log when known. A segment that carries tag
    bytes of a record whose tag is unknown falls back to the dump recovery.
"""

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
                         RecordFramer, TlsSessionParams)

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


def _field(data):
    """Bytes as a parameter-block field value (bytes in order: byte 0 first)."""
    return int.from_bytes(bytes(data), "little")


@dataclasses.dataclass
class SendTag:
    """A card context and what the driver knows of it.

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
    """
    tag: int
    expected_seq: int = None
    record_seq: int = None
    seek_untagged: bool = False
    tag_log_addr: int = 0
    tag_log_log2: int = 0
    ifp: object = None


@dataclasses.dataclass
class KtlsSession:
    """``struct ktls_session`` for TX."""
    params: TlsSessionParams
    mode: str
    snd_tag: SendTag = None


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
        FreeBSD; tests turn it on).
    ifnet_max_rexmit_pct : int
        ``kern.ipc.tls.ifnet_max_rexmit_pct``.
    seed : int
        Seeds the TLS 1.2 explicit nonce counters.

    Attributes
    ----------
    stats : dict[str, int]
        FreeBSD ``kern.ipc.tls`` counters plus the driver's own re-DMA counts.
    completions : list[TxCompletionRecord]
        Every TX completion this layer reaped, in order.
    """

    def __init__(self, dev, *, strategy="dump", hw_mtu=1500, tag_log_log2=6, permitted=True,
                 ifnet_max_rexmit_pct=2, seed=0):
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
        self.cap_tls = caps.tls if caps.tls & CAP_TLS_TX else 0
        self.free_tags = list(range(1, caps.tx_contexts + 1)) if self.cap_tls else []
        self.tags_in_use = 0
        self.completions = []
        self._posted = {}          # TXQ index -> SendTag of a tagged PACKET
        self.stats = dict.fromkeys((
            "offload_total", "sw_tx", "ifnet_tx", "ifnet_alloc_failed", "enomem",
            "switch_to_sw", "switch_to_ifnet", "switch_failed",
            "ifnet_disable_ok", "ifnet_disable_failed",
            "ifnet_reset", "ifnet_reset_failed", "ifnet_reset_dropped",
            "resync_params", "resync_seek", "resync_seek_tag", "seek_fallback_dump",
            "dump_descriptors", "redma_bytes", "drops_seen",
        ), 0)

    # --- completions -----------------------------------------------------------------

    async def flush(self):
        """Reap every outstanding completion; note drops so the next segment resyncs."""
        done = await self.dev.flush_tx()
        for c in done:
            tag = self._posted.pop(c.index, None)
            if tag is not None and c.status is not TxStatus.OK:
                self.stats["drops_seen"] += 1
                tag.expected_seq = None
        self.completions.extend(done)
        return done

    # --- tags --------------------------------------------------------------------------

    def supports(self, params):
        """The card can offload this suite (``IFCAP_TXTLS`` + the capability bits)."""
        cipher = params.card_cipher
        return (cipher is not None and bool(self.cap_tls & CAP_CIPHER[cipher])
                and bool(self.cap_tls & CAP_VERSION[params.version]))

    async def alloc_snd_tag(self, sock, params):
        """``ktls_alloc_snd_tag``: a context set up at ``sock``'s ``write_seq``.

        Raises ``KtlsError(ENXIO)`` when ifnet TLS is not permitted or the
        card cannot do the suite, ``ENOMEM`` when every context is taken.
        """
        if not self.permitted or not self.supports(params):
            raise KtlsError(errno.ENXIO, "no ifnet TLS for this session")
        if not self.free_tags:
            self.stats["enomem"] += 1
            raise KtlsError(errno.ENOMEM, "no free TLS context on the card")
        tag = SendTag(self.free_tags.pop(0), tag_log_log2=self.tag_log_log2)
        log_bytes = TAG_LOG_ENTRY_BYTES << self.tag_log_log2
        tag.tag_log_addr = self.dev.bus.alloc(log_bytes, align=64)
        await self.dev.bus.mem_write(tag.tag_log_addr, bytes(log_bytes))
        f = sock.tcp.flow
        addr_bytes = 4 if f.ip_version == 4 else 16
        src = ipaddress.ip_address(f.src_addr).packed[:addr_bytes]
        dst = ipaddress.ip_address(f.dst_addr).packed[:addr_bytes]
        block = pack(
            TlsStaticParams, cipher=params.card_cipher, version=params.version,
            tcp_seq=sock.tcp.write_seq, record_number=sock.framer_seqno(),
            salt_iv=_field(params.iv.ljust(12, b"\0")), key=_field(params.key.ljust(32, b"\0")),
            src_port=f.src_port, dst_port=f.dst_port, ip_version=f.ip_version,
            tag_log_log2=self.tag_log_log2, tag_log_addr=tag.tag_log_addr,
            src_addr=_field(src), dst_addr=_field(dst))
        await self.dev.send_ctrl(TxOpcode.SET_STATIC, tag.tag, block)
        for c in await self.flush():
            if c.opcode is TxOpcode.SET_STATIC and c.status is not TxStatus.OK:
                self._release(tag)
                raise KtlsError(errno.EINVAL, f"SET_STATIC refused: {c.status}")
        tag.expected_seq = tag.record_seq = sock.tcp.write_seq
        self.tags_in_use += 1
        return tag

    def _release(self, tag):
        self.dev.bus.free(tag.tag_log_addr)
        self.free_tags.append(tag.tag)

    async def free_snd_tag(self, tag):
        """FREE the context (the key is zeroed on the card) and recycle the tag."""
        await self.dev.send_ctrl(TxOpcode.FREE, tag.tag)
        await self.flush()
        self._release(tag)
        self.tags_in_use -= 1

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
        await self.dev.send_ctrl(TxOpcode.SET_PROGRESS, tag.tag, block)
        tag.expected_seq = next_seq
        tag.record_seq = record_seq
        tag.seek_untagged = seek and known_tag is None

    async def _dump(self, tag, sock, start, end):
        """DUMP ``[start, end)`` of the send buffer in ``hw_mtu`` chunks."""
        seq = start
        while seq_sub(end, seq) > 0:
            n = min(self.hw_mtu, seq_sub(end, seq))
            await self.dev.send_ctrl(TxOpcode.DUMP, tag.tag, sock.tcp.bytes_at(seq, n))
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
        if known is None and self._carries_tag(seg, rec_seq, record):
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
            if self.strategy == "seek":
                await self._recover_seek(tag, sock, seg, rec_seq, record)
            else:
                await self._recover_dump(tag, sock, seg.seq, rec_seq, record)
        index = await self.dev.send(frame, tag=tag.tag, csum_ip=True, csum_l4=True)
        self._posted[index] = tag
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
    """

    def __init__(self, ktls, flow, *, iss=0, mss=1448, rcv_nxt=1):
        self.ktls = ktls
        self.tcp = TcpSender(flow, iss=iss, mss=mss, rcv_nxt=rcv_nxt)
        self.session = None          # sb_tls_info: the session new records use
        self.sessions = []           # every session this socket had (old tags until acked)
        self.framer = None
        self.t_nic_ktls_xmit = False
        self.t_nic_ktls_xmit_dis = False

    def framer_seqno(self):
        return self.framer.next_seqno if self.framer else 0

    # --- ktls_enable_tx --------------------------------------------------------------

    @staticmethod
    def validate(version, cipher, key, iv):
        """``ktls_create_session`` checks; return ``TlsSessionParams`` or raise EINVAL."""
        if isinstance(version, str):
            version = VERSION_MINOR.get(version, version)
        minor = version.value if isinstance(version, TlsVersion) else version
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
        raise ``EINVAL``, a second call ``EALREADY`` (no rekey).
        """
        if self.session is not None:
            raise KtlsError(errno.EALREADY, "TX TLS already enabled (keys are set once)")
        version, key, iv = self.validate(version, cipher, key, iv)
        params = TlsSessionParams(version, cipher, key, iv, rec_seq)
        self.framer = RecordFramer(params, self.ktls.rng)
        session = KtlsSession(params, MODE_SW)
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
        self.session = session
        self.sessions.append(session)
        return session

    # --- data path -----------------------------------------------------------------------

    def write(self, data, record_size=None, record_type=TLS_CT_APPLICATION_DATA):
        """``sosend``: frame ``data`` into records of the current session and queue them."""
        session = self.session
        records = self.framer.frame_stream(data, record_size, record_type, session)
        for record in records:
            if session.mode == MODE_SW:
                record.wire = seal_record(session.params, record)
            self.tcp.append(record.wire if record.wire is not None else record.data, record)
        return records

    async def send_segments(self, segs):
        """Send these segments (from :class:`TcpSender`; tests pick some to model local loss)."""
        for seg in segs:
            frame = self.tcp.build_frame(seg.seq, seg.payload)
            if seg.session is not None and seg.session.mode == MODE_IFNET:
                await self.ktls.xmit_ifnet(self, seg, frame)
            else:
                await self.ktls.dev.send(frame, csum_ip=True, csum_l4=True)
            self.account_for_send(len(seg.payload), seg.is_rxt)
        await self.ktls.flush()
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

    def set_tx_mode(self, mode):
        """``ktls_set_tx_mode``: clone the session into ``mode`` for records framed from now on.

        Records already queued keep their session (and tag) until ACKed; the
        framer (record numbers, TLS 1.2 nonce counter) carries on, so nonces
        stay unique across the switch (edge case 9).
        """
        current = self.session
        if current is None or current.mode == mode:
            return current
        if mode == MODE_IFNET:
            if self.t_nic_ktls_xmit:
                raise KtlsError(errno.EALREADY, "already transmitting through the NIC")
            if self.t_nic_ktls_xmit_dis:
                raise KtlsError(errno.ENXIO, "ifnet TLS was disabled on this connection")
            self.ktls.stats["switch_failed"] += 1
            raise KtlsError(errno.EOPNOTSUPP, "switching to ifnet is not modelled")
        clone = KtlsSession(dataclasses.replace(current.params), MODE_SW)
        self.session = clone
        self.sessions.append(clone)
        self.ktls.stats["switch_to_sw"] += 1
        return clone

    async def output(self):
        """``tcp_output``: send all new data in MSS-sized segments."""
        return await self.send_segments(self.tcp.new_segments())

    async def retransmit(self, seq=None, length=None):
        """Retransmit ``[seq, seq + length)`` (default: one MSS at ``snd_una``)."""
        return await self.send_segments(self.tcp.rexmit_segments(seq, length))

    async def send_ack(self):
        """A pure ACK on the offloaded path (edge case 13: goes out with the tag, unchanged)."""
        frame = self.tcp.build_frame(self.tcp.snd_nxt)
        tag = self.session.snd_tag if self.session and self.session.snd_tag else None
        await self.ktls.dev.send(frame, tag=tag.tag if tag else 0, csum_ip=True, csum_l4=True)
        await self.ktls.flush()

    def ack(self, seq):
        self.tcp.ack(seq)

    async def close(self):
        """``ktls_destroy``: free the card contexts of every session."""
        for session in self.sessions:
            if session.snd_tag is not None:
                await self.ktls.free_snd_tag(session.snd_tag)
                session.snd_tag = None
        self.t_nic_ktls_xmit = False
