"""The host interface of tlsnic, defined once.

Everything the host and the card agree on lives here: the register map, the
descriptor and completion layouts, their enumerations and the statistics
counters. The gateware uses these layouts as ``amaranth.lib.data`` shapes, the
driver and the reference model pack and unpack host memory with
:func:`pack` / :func:`unpack` over the very same layouts, so a field moved here
moves everywhere.

Byte order: descriptors and completions are little-endian in host memory; bit 0
of a layout is bit 0 of byte 0. Registers are 32 bits wide.

Queue model (after taxi's ``cndm_proto`` and Corundum)
--------------------------------------------------------
Four rings live in host memory, each a power-of-two number of 16-byte entries:

========  =================  ================================================
ring      written by         consumed by
========  =================  ================================================
TXQ       driver             card; ``PROD`` is the doorbell
TXCQ      card               driver; writes ``CONS`` back so the card can reuse
RXQ       driver (buffers)   card; ``PROD`` is the doorbell
RXCQ      card               driver; writes ``CONS`` back
========  =================  ================================================

Indices are free-running 16-bit counters; entry ``i`` of a ring of ``2**n``
entries is at ``base + 16 * (i % 2**n)``. A ring is empty when ``PROD == CONS``
and full when ``PROD - CONS == 2**n`` (mod 2**16), so ``n <= 15``.

A completion belongs to the host when its ``phase`` bit equals
``((cons >> n) & 1) ^ 1``: the card writes the inverted wrap bit of its
producer index, so a zeroed ring reads as "nothing new" on the first pass and
entries left from the previous pass read as stale on the next one. (That holds
for a ring started at index 0, or any index whose first pass has wrap bit 0. A
host starting elsewhere must first write each entry's phase bit as the wrap
bit of the index it will be read at: the driver does.)

Every TX descriptor produces exactly one TX completion, in order. Every frame
received produces exactly one RX completion, in order, consuming one RX buffer.
When the RXQ has no buffer, or the RXCQ no free entry, the card holds the frame
and back-pressures its network input (the board's MAC FIFO drops and counts
when it overflows); when the TXCQ is full the card stops fetching TX
descriptors. Neither case loses anything silently.

Header parsing and checksums (TX offload and RX verification)
-------------------------------------------------------------
One parser serves both directions (``hdl/net/parse.py``; the model implements
the same rules):

* L2: 14-byte Ethernet header; one 802.1Q tag (TPID 0x8100) is skipped, so L3
  starts at byte 14 or 18. Any other EtherType is ``L3Proto.OTHER``.
* IPv4: EtherType 0x0800, version 4, IHL >= 5. ``ip_csum`` covers the IHL*4
  header bytes; a header that does not fit in the frame is BAD. The L4 segment
  is ``[l3 + IHL*4, l3 + total_length)``; bytes past it (Ethernet padding) are
  ignored. A fragment (MF set or offset != 0) has ``l4_proto = OTHER``.
* IPv6: EtherType 0x86DD, version 6, a 40-byte header that fits in the frame;
  ``ip_csum`` is NONE. Next header 6 or 17 directly (no extension headers)
  makes the L4 segment ``[l3 + 40, l3 + 40 + payload_length)``; anything else
  is ``l4_proto = OTHER``.
* TCP (protocol 6) needs a segment of at least 20 bytes, UDP (17) at least 8;
  the checksum covers the segment and the pseudo-header (addresses, protocol,
  segment length). A segment that is too short or runs past the end of the
  frame is BAD.
* RX: GOOD when the one's-complement sum (checksum field included) is 0xFFFF.
  A UDP checksum of 0 is NONE over IPv4 (no checksum sent) and BAD over IPv6
  (RFC 8200). Frames are delivered whatever their checksums say; BAD ones are
  counted in ``RX_CSUM_BAD``.
* TX: with ``TxFlags.CSUM_IP`` an IPv4 header that fits gets its checksum
  field (l3 + 10) written; with ``TxFlags.CSUM_L4`` a TCP/UDP segment that is
  valid by the rules above gets its checksum field (l4 + 16 for TCP, l4 + 6
  for UDP) written. The old field contents are ignored (summed as zero); a UDP
  result of 0 is sent as 0xFFFF. Frames the rules reject go out unchanged.
  Every other byte leaves exactly as the host wrote it.
* Edge cases, fixed so that model and gateware agree bit for bit: the frame
  must hold the byte at ``l3`` for IPv4/IPv6 to be recognised at all (else
  ``L3Proto.OTHER``); an IPv4 header whose IHL*4 bytes do not all fit is
  ``l3_proto = IPV4, ip_csum = BAD, l4_proto = OTHER, l4_csum = NONE``; an
  IPv6 header that does not fit is ``L3Proto.OTHER``. ``l4_proto`` names the
  protocol (TCP/UDP) whenever the L4 segment is located, even when the segment
  is too short or truncated (then ``l4_csum = BAD``). Checksums are verified
  over the frame as it arrived on the wire, also when the host buffer was too
  small to hold it (``TRUNCATED``).

Ring entries that cannot be read
--------------------------------
A TXQ or RXQ entry whose read fails (the ring lies outside host memory) still
consumes its slot and completes with ``DMA_ERROR``: a TX completion then has
opcode 0, tag 0 and length 0 (nothing of the descriptor is trusted); an RX
completion reports the frame (length, checksums), which is discarded. Both are
counted in ``TX_DMA_ERRORS`` / ``RX_DMA_ERRORS``. A completion that cannot be
written is lost and sets :data:`ERROR_COMPLETION_LOST`.

Descriptor processing (TX)
--------------------------
A descriptor is checked in this order, the first failure giving the status:
opcode (``BAD_OPCODE``), then for ``PACKET`` length (``BAD_LENGTH``), port
(``BAD_PORT``), the buffer read (``DMA_ERROR``). The completion echoes the
descriptor's ``opcode`` (raw, even when unknown) and ``tag``. Flag bits not
named in :class:`TxFlags` are ignored, as are the flags of a ``NOP``.
"""

