"""Kernel TLS receive: receive tags, steering, the record layer over inline decryption, resync.

Modelled on FreeBSD ``sys/kern/uipc_ktls.c`` (``ktls_enable_rx``,
``ktls_decrypt``, ``ktls_resync_ifnet``, ``ktls_reset_receive_tag``,
``ktls_get_rx_sequence``), its mlx5 driver (``mlx5_en_hw_tls_rx.c``: the
receive tag, its steering rule, the compressed table of record starts that
answers the card's resync requests) and Linux ``tls_device`` receive
(``tls_device_decrypted``: records decrypted by the device, encrypted, or
mixed and re-encrypted before the software decrypt). The card's contract is
the "TLS receive" section of :mod:`tlsnic.abi`.

Objects:

* :class:`KtlsRxDriver`: the card's kTLS receive support (receive-tag
  allocator, the RX completion demultiplexer, counters).
* :class:`KtlsRxSocket`: one TCP connection's receive direction with kTLS
  RX (``so_rcv`` with ``sb_tls_info``, the reassembly queue, ``rcv_nxt``).
* :class:`RecvTag`: a receive context on the card and its steering rule.

Data path. Every RX completion is handed to the socket of its flow. The
frame's payload goes through :class:`~.tcp.TcpReceiver` with one flag per
byte (decrypted in place by the card, or not; part of a frame whose
completion said ``auth_fail``), first copy of a byte winning, so the flags
of the bytes a record is made of are the flags of the copies kept (FreeBSD
``M_DECRYPTED`` per mbuf). The record layer then walks the in-order stream
(``ktls_decrypt``): header checks, then per record

* every byte decrypted by the card and its tag checked there: delivered as
  is (TLS 1.3: padding and inner type taken off);
* no byte decrypted: decrypted in software (``cryptography``);
* some bytes decrypted, or all with the card's tag check failed: the
  decrypted bytes are encrypted back with AES-CTR at their counter
  (``ktls_ocf_recrypt`` / ``tls_device_reencrypt``), then the record is
  decrypted and authenticated in software. A record that fails there is
  dropped and reported EBADMSG; nothing of it is delivered.

Resync. A completion with ``resync`` names the TCP seq of a plausible header
the card found after it lost the record boundaries. The socket answers
``RX_RESYNC`` CONFIRM with the record's number once its record layer knows a
record starts there (from the resync table, mlx5's compressed history of
record starts, or because it is the next record boundary), REJECT once it
knows none does (inside a record, or older than the table). The first record
the card decrypts whole after records it did not is reported "back in sync"
(FreeBSD ``ktls_resync_ifnet`` with length 0), which empties the table.
"""

import dataclasses
import errno
import ipaddress

from cryptography.exceptions import InvalidTag

from tlsnic.abi import (
    CAP_TLS_RX, RxStatus, RxTlsStatus, CsumStatus, TlsRxResyncFlags, TlsRxResyncParams,
    TlsStaticParams, TlsVersion, TxOpcode, TxStatus, pack, record_length_bounds,
)

from .fallback import recrypt, split_inner, unseal_record
from .ktls import CAP_CIPHER, CAP_VERSION, KtlsError, MODE_IFNET, MODE_SW, VERSION_MINOR
from .resync import ResyncTable
from .tcp import RX_AUTH_FAIL, RX_DECRYPTED, SEQ_MASK, TcpReceiver, parse_segment, seq_sub
from .tls_record import (CIPHERS, HEADER_LEN, TAG_LEN, TLS_CT_HANDSHAKE, TLS_HS_KEY_UPDATE,
                         TLS_MAX_PLAINTEXT, TlsSessionParams, handshake_types)

__all__ = ["KtlsRxDriver", "KtlsRxSocket", "RecvTag", "RxRecord", "RxError", "validate_rx",
           "PATH_NIC", "PATH_SW", "PATH_RECRYPT"]

#: How a record was finished: by the card, in software from ciphertext, or in
#: software after re-encrypting what the card had decrypted.
PATH_NIC, PATH_SW, PATH_RECRYPT = "nic", "sw", "recrypt"
#: ``bytes.translate`` table keeping bit 0 (:data:`~.tcp.RX_DECRYPTED`).
_DECRYPTED_BIT = bytes(b & RX_DECRYPTED for b in range(256))