import enum as _py_enum
import zlib
from types import SimpleNamespace

from amaranth.lib import data, enum

__all__ = [
    "ID_MAGIC", "VERSION", "MAX_FRAME", "DESC_BYTES", "MAX_LOG_RING",
    "Reg", "QueueReg", "Queue", "Irq", "ERROR_BAD_CSR", "ERROR_COMPLETION_LOST",
    "TxOpcode", "TxFlags", "TxStatus", "TxDescriptor", "TxCompletion",
    "TlsCipher", "TlsVersion", "TlsStaticParams", "TlsProgressFlags", "TlsProgressParams",
    "TlsTagLogEntry", "TLS_MAX_CIPHERTEXT", "CAP_TLS_AES_128_GCM", "CAP_TLS_AES_256_GCM",
    "CAP_TLS_1_2", "CAP_TLS_1_3", "CAP_TLS_TX", "CAP_TLS_RX",
    "RxDescriptor", "RxStatus", "CsumStatus", "L3Proto", "L4Proto", "RxTlsStatus", "RxCompletion",
    "TlsRxResyncFlags", "TlsRxResyncParams", "STEER_WAYS", "record_length_bounds",
    "FLOW_KEY_BYTES", "flow_key", "flow_hash",
    "Counter", "COUNTER_BASE",
    "pack", "unpack", "Fields", "layout_bytes",
]

#: ``Reg.ID`` reads this: "TLSN" in ASCII.
ID_MAGIC = 0x544C_534E
#: ``Reg.VERSION``: major in bits 31..16, minor in bits 15..0.
VERSION = (0 << 16) | 1
#: Largest frame (bytes, without FCS) the card transmits or receives whole:
#: 9000-byte MTU + Ethernet header + one VLAN tag, rounded up.
MAX_FRAME = 9216
#: Size of every descriptor and completion entry.
DESC_BYTES = 16
#: Rings hold at most ``2**MAX_LOG_RING`` entries (16-bit indices, full != empty).
MAX_LOG_RING = 15


class Reg(enum.IntEnum):
    """Global registers (byte addresses on the AXI4-Lite CSR port)."""
    ID          = 0x000  #: RO, :data:`ID_MAGIC`
    VERSION     = 0x004  #: RO, :data:`VERSION`
    CAP_DATAPATH = 0x008 #: RO, bits 7..0: stream width in bytes; 15..8: DMA width in bytes
    CAP_QUEUES  = 0x00C  #: RO, bits 7..0: TX queues; 15..8: RX queues; 23..16: ports; 31..24: max log ring
    CAP_TLS     = 0x010  #: RO, cipher/version bitmap (0 until the TLS engines exist)
    CAP_CONTEXTS = 0x014 #: RO, bits 15..0: TX contexts; 31..16: RX contexts
    CAP_MAX_FRAME = 0x018 #: RO, :data:`MAX_FRAME`
    SCRATCH     = 0x01C  #: RW, no effect; bring-up checks the bus with it
    IRQ_STATUS  = 0x020  #: RW1C, one bit per :class:`Irq` source
    IRQ_ENABLE  = 0x024  #: RW, the interrupt line is ``|(IRQ_STATUS & IRQ_ENABLE)``
    ERROR_STATUS = 0x028 #: RW1C, :data:`ERROR_BAD_CSR` | :data:`ERROR_COMPLETION_LOST`


class Queue(enum.IntEnum):
    """Base address of each queue's register block."""
    TXQ  = 0x100
    TXCQ = 0x200
    RXQ  = 0x300
    RXCQ = 0x400


class QueueReg(enum.IntEnum):
    """Offsets inside a queue block.

    ``CTRL`` holds ``log2(entries)`` in bits 4..0 and ``enable`` in bit 31. The
    base and size may only change while the queue is disabled; enabling a queue
    resets the card's own index (``CONS`` for TXQ/RXQ, ``PROD`` for TXCQ/RXCQ)
    to the value the host's index has at that moment. While a queue is enabled,
    writes to ``BASE_LO``/``BASE_HI`` and to the size bits of ``CTRL`` are
    ignored. Indices read back as 16-bit values; the host's index registers
    are read/write, the card's are read-only (writes ignored).
    """
    BASE_LO = 0x00
    BASE_HI = 0x04
    CTRL    = 0x08
    PROD    = 0x0C  #: TXQ/RXQ: host writes (doorbell). TXCQ/RXCQ: card's, read-only
    CONS    = 0x10  #: TXQ/RXQ: card's, read-only. TXCQ/RXCQ: host writes


QUEUE_ENABLE = 1 << 31

#: ``ERROR_STATUS`` bit: a CSR access hit an undecoded address (answered SLVERR).
ERROR_BAD_CSR = 1 << 0
#: ``ERROR_STATUS`` bit: a completion could not be written (its ring lies
#: outside host memory). The card still advanced its indices; the entry is lost.
ERROR_COMPLETION_LOST = 1 << 1


class Irq(enum.IntEnum):
    """Interrupt sources: bit numbers in ``IRQ_STATUS`` / ``IRQ_ENABLE``."""
    TXCQ = 0   #: a TX completion was written
    RXCQ = 1   #: an RX completion was written


# --- TX ---------------------------------------------------------------------

class TxOpcode(enum.Enum, shape=8):
    NOP    = 0x00   #: completes with status OK; nothing else happens
    PACKET = 0x01   #: transmit ``length`` bytes read from ``addr`` on ``port``; ``tag`` != 0: TLS inline
    # TLS transmit control (see "TLS transmit" below); ``tag`` names the context.
    SET_STATIC   = 0x02  #: create context ``tag`` from the :class:`TlsStaticParams` at ``addr``
    SET_PROGRESS = 0x03  #: reposition context ``tag`` (:class:`TlsProgressParams` at ``addr``)
    DUMP         = 0x04  #: feed ``length`` record bytes at ``addr`` through context ``tag``; nothing sent
    FREE         = 0x05  #: clear context ``tag``, key zeroed
    # TLS receive control (see "TLS receive" below); ``tag`` names a receive context.
    RX_SET_STATIC = 0x06  #: create receive context ``tag`` and its steering rule (:class:`TlsStaticParams` at ``addr``)
    RX_RESYNC     = 0x07  #: answer the context's resync candidate (:class:`TlsRxResyncParams` at ``addr``)
    RX_FREE       = 0x08  #: clear receive context ``tag`` and its steering rule, key zeroed


class TxFlags(enum.Flag, shape=8):
    CSUM_IP = 0x01  #: fill in the IPv4 header checksum
    CSUM_L4 = 0x02  #: fill in the TCP or UDP checksum (IPv4 or IPv6, pseudo-header included)


class TxStatus(enum.Enum, shape=8):
    OK         = 0x00
    BAD_OPCODE = 0x01   #: opcode not known to this card; nothing sent
    BAD_LENGTH = 0x02   #: length 0 or above :data:`MAX_FRAME`; nothing read, nothing sent
    DMA_ERROR  = 0x03   #: the host-memory read failed (bus error); nothing sent
    BAD_PORT   = 0x04   #: no such port; nothing sent
    # TLS transmit
    BAD_TAG    = 0x05   #: tag out of range, or (except SET_STATIC) naming a free context
    BAD_PARAMS = 0x06   #: SET_STATIC/SET_PROGRESS parameters the card rejects; context unchanged
    BAD_FLOW   = 0x07   #: tagged frame not TCP, or not of the context's flow; dropped
    OUT_OF_SEQUENCE = 0x08  #: tagged frame whose seq is not the context's next: dropped, never sent clear
    CONTEXT_FAILED  = 0x09  #: the context saw a bogus TLS header; dropped until SET_PROGRESS
    NO_TAG     = 0x0A   #: frame would carry tag bytes of a record entered by seek with no tag given; dropped
    WRONG_PORT = 0x0B   #: tagged frame for another port than its context's: dropped (route changed; the driver resets the tag)
    # TLS receive control
    STEER_FULL   = 0x0C  #: RX_SET_STATIC: the flow's steering bucket has no free way; nothing created
    STEER_EXISTS = 0x0D  #: RX_SET_STATIC: a live context already steers this flow on this port; nothing created
    RESYNC_STALE = 0x0E  #: RX_RESYNC names no candidate the context is waiting on; nothing changed