@dataclasses.dataclass(frozen=True)
class RxRecord:
    """One record handed to the reader (a ``TLS_GET_RECORD`` control message + data)."""
    number: int
    type: int
    data: bytes
    path: str          # PATH_NIC, PATH_SW or PATH_RECRYPT


@dataclasses.dataclass(frozen=True)
class RxError:
    """An error the reader sees in stream order (``so_error`` at that point).

    ``number`` is the record it concerns, or None for the connection as a whole.
    """
    errno: int
    number: int = None
    reason: str = ""


@dataclasses.dataclass(eq=False)
class RecvTag:
    """A receive context on the card and its steering rule (mlx5 ``mlx5e_tls_rx_tag``).

    Attributes
    ----------
    tag : int
        The context number (``RX_SET_STATIC``/``RX_RESYNC``/``RX_FREE`` tag,
        and the completion's ``tag``).
    port : int
        The ingress port the steering rule matches (FreeBSD ``tls->rx_ifp``).
    start : int
        Stream offset (from the socket's ``irs``) of the record header the
        context was created at: the card tracks nothing before it.
    """
    tag: int
    port: int
    start: int


def _field(data):
    """Bytes as a parameter-block field value (byte 0 first)."""
    return int.from_bytes(bytes(data), "little")


def validate_rx(version, cipher, key, iv):
    """``ktls_enable_rx``'s session checks; return ``(TlsVersion, key, iv)``.

    EINVAL for parameters that make no suite: an unknown version or cipher,
    an AEAD suite with TLS 1.0/1.1, CBC with TLS 1.3, a key or IV of the
    wrong length. EPROTONOSUPPORT for a real suite neither the card nor the
    software path receives: the CBC (MAC-then-encrypt) suites of TLS
    1.0-1.2, which FreeBSD's software kTLS does receive and this driver
    does not (the caller keeps the session in user space).
    """
    if isinstance(version, str):
        version = VERSION_MINOR.get(version, version)
    minor = version.value if isinstance(version, TlsVersion) else version
    if minor not in (1, 2, 3, 4):
        raise KtlsError(errno.EINVAL, f"unknown TLS version minor {minor!r}")
    if isinstance(cipher, str) and "CBC" in cipher.upper():
        if minor == 4:
            raise KtlsError(errno.EINVAL, f"{cipher}: TLS 1.3 has no CBC suites")
        raise KtlsError(errno.EPROTONOSUPPORT,
                        f"{cipher} with TLS 1.{minor - 1}: CBC records are not received by "
                        f"kTLS here (card or software); only {', '.join(CIPHERS)}")
    if cipher not in CIPHERS:
        raise KtlsError(errno.EINVAL, f"unknown cipher suite {cipher!r}")
    if minor in (1, 2):
        raise KtlsError(errno.EINVAL, f"{cipher} needs TLS 1.2 or 1.3, not TLS 1.{minor - 1}")
    version = TlsVersion(minor)
    if len(key) != CIPHERS[cipher]:
        raise KtlsError(errno.EINVAL, f"{cipher} key of {len(key)} bytes, needs {CIPHERS[cipher]}")
    iv_len = 4 if version is TlsVersion.TLS_1_2 and cipher != "CHACHA20-POLY1305" else 12
    if len(iv) != iv_len:
        raise KtlsError(errno.EINVAL, f"iv of {len(iv)} bytes, needs {iv_len}")
    return version, bytes(key), bytes(iv)