class TxDescriptor(data.Struct):
    """One TX queue entry (16 bytes)."""
    opcode: TxOpcode
    flags:  TxFlags
    length: 16
    tag:    16      #: send tag (TLS context); 0 = none
    port:   8
    _rsvd:  8
    addr:   64


class TxCompletion(data.Struct):
    """One TX completion queue entry (16 bytes)."""
    index:  16      #: TXQ index of the descriptor this completes
    opcode: TxOpcode
    status: TxStatus
    length: 16      #: bytes put on the wire (0 unless sent)
    tag:    16
    aux:    63      #: opcode-specific; 0 for PACKET and NOP
    phase:  1


# --- TLS transmit -----------------------------------------------------------------
#
# The driver hands the card *plaintext records, framed*: the 5-byte header
# (type 23 for TLS 1.3; length = the record's length on the wire), for TLS 1.2
# the 8-byte explicit nonce, the plaintext, for TLS 1.3 the inner content type
# byte, then 16 placeholder bytes where the tag goes (Linux ``tls_device``
# style). A tagged PACKET is a TCP segment of one flow; its payload may start
# and end anywhere in a record and may span records. The card follows record
# boundaries by reading each header's length from the stream itself, encrypts
# in place, writes each tag over its placeholder (possibly in a later segment)
# and fills the TCP (and IPv4) checksum whatever the flags say.
#
# Per context the card keeps ``next_seq``, the TCP sequence number it expects
# next. A tagged segment that starts elsewhere is dropped with OUT_OF_SEQUENCE;
# the driver repositions the context first, in one of two ways:
#
# * dump (mlx5): SET_PROGRESS to the start of the segment's record, then DUMP
#   of the record bytes ``[record start, segment start)``; a forward gap inside
#   the record being tracked needs only the DUMP of the missing bytes. DUMP
#   bytes go through the cipher state, never onto the wire.
# * seek: SET_PROGRESS with ``SEEK``: the card starts the counter at the
#   segment's offset in the record and computes no GHASH; if the segment
#   carries tag bytes, the tag comes from the progress block (``TAG_VALID``,
#   the driver read it from the context's tag log) or the frame is dropped
#   with NO_TAG.
#
# Every tag the card computes is written to the context's *tag log*: a ring of
# ``2**tag_log_log2`` :class:`TlsTagLogEntry` in host memory, entry
# ``record_number % 2**tag_log_log2``.
#
# A TCP segment with no payload (a pure ACK) on a tagged descriptor goes out
# unchanged. A header with a version other than 0x0303, or a length below the
# record's minimum or above 2**14 + 256 (+ nonce for TLS 1.2), marks the
# context failed (CONTEXT_FAILED) until the next SET_PROGRESS.
#
# Rules fixed so that model (``cosim/model_tls_tx.py``) and gateware agree:
#
# * Tags ``1..CAP_CONTEXTS`` name contexts; tag 0 or a larger one on a control
#   descriptor is BAD_TAG, and so is SET_STATIC on a live context (no rekey,
#   as FreeBSD and Linux).
# * Checks, first failure wins. Control descriptors: opcode, tag, DUMP length,
#   DMA read, parameters, failed flag; their ``port`` and ``flags`` are
#   ignored. Tagged PACKET: the plain checks, tag, port (WRONG_PORT: the
#   context belongs to the port in its static block, like FreeBSD's
#   ``tag->ifp``), flow, pure ACK (sent with the descriptor's checksum flags,
#   no sequence check), failed flag, sequence.
#   A DUMP with a bad length counts in TX_DESC_ERRORS.
# * A dropped frame changes nothing in its context (except setting the failed
#   flag) and writes no tag log entry.
# * Multi-byte key, salt/IV, address, nonce and tag fields hold their bytes in
#   wire order (``int.from_bytes(b, "little")`` of the bytes).
# * SET_PROGRESS without SEEK needs ``next_seq == record_seq``; TAG_VALID
#   without SEEK is BAD_PARAMS. With SEEK past the header (and, TLS 1.2, past
#   the nonce) those come from the block and the stream's bytes there are not
#   checked; a bad length, or an offset at or past the record end, is
#   BAD_PARAMS. SEEK computes no GHASH, even at offset 0.
# * SET_STATIC needs a 32-byte aligned ``tag_log_addr``, ``tag_log_log2 <= 16``
#   and ``ip_version`` 4 or 6 (else BAD_PARAMS).
# * A tag log entry is final once the descriptor that computed it has
#   completed; a failed tag log write counts in TX_DMA_ERRORS and the frame
#   still goes out. ``aux`` is 0 for every TLS opcode.

class TlsCipher(enum.Enum, shape=8):
    AES_128_GCM = 1
    AES_256_GCM = 2


class TlsVersion(enum.Enum, shape=8):
    TLS_1_2 = 0x03      #: the minor version byte (0x0303)
    TLS_1_3 = 0x04


#: ``Reg.CAP_TLS`` bits.
CAP_TLS_AES_128_GCM = 1 << 0
CAP_TLS_AES_256_GCM = 1 << 1
CAP_TLS_1_2 = 1 << 8
CAP_TLS_1_3 = 1 << 9
CAP_TLS_TX = 1 << 16
CAP_TLS_RX = 1 << 17

#: Largest TLSCiphertext.length (RFC 8446 5.2: 2**14 + 256).
TLS_MAX_CIPHERTEXT = (1 << 14) + 256


class TlsStaticParams(data.Struct):
    """SET_STATIC block (128 bytes, read by DMA; the key never reads back)."""
    cipher:  TlsCipher
    version: TlsVersion
    port:    8              #: the network port the tag belongs to (FreeBSD: ``tag->ifp``)
    _rsvd0:  8
    tcp_seq: 32             #: TCP seq of the first offloaded record's header
    record_number: 64       #: that record's number
    salt_iv: 96             #: TLS 1.2: 4-byte salt (bytes 0..3); TLS 1.3: the 12-byte IV
    _rsvd1:  32
    key:     256            #: AES key bytes in order; AES-128 uses bytes 0..15
    src_port: 16            #: the flow: the frame's TCP source port ...
    dst_port: 16
    ip_version: 8           #: 4 or 6
    tag_log_log2: 8         #: tag log entries = 2**tag_log_log2 (0: one entry)
    _rsvd2:  16
    tag_log_addr: 64        #: host address of the tag log (32-byte aligned)
    src_addr: 128           #: IPv6 address bytes in order; IPv4 in bytes 0..3
    dst_addr: 128
    _rsvd3:  128


class TlsProgressFlags(enum.Flag, shape=8):
    SEEK      = 0x01        #: enter the record at ``next_seq`` without its earlier bytes
    TAG_VALID = 0x02        #: with SEEK: ``tag`` is the record's tag


class TlsProgressParams(data.Struct):
    """SET_PROGRESS block (64 bytes)."""
    next_seq:      32       #: TCP seq of the next byte the card will see (packet or DUMP)
    record_seq:    32       #: TCP seq of the header of the record ``next_seq`` falls in
    record_number: 64
    flags:         TlsProgressFlags
    content_type:  8        #: with SEEK past the header: the header's type byte
    record_length: 16       #: with SEEK past the header: the header's length field
    _rsvd0:        32
    explicit_nonce: 64      #: with SEEK past the nonce (TLS 1.2): the record's nonce bytes
    tag:           128      #: with TAG_VALID
    _rsvd1:        128


class TlsTagLogEntry(data.Struct):
    """One tag log entry (32 bytes)."""
    record_number: 64
    tag:   128              #: the tag bytes in wire order
    valid: 1
    _rsvd: 63