class KtlsRxDriver:
    """kTLS receive support of one :class:`~tlsnic.driver.device.Device`.

    Parameters
    ----------
    dev : Device
        Opened.
    tx : KtlsDriver, optional
        The transmit side on the same device. RX control descriptors go on
        the TX queue, so with a transmit side their completions are reaped
        through it (it must see every completion to keep its bookkeeping).
    permitted : bool
        ``kern.ipc.tls.ifnet.permitted`` for receive; without it every
        session is a software one.

    Attributes
    ----------
    sockets : dict
        ``(peer addr, local addr, peer port, local port) -> KtlsRxSocket``.
    unclaimed : list[RxFrame]
        Good frames no socket took (no such flow): the stack's, untouched.
    stats : dict[str, int]
        Counters after Linux ``tls-offload.rst`` (``rx_tls_decrypted_*``,
        ``rx_tls_resync_*``) and FreeBSD ``kern.ipc.tls.stats``
        (``corrupted_records``, ``failed_crypto``, ``ifnet_reset*``), plus
        how each record was finished (``records_nic``, ``records_sw``,
        ``records_recrypt``).
    """

    def __init__(self, dev, *, tx=None, permitted=True):
        self.dev = dev
        self.tx = tx
        self.permitted = permitted
        caps = dev.caps
        self.cap_tls = caps.tls if caps.tls & CAP_TLS_RX else 0
        self.free_tags = list(range(1, caps.rx_contexts + 1)) if self.cap_tls else []
        self.tags_in_use = 0
        self.sockets = {}
        self.by_tag = {}
        self.unclaimed = []
        self.stats = dict.fromkeys((
            "rx_tls_decrypted_packets", "rx_tls_decrypted_bytes",
            "rx_tls_resync_req", "rx_tls_resync_ok", "rx_tls_resync_fail",
            "rx_tls_resync_stale", "rx_tls_resync_superseded", "rx_tls_back_in_sync",
            "rx_tls_auth_fail", "corrupted_records", "failed_crypto",
            "records_nic", "records_sw", "records_recrypt",
            "ifnet_rx", "sw_rx", "rx_enomem", "rx_alloc_failed",
            "ifnet_reset", "ifnet_reset_failed", "tag_reclaimed",
            "csum_dropped", "status_dropped", "foreign_tag",
        ), 0)

    @property
    def records_software(self):
        """Records finished in software (from ciphertext, or recrypted first)."""
        return self.stats["records_sw"] + self.stats["records_recrypt"]

    # --- control descriptors -------------------------------------------------------------

    async def _control(self, opcode, tag, block=b""):
        """Post one RX control descriptor and wait for its completion; return its status.

        The parameter block sits in a buffer of the driver's own, zeroed
        once the card has read it: an RX_SET_STATIC block holds the key,
        which must not stay behind in freed host memory.
        """
        bus = self.dev.bus
        addr = 0
        if block:
            addr = bus.alloc(len(block))
            await bus.mem_write(addr, block)
        index = await self.dev.post_tx_raw(opcode=opcode, tag=tag, length=len(block), addr=addr)
        done = await (self.tx.flush() if self.tx is not None else self.dev.flush_tx())
        if block:
            await bus.mem_write(addr, bytes(len(block)))
            bus.free(addr)
        return next(c.status for c in done if c.index == index)

    def supports(self, params):
        """The card receives this suite inline (``IFCAP2_RXTLS`` + capability bits)."""
        cipher = params.card_cipher
        return (cipher is not None and bool(self.cap_tls & CAP_CIPHER[cipher])
                and bool(self.cap_tls & CAP_VERSION[params.version]))

    async def alloc_rcv_tag(self, sock, offset, record_number):
        """``ktls_alloc_rcv_tag``: a context for ``sock`` on its ingress port.

        The context starts at the record header at stream offset ``offset``
        (record ``record_number``): the card tracks from there. Raises
        ``KtlsError``: ENOMEM when every context is taken, EEXIST / ENOSPC /
        EINVAL when the card refuses (a live rule already steers the flow,
        the steering bucket is full, bad parameters).
        """
        if not self.free_tags:
            self.stats["rx_enomem"] += 1
            raise KtlsError(errno.ENOMEM, "no free TLS receive context")
        number = self.free_tags.pop(0)
        p, f = sock.params, sock.flow
        addr_len = 4 if f.ip_version == 4 else 16
        # The card sees the flow from the peer's side: its frames come from
        # the peer's address and port to ours.
        block = pack(
            TlsStaticParams, cipher=p.card_cipher, version=p.version, port=sock.rx_port,
            tcp_seq=sock.tcp.seq_of(offset), record_number=record_number,
            salt_iv=_field(p.iv.ljust(12, b"\0")), key=_field(p.key.ljust(32, b"\0")),
            src_port=f.dst_port, dst_port=f.src_port, ip_version=f.ip_version,
            src_addr=_field(ipaddress.ip_address(f.dst_addr).packed[:addr_len]),
            dst_addr=_field(ipaddress.ip_address(f.src_addr).packed[:addr_len]))
        status = await self._control(TxOpcode.RX_SET_STATIC, number, block)
        if status is not TxStatus.OK:
            self.free_tags.insert(0, number)
            self.stats["rx_alloc_failed"] += 1
            code = {TxStatus.STEER_EXISTS: errno.EEXIST,
                    TxStatus.STEER_FULL: errno.ENOSPC}.get(status, errno.EINVAL)
            raise KtlsError(code, f"RX_SET_STATIC refused: {getattr(status, 'name', status)}")
        tag = RecvTag(number, sock.rx_port, offset)
        self.tags_in_use += 1
        self.by_tag[number] = sock
        return tag

    async def free_rcv_tag(self, tag):
        """``RX_FREE``: the context and its steering rule go, the key is zeroed on the card."""
        status = await self._control(TxOpcode.RX_FREE, tag.tag)
        if status is not TxStatus.OK:
            raise KtlsError(errno.EIO, f"RX_FREE of tag {tag.tag}: {getattr(status, 'name', status)}")
        self.by_tag.pop(tag.tag, None)
        self.free_tags.append(tag.tag)
        self.tags_in_use -= 1

    # --- received frames -----------------------------------------------------------------

    def register(self, sock):
        key = sock.rx_flow_key
        if key in self.sockets:
            raise KtlsError(errno.EADDRINUSE, f"a socket already receives {key}")
        self.sockets[key] = sock

    def unregister(self, sock):
        if self.sockets.get(sock.rx_flow_key) is sock:
            del self.sockets[sock.rx_flow_key]

    async def receive(self, count=1):
        """Wait for ``count`` frames and process them (lock-step use: one frame sent,
        its completion taken here, every control descriptor it causes completed)."""
        frames = [await self.dev.recv() for _ in range(count)]
        await self.process(frames)
        return frames

    async def poll(self):
        """Process every frame received so far, without waiting."""
        frames = await self.dev.poll_rx()
        await self.process(frames)
        return frames

    async def process(self, frames):
        """Hand each frame to its socket, then let each socket act on what it learnt
        (resync answers, tag resets, deferred allocations, drops), as the
        taskqueue work after an interrupt would."""
        touched = []
        for frame in frames:
            sock, seg = self._demux(frame)
            if sock is not None:
                sock.input(frame, seg)
                if sock not in touched:
                    touched.append(sock)
        for sock in touched:
            await sock.run_tasks()

    def _demux(self, frame):
        if frame.status is not RxStatus.OK:
            # DMA_ERROR: nothing usable; TRUNCATED: the stack never sees a
            # cut segment as data.
            self.stats["status_dropped"] += 1
            return None, None
        seg = parse_segment(frame.data)
        sock = None
        if seg is not None:
            sock = self.sockets.get((seg.src_addr, seg.dst_addr, seg.src_port, seg.dst_port))
        if sock is None:
            self.unclaimed.append(frame)
            return None, None
        if CsumStatus.BAD in (frame.ip_csum, frame.l4_csum):
            # tcp_input drops it; the card did not decrypt it (NOT_CHECKED).
            self.stats["csum_dropped"] += 1
            return None, None
        return sock, seg