# --- TLS receive -------------------------------------------------------------
#
# Receive contexts (tags ``1..CAP_CONTEXTS[31:16]``, a tag space of their own)
# are created by ``RX_SET_STATIC`` on the TX queue, in band with everything
# else the driver tells the card, as mlx5 posts its RX TLS parameters on a send
# queue. The :class:`TlsStaticParams` block names the flow as the card
# receives it: ``src_*`` is the peer (the frames' source), ``dst_*`` this host,
# ``port`` the ingress port; ``tcp_seq`` and ``record_number`` name the next
# record header the card will meet (the driver may enable in the middle of a
# record: it names the next one). ``tag_log_*`` are ignored.
#
# Steering. A TCP segment over IPv4 or IPv6 that the parser finds whole, with
# a data offset in ``[20, segment length]`` (one VLAN tag allowed, its ID not
# part of the key; fragments never), is looked up by its :func:`flow_key`
# (ingress port, IP version, addresses, ports) whatever its checksums say. The
# table is ``rx_contexts / 2`` buckets of :data:`STEER_WAYS` ways, each way a
# 32-bit fingerprint ``h = flow_hash(key)`` and a tag; the flow may sit in
# bucket ``h % buckets`` or ``(h >> 16) % buckets`` (two choices: 256 flows fit
# a 256-context card with overwhelming probability, and a full bucket is
# answered, never overwritten). A way whose fingerprint matches names the
# candidate context, whose stored key must then equal the frame's key. Insert:
# a fingerprint already present in either bucket is STEER_EXISTS; else the
# bucket with fewer used ways (the first on a tie), its lowest free way; both
# full is STEER_FULL. RX_FREE removes the way.
#
# Per context the card keeps ``next_seq`` (the next new byte), a record walker
# (position in the current record, its length once the header is seen, the
# GCM state of a record split across frames) and a tracker state:
#
# * TRACKING: every record is decrypted in place and its tag checked at its
#   end. ``dec_start``/``dec_end`` in the completion give the payload bytes
#   that belong to records being decrypted; there ciphertext became plaintext
#   (TLS 1.3: inner type and padding included) while header, explicit nonce
#   and tag bytes stay as received. A record can be *skipped* (not decrypted,
#   tag not checked): the one the tracker was in when a gap hit it, and the one
#   it was in when the driver confirmed a candidate.
# * SEARCHING: contiguous new bytes are scanned for a plausible header: type
#   23 (TLS 1.3) or 20..23 (TLS 1.2), version 0x0303, length in
#   :func:`record_length_bounds`. The window carries up to 4 bytes from the
#   previous contiguous frame, so a header may straddle two frames. The first
#   one found is reported (``resync``, ``resync_offset``) and the context
#   moves to PENDING.
# * PENDING: the walker follows the candidate's chain of records (each header
#   must be plausible) without decrypting. ``RX_RESYNC`` with CONFIRM and the
#   candidate's record number moves it to TRACKING: the record the walker is in
#   stays skipped if any of its bytes have passed, the next one is decrypted
#   (numbers counted from the candidate's along the chain). REJECT, or an implausible header on the
#   chain, moves it to SEARCHING.
#
# Per frame steered to a live context, with ``s`` its seq, ``L`` its payload
# length and ``N`` the context's ``next_seq`` (mod 2**32):
#
# 1. ``L == 0``: NONE. A bad IP or TCP checksum, a truncated frame, or one
#    whose RX buffer could not be fetched: NOT_CHECKED. Nothing changes in the
#    context. (A frame whose buffer write fails later has moved it.)
# 2. ``s + L <= N``: OUT_OF_ORDER, nothing changes. ``s < N``: the bytes
#    before ``N`` pass unchanged, the rest is new.
# 3. ``s > N`` (a gap): TRACKING or PENDING stay so when the current record's
#    header was seen whole and ``s`` is not past the record's end (the record
#    becomes skipped); otherwise, and in SEARCHING, the context searches
#    afresh (window empty) from the frame's first byte.
# 4. The new bytes are walked (TRACKING, PENDING) or scanned (SEARCHING);
#    ``N = s + L``. An implausible header met by the walker ends the frame's
#    decrypted span there and moves the context to SEARCHING, scanning from
#    the next frame on. A tag failure does not lose sync: ``auth_fail`` is set
#    and the next record is decrypted.
#
# The completion's ``tls`` is the tracker state the frame was processed in
# (after step 3). Rules fixed so that model (``cosim/model_tls_rx.py``) and
# gateware agree: ``RX_SET_STATIC`` checks tag (free and in range), the block
# read, the parameters (cipher, version, ``ip_version`` 4 or 6), then steering;
# the context starts TRACKING at ``next_seq = tcp_seq``. ``RX_RESYNC`` checks
# tag (live), the block read, then the candidate: the context must be PENDING
# on ``candidate_seq`` (else RESYNC_STALE). ``RX_FREE`` checks the tag. The
# key is never readable and is zeroed on RX_FREE.

class TlsRxResyncFlags(enum.Flag, shape=8):
    CONFIRM = 0x01      #: the candidate is a record start; without it the candidate is rejected


class TlsRxResyncParams(data.Struct):
    """RX_RESYNC block (16 bytes)."""
    candidate_seq: 32       #: the TCP seq the card reported
    flags: TlsRxResyncFlags
    _rsvd: 24
    record_number: 64       #: with CONFIRM: the number of the record starting there


#: Ways per steering bucket.
STEER_WAYS = 4


def record_length_bounds(version):
    """``(min, max)`` of a plausible TLSCiphertext.length for AES-GCM records.

    TLS 1.2: explicit nonce + tag at least, 2**14 + 256 + nonce at most; TLS
    1.3: tag + inner content type at least, 2**14 + 256 at most.
    """
    version = TlsVersion(version)
    if version is TlsVersion.TLS_1_2:
        return 8 + 16, TLS_MAX_CIPHERTEXT + 8
    return 16 + 1, TLS_MAX_CIPHERTEXT


#: Bytes of a flow key: port, IP version, source and destination address
#: (16 bytes each, IPv4 in the first 4), source and destination TCP port.
FLOW_KEY_BYTES = 1 + 1 + 16 + 16 + 2 + 2


def flow_key(port, ip_version, src_addr, dst_addr, src_port, dst_port):
    """The steering key of a flow as bytes (addresses as ``bytes``, 4 or 16 long)."""
    return (bytes([port, ip_version]) + bytes(src_addr).ljust(16, b"\0")
            + bytes(dst_addr).ljust(16, b"\0")
            + src_port.to_bytes(2, "big") + dst_port.to_bytes(2, "big"))


def flow_hash(key):
    """Steering fingerprint of a :func:`flow_key`: CRC-32 (IEEE, as ``zlib``)."""
    assert len(key) == FLOW_KEY_BYTES
    return zlib.crc32(key)


# --- RX ---------------------------------------------------------------------

class RxDescriptor(data.Struct):
    """One RX queue entry (16 bytes): an empty host buffer."""
    length: 32      #: buffer size; a frame larger than this is truncated and says so
    _rsvd:  32
    addr:   64


class RxStatus(enum.Enum, shape=8):
    OK        = 0x00
    #: Frame longer than the buffer, or than :data:`MAX_FRAME` (the card keeps
    #: at most MAX_FRAME bytes of a frame and checksums what it kept):
    #: ``length`` is the wire length (saturating at 65535), ``min(kept, buffer)``
    #: bytes are written.
    TRUNCATED = 0x01
    DMA_ERROR = 0x02  #: a host-memory write failed (bus error); buffer contents undefined


class CsumStatus(enum.Enum, shape=2):
    NONE = 0   #: not checked (no such header, fragment, UDP checksum 0, header cut short)
    GOOD = 1
    BAD  = 2


class L3Proto(enum.Enum, shape=2):
    OTHER = 0
    IPV4  = 1
    IPV6  = 2


class L4Proto(enum.Enum, shape=2):
    OTHER = 0
    TCP   = 1
    UDP   = 2


class RxTlsStatus(enum.Enum, shape=3):
    """What the TLS receive engine did with a frame (see "TLS receive")."""
    NONE         = 0  #: no receive context (``tag`` 0), or no TCP payload
    TRACKING     = 1  #: in order and in sync: payload bytes ``[dec_start, dec_end)`` are decrypted
    SEARCHING    = 2  #: sync lost: the payload was scanned for a record header (``resync``)
    PENDING      = 3  #: a candidate waits for the driver's answer: passed unchanged
    OUT_OF_ORDER = 4  #: all of it before the context's ``next_seq``: passed unchanged
    NOT_CHECKED  = 5  #: checksum bad or frame truncated: passed unchanged, context unchanged


class RxCompletion(data.Struct):
    """One RX completion queue entry (16 bytes)."""
    index:    16    #: RXQ index of the buffer used
    status:   RxStatus
    port:     8     #: ingress port
    length:   16    #: frame length on the wire
    ip_csum:  CsumStatus
    l4_csum:  CsumStatus
    l3_proto: L3Proto
    l4_proto: L4Proto
    tls:      RxTlsStatus
    auth_fail: 1    #: a record whose last tag byte is in this frame failed its tag check
    resync:   1     #: a resync candidate was found (``resync_offset``)
    _rsvd0:   3
    tag:      16    #: receive tag the frame was steered to; 0 = none
    dec_start: 14   #: with ``TRACKING``: TCP payload offsets of the decrypted bytes ...
    dec_end:   14   #: ... ``[dec_start, dec_end)``; both 0 when nothing was decrypted
    resync_offset: 16  #: candidate header's TCP seq minus the frame's seq (two's complement, >= -4)
    _rsvd1:   3
    phase:    1


# --- statistics -----------------------------------------------------------------

#: Counter ``c`` is the 32-bit register at ``COUNTER_BASE + 4 * c``. Counters
#: wrap; the driver accumulates them into 64-bit totals.
COUNTER_BASE = 0x1000