class KtlsRxSocket:
    """The receive direction of one TCP connection with kTLS receive.

    Parameters
    ----------
    rx : KtlsRxDriver
    flow : TcpFlow
        The connection as this host sees it (``src_*`` is this host, as for
        :class:`~tlsnic.driver.ktls.KtlsSocket`); frames come from ``dst_*``.
    irs : int
        Sequence number of the first byte the peer sends.
    port : int
        The ingress port (``rcvif``) frames of the flow arrive on.

    Attributes
    ----------
    params : TlsSessionParams or None
        The receive session, once enabled.
    mode : str or None
        ``"ifnet"`` while the card decrypts (a tag is live or being set up),
        ``"sw"`` otherwise.
    rx_tag : RecvTag or None
    records : list[RxRecord]
        Every record delivered, in order (the reader's view, kept whole).
    events : list[RxRecord | RxError]
        Records and errors in the order the reader meets them.
    error : int
        ``so_error`` once the connection was dropped (0 while alive).
    record_log : list[tuple]
        ``(record number, stream offset, wire length, path)`` per record the
        record layer finished: where the card helped and where it did not.
    table : ResyncTable
    """

    def __init__(self, rx, flow, *, irs=0, port=0):
        self.rx = rx
        self.flow = flow
        self.tcp = TcpReceiver(irs)
        self.rx_port = port
        self.params = None
        self.mode = None
        self.rx_tag = None
        self.table = ResyncTable()
        self.records, self.events, self.record_log = [], [], []
        self.error = 0
        self.closed = False
        self.eof = False
        self._unread = []             # events not yet returned by read()
        self._plain = bytearray()     # bytes before kTLS was enabled, not read yet
        self._buf = bytearray()       # record layer: bytes from the next header on ...
        self._flags = bytearray()     # ... and their per-byte flags
        self._pos = 0                 # stream offset of _buf[0]
        self._seqno = 0               # number of the record starting at _pos
        self._candidate = None        # TCP seq of the card's resync candidate, unanswered
        self._resync_active = False   # records not decrypted by the card since the last sync
        self._want_tag = False        # a tag is to be allocated at the next record start
        self._reset_port = None       # ktls_input_ifp_mismatch: the new ingress port
        self._resetting = False       # the next allocation is a tag reset's
        self._dropping = None         # (errno, reason): drop the connection in run_tasks
        rx.register(self)

    @property
    def rx_flow_key(self):
        """How frames of this connection look: (source, destination, ports) from the peer."""
        f = self.flow
        return (str(ipaddress.ip_address(f.dst_addr)), str(ipaddress.ip_address(f.src_addr)),
                f.dst_port, f.src_port)

    # --- ktls_enable_rx --------------------------------------------------------------

    async def enable_rx(self, version, cipher, key, iv, rec_seq=0, mode=MODE_IFNET):
        """``setsockopt(TCP_RXTLS_ENABLE)``: create the receive session.

        Data already received and not read is TLS from now on (FreeBSD marks
        it ``sb_mtls``) and is decrypted in software. With ``mode="ifnet"``
        a receive tag is set up at the first record header the card has not
        seen yet; a suite the card does not offload (ChaCha20-Poly1305, a
        capability it lacks), ifnet not permitted, no free context or a
        steering rule the card refuses all leave a software session, the
        connection unaffected. Raises EINVAL / EPROTONOSUPPORT
        (:func:`validate_rx`), EALREADY on a second call (no rekey).
        """
        if self.params is not None:
            raise KtlsError(errno.EALREADY, "RX TLS already enabled (keys are set once)")
        version, key, iv = validate_rx(version, cipher, key, iv)
        self.params = TlsSessionParams(version, cipher, key, iv, rec_seq)
        self._seqno = rec_seq
        self._pos = self.tcp.delivered - len(self._plain)
        self._buf, self._plain = self._plain, bytearray()
        self._flags = bytearray(len(self._buf))
        self.mode = MODE_SW
        if mode == MODE_IFNET and self.rx.permitted and self.rx.supports(self.params):
            self.mode = MODE_IFNET
            self._want_tag = True
        self._process_records()
        await self.run_tasks()
        self.rx.stats["ifnet_rx" if self.mode == MODE_IFNET else "sw_rx"] += 1
        return self.mode

    def read_plain(self, size):
        """Read ``size`` bytes received before kTLS was enabled (the handshake)."""
        data, self._plain = bytes(self._plain[:size]), self._plain[size:]
        return data

    def read(self):
        """Records and errors delivered since the last call, in order."""
        out, self._unread = self._unread, []
        return out

    def _deliver(self, event):
        self.events.append(event)
        self._unread.append(event)
        if isinstance(event, RxRecord):
            self.records.append(event)

    # --- frames ------------------------------------------------------------------------

    def input(self, frame, seg):
        """One frame of this connection (``seg`` its parsed TCP segment), its
        completion checked good by the driver.

        The card's verdict becomes per-byte flags: ``[dec_start, dec_end)``
        decrypted when the frame was processed TRACKING by this socket's
        context; every byte of a frame flagged ``auth_fail``. A resync
        candidate is noted (a newer one replaces an older: the card waits
        on one at a time). A frame on another port than the tag's means the
        route in changed (``ktls_input_ifp_mismatch``): the tag is reset.
        """
        stats = self.rx.stats
        if self.closed or self.error:
            return
        if frame.port != self.rx_port:
            self.rx_port = frame.port
            if self.mode == MODE_IFNET:
                self._reset_port = frame.port
        payload = frame.data[seg.payload_offset:seg.payload_offset + seg.payload_length]
        flags = None
        tag = self.rx_tag
        if frame.tag:
            # The buffer holds what the card made of the frame, whichever
            # context did it (a context the socket does not own is a
            # misconfiguration, counted; its decrypted bytes are still
            # plaintext and must be treated as such).
            if tag is None or frame.tag != tag.tag:
                stats["foreign_tag"] += 1
            flags = bytearray(len(payload))
            if frame.tls is RxTlsStatus.TRACKING and frame.dec_end > frame.dec_start:
                flags[frame.dec_start:frame.dec_end] = bytes([RX_DECRYPTED]) * (
                    frame.dec_end - frame.dec_start)
                stats["rx_tls_decrypted_packets"] += 1
                stats["rx_tls_decrypted_bytes"] += frame.dec_end - frame.dec_start
            if frame.auth_fail:
                stats["rx_tls_auth_fail"] += 1
                flags = bytearray(f | RX_AUTH_FAIL for f in flags)
        if tag is not None and frame.tag == tag.tag:
            if frame.resync_offset is not None:
                stats["rx_tls_resync_req"] += 1
                if self._candidate is not None:
                    stats["rx_tls_resync_superseded"] += 1
                self._candidate = (seg.seq + frame.resync_offset) & SEQ_MASK
        chunks = self.tcp.segment(seg.seq, payload, flags, fin=seg.fin, rst=seg.rst)
        for _, data, chunk_flags in chunks:
            if self.params is None:
                self._plain += data
            else:
                self._buf += data
                self._flags += chunk_flags
        if self.params is not None:
            self._process_records()
        if self.tcp.reset or self.tcp.eof:
            self._end_of_stream()

    def _end_of_stream(self):
        """FIN reached, or RST: nothing more will come; the reader must not wait.

        Complete records were already finished (in software where the card
        did not); a record cut short is reported EMSGSIZE (FreeBSD
        ``ktls_check_rx`` at ``SBS_CANTRCVMORE``), then a RST ECONNRESET.
        Errors found before come first, each with its own errno.
        """
        if self.eof:
            return
        self.eof = True
        if self.params is not None and not self.error and (self._buf or self.tcp.queued):
            self._deliver(RxError(errno.EMSGSIZE, self._seqno, "stream ends inside a record"))
        if self.tcp.reset:
            self._deliver(RxError(errno.ECONNRESET, None, "connection reset by peer"))
        self._want_tag = False

    # --- the record layer (ktls_decrypt) ------------------------------------------------

    def _check_header(self, header):
        """``ktls_decrypt``'s header checks: ``(errno, reason)`` or None."""
        p = self.params
        if header[1:3] != b"\x03\x03":
            return errno.EINVAL, f"record version {header[1]}.{header[2]}"
        if p.version is TlsVersion.TLS_1_3 and header[0] != 23:
            return errno.EINVAL, f"TLS 1.3 outer type {header[0]}"
        length = int.from_bytes(header[3:5], "big")
        low, high = self._length_bounds()
        if not low <= length <= high:
            return errno.EMSGSIZE, f"record length {length} outside [{low}, {high}]"
        return None

    def _length_bounds(self):
        if self.params.card_cipher is not None:
            return record_length_bounds(self.params.version)
        extra = 1 if self.params.version is TlsVersion.TLS_1_3 else 0
        return TAG_LEN + extra, TLS_MAX_PLAINTEXT + 256

    def _process_records(self):
        """Finish every whole record in the buffer, in order."""
        while not self.error and len(self._buf) >= HEADER_LEN:
            header = bytes(self._buf[:HEADER_LEN])
            bad = self._check_header(header)
            if bad is not None:
                self.rx.stats["corrupted_records"] += 1
                self._drop(*bad)
                return
            total = HEADER_LEN + int.from_bytes(header[3:5], "big")
            if len(self._buf) < total:
                return
            data, flags = bytes(self._buf[:total]), bytes(self._flags[:total])
            del self._buf[:total], self._flags[:total]
            self._finish_record(header, data, flags)
            self._pos += total
            self._seqno += 1

    def _finish_record(self, header, data, flags):
        """Classify one record (``ktls_mbuf_crypto_state``), open it, deliver it."""
        p, stats, number = self.params, self.rx.stats, self._seqno
        total = len(data)
        decrypted = flags.translate(_DECRYPTED_BIT).count(RX_DECRYPTED)
        if decrypted == total and not flags[-1] & RX_AUTH_FAIL:
            path, inner = PATH_NIC, data[p.header_len:total - TAG_LEN]
        else:
            body = data[HEADER_LEN:]
            path = PATH_SW
            if decrypted:
                path = PATH_RECRYPT
                body = recrypt(p, number, body, flags[HEADER_LEN:])
            try:
                inner = unseal_record(p, number, header, body)
            except InvalidTag:
                inner = None
        stats["records_" + path] += 1
        self.record_log.append((number, self._pos, total, path))
        self._note_record_start(total, path == PATH_NIC)
        if inner is None:
            stats["failed_crypto"] += 1
            self._deliver(RxError(errno.EBADMSG, number, "record failed authentication"))
            return
        try:
            record_type, plaintext = split_inner(p, header, inner)
        except ValueError as why:
            stats["failed_crypto"] += 1
            self._deliver(RxError(errno.EBADMSG, number, str(why)))
            return
        self._deliver(RxRecord(number, record_type, plaintext, path))
        if (p.version is TlsVersion.TLS_1_3 and record_type == TLS_CT_HANDSHAKE
                and TLS_HS_KEY_UPDATE in handshake_types(plaintext)):
            # Edge 19: the peer's next records use its next traffic secret,
            # which a kTLS session never gets (keys are set once). Like Linux
            # since it learnt rekeying, the reader gets EKEYEXPIRED and nothing
            # is decrypted past the KeyUpdate; the card's context goes too.
            self._stop(errno.EKEYEXPIRED, "peer sent KeyUpdate: kTLS sessions cannot rekey")

    def _note_record_start(self, total, by_card):
        """Feed the resync table; report "back in sync" (``ktls_resync_ifnet``).

        Only records from the tag's start on say anything about the card's
        sync: those before were never the card's to decrypt.
        """
        seq = self.tcp.seq_of(self._pos)
        tag = self.rx_tag
        if tag is not None and self._pos >= tag.start:
            if not by_card:
                self._resync_active = True
            elif self._resync_active:
                self._resync_active = False
                self.table.add(seq, self._seqno, 0)
                self.rx.stats["rx_tls_back_in_sync"] += 1
        self.table.add(seq, self._seqno, total)

    def _next_header(self):
        """``(stream offset, record number)`` of the first header the card has not seen,
        or None while the header of the record being received is incomplete.

        ``ktls_get_rx_sequence`` gives the next header the record layer will
        process; the card, though, has already passed the bytes received, so
        a new context must start at the first header *after* them.
        """
        if not self._buf:
            return self._pos, self._seqno
        if len(self._buf) < HEADER_LEN:
            return None
        return self._pos + HEADER_LEN + int.from_bytes(self._buf[3:5], "big"), self._seqno + 1

    # --- tasks after a batch of frames ------------------------------------------------

    async def run_tasks(self):
        """What the socket does once a batch of frames went up: drop the connection,
        reset the tag after an ingress change, allocate a tag that waited for a
        header, answer the card's resync candidate, reclaim the tag at the end."""
        if self._dropping is not None:
            await self._release_tag()
            self._dropping = None
            return
        if self._reset_port is not None and self.rx_tag is not None:
            await self._reset_receive_tag()
        self._reset_port = None
        if self._want_tag and self.rx_tag is None and not self.eof:
            await self._try_alloc()
        if self._candidate is not None and self.rx_tag is not None:
            await self._answer_candidate()
        if self.eof and self.rx_tag is not None:
            # Nothing more comes this way: the context is of no use any more.
            self.rx.stats["tag_reclaimed"] += 1
            await self._release_tag()

    async def _try_alloc(self):
        """Allocate the tag at the first header the card has not seen, once it is known.

        Failure leaves a software session with the connection kept, also for
        a tag reset (FreeBSD ``ktls_reset_receive_tag``; the send side drops
        the connection instead).
        """
        start = self._next_header()
        if start is None:
            return                      # retried once that header is in
        self._want_tag = False
        resetting, self._resetting = self._resetting, False
        try:
            self.rx_tag = await self.rx.alloc_rcv_tag(self, *start)
        except KtlsError:
            self.mode = MODE_SW
            if resetting:
                self.rx.stats["ifnet_reset_failed"] += 1
            return
        self._resync_active = False
        if resetting:
            self.rx.stats["ifnet_reset"] += 1

    async def _reset_receive_tag(self):
        """``ktls_reset_receive_tag``: free the tag; a new one on the new port follows."""
        await self._release_tag()
        self._want_tag = self._resetting = True

    async def _release_tag(self):
        tag, self.rx_tag = self.rx_tag, None
        self._candidate = None
        if tag is not None:
            await self.rx.free_rcv_tag(tag)

    async def _answer_candidate(self):
        """Confirm or reject the card's candidate once the record layer knows.

        Behind the record layer: the resync table says (mlx5
        ``mlx5e_tls_rx_snd_tag_find_tcp_sn_and_tls_rcd``); older than the
        table is a rejection. At the next header, or at the one after it
        once the current record's header is in: a record start with a known
        number. Inside the current record: rejected. Further on: not known
        yet, the answer waits for the bytes (the card keeps following the
        candidate's chain meanwhile).
        """
        candidate = self._candidate
        ahead = seq_sub(candidate, self.tcp.seq_of(self._pos))
        number = None
        if ahead < 0:
            number = self.table.lookup(candidate)
        elif ahead == 0:
            number = self._seqno
        else:
            following = self._next_header()
            if following is None or ahead > following[0] - self._pos:
                return                  # not reached yet
            if ahead == following[0] - self._pos:
                number = following[1]
        self._candidate = None
        confirm = number is not None
        block = pack(TlsRxResyncParams, candidate_seq=candidate,
                     flags=TlsRxResyncFlags.CONFIRM if confirm else 0,
                     record_number=number or 0)
        status = await self.rx._control(TxOpcode.RX_RESYNC, self.rx_tag.tag, block)
        if status is TxStatus.RESYNC_STALE:
            # The card dropped the candidate on its own (its chain broke).
            self.rx.stats["rx_tls_resync_stale"] += 1
        elif status is not TxStatus.OK:
            raise KtlsError(errno.EIO, f"RX_RESYNC: {getattr(status, 'name', status)}")
        else:
            self.rx.stats["rx_tls_resync_ok" if confirm else "rx_tls_resync_fail"] += 1

    # --- teardown ----------------------------------------------------------------------

    def _drop(self, code, reason):
        """``ktls_drop``: the connection is dropped with ``code``; the tag goes in run_tasks."""
        self._stop(code, reason, self._seqno)

    def _stop(self, code, reason, number=None):
        """Nothing more is decrypted: ``code`` for the reader, the tag freed in run_tasks."""
        self.error = code
        self._deliver(RxError(code, number, reason))
        self._buf.clear()
        self._flags.clear()
        self._want_tag = False
        self._dropping = (code, reason)

    async def close(self):
        """``soclose``: the receive context goes (key zeroed on the card)."""
        if self.closed:
            return
        await self._release_tag()
        self._want_tag = False
        self.closed = True
        self.rx.unregister(self)