class Counter(enum.IntEnum):
    TX_PACKETS      = 0   #: frames put on the wire
    TX_BYTES        = 1
    TX_DESC_ERRORS  = 2   #: descriptors completed with BAD_OPCODE / BAD_LENGTH / BAD_PORT
    TX_DMA_ERRORS   = 3
    TX_CSUM_IP      = 4   #: IPv4 header checksums filled in
    TX_CSUM_L4      = 5   #: TCP/UDP checksums filled in
    RX_PACKETS      = 6   #: frames delivered to a host buffer (truncated ones included)
    RX_BYTES        = 7   #: wire bytes of those frames
    RX_TRUNCATED    = 8
    RX_DMA_ERRORS   = 9   #: frames completed with ``RxStatus.DMA_ERROR`` (not in RX_PACKETS)
    RX_CSUM_BAD     = 10  #: completions (any status) reporting ``ip_csum`` or ``l4_csum`` BAD
    # TLS transmit (names after Linux tls-offload.rst and mlx5)
    TX_TLS_ENCRYPTED_PACKETS = 11   #: tagged frames sent with TLS bytes encrypted
    TX_TLS_ENCRYPTED_BYTES   = 12   #: TLS record bytes (header to tag) in them
    TX_TLS_RECORDS           = 13   #: tags computed (and logged)
    TX_TLS_OOO               = 14   #: tagged frames dropped OUT_OF_SEQUENCE
    TX_TLS_DROP_NO_SYNC_DATA = 15   #: tagged frames dropped NO_TAG or CONTEXT_FAILED
    TX_TLS_DROP_BAD_FLOW     = 16   #: tagged frames dropped BAD_FLOW, BAD_TAG or WRONG_PORT
    TX_TLS_RESYNC            = 17   #: SET_PROGRESS accepted
    TX_TLS_DUMP_PACKETS      = 18   #: DUMP descriptors carried out
    TX_TLS_DUMP_BYTES        = 19   #: bytes they fed through the cipher state
    TX_TLS_CTX               = 20   #: contexts created (SET_STATIC accepted); minus FREE = in use
    TX_TLS_CTX_FREED         = 21
    # TLS receive
    RX_TLS_DECRYPTED_PACKETS = 22   #: completions with a non-empty decrypted span
    RX_TLS_DECRYPTED_BYTES   = 23   #: bytes in those spans
    RX_TLS_RECORDS           = 24   #: records whose tag was checked (good or bad)
    RX_TLS_AUTH_FAIL         = 25   #: of those, tags that did not match
    RX_TLS_RESYNC_REQ        = 26   #: candidates reported
    RX_TLS_RESYNC_OK         = 27   #: RX_RESYNC confirmations accepted
    RX_TLS_RESYNC_FAIL       = 28   #: RX_RESYNC rejections accepted, and RESYNC_STALE answers
    RX_TLS_LOST_SYNC         = 29   #: moves to SEARCHING (gap over a header, implausible header)
    RX_TLS_OOO               = 30   #: OUT_OF_ORDER completions
    RX_TLS_CTX               = 31   #: receive contexts created; minus RX_TLS_CTX_FREED = in use
    RX_TLS_CTX_FREED         = 32


# --- packing for the driver and the model ------------------------------------

def layout_bytes(layout):
    """Size in bytes of a layout (a ``data.Struct`` subclass or a ``data.Layout``)."""
    return data.Layout.cast(layout).size // 8


def _field_bits(name, field, value):
    """Encode one field value (enum member, flag or plain int) as an int."""
    if isinstance(value, _py_enum.Enum):
        value = value.value
    value = int(value)
    if not 0 <= value < (1 << field.width):
        raise ValueError(f"field {name!r}: {value:#x} does not fit in {field.width} bits")
    return value << field.offset


def pack(layout, **fields):
    """Encode ``fields`` as the little-endian bytes of ``layout``.

    Unnamed fields are zero. Enum fields take enum members or any integer that
    fits the field, including values the enumeration does not name: a bad
    descriptor (unknown opcode, reserved flag bits) must be expressible, since
    the card has to answer it.
    """
    layout = data.Layout.cast(layout)
    bits = 0
    for name, value in fields.items():
        bits |= _field_bits(name, layout[name], value)
    return bits.to_bytes(layout.size // 8, "little")


class Fields(SimpleNamespace):
    """The decoded fields of one layout instance (see :func:`unpack`)."""


def unpack(layout, raw):
    """Decode ``raw`` (bytes of exactly the layout's size) into its fields.

    Fields read as attributes: ``unpack(TxCompletion, b).status``. An enum
    field reads as its member when the value is one the enumeration names and
    as a plain ``int`` otherwise (an unknown opcode, reserved flag bits), so
    decoding never fails on what a buggy or hostile peer wrote.
    """
    layout = data.Layout.cast(layout)
    if len(raw) != layout.size // 8:
        raise ValueError(f"{len(raw)} bytes given, layout needs {layout.size // 8}")
    bits = int.from_bytes(raw, "little")
    decoded = {}
    for name, field in layout:
        value = (bits >> field.offset) & ((1 << field.width) - 1)
        shape = field.shape
        if isinstance(shape, type) and issubclass(shape, _py_enum.Enum):
            try:
                value = shape(value)
            except ValueError:
                pass
        decoded[name] = value
    return Fields(**decoded)
