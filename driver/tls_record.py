"""TLS record framing for the transmit path (FreeBSD ``ktls_frame`` / ``ktls_seq``).

A session's records are framed here before TCP sees them: the 5-byte header
(always version 0x0303 on the wire; type 23 for TLS 1.3), for TLS 1.2 GCM the
8-byte explicit nonce from a randomly seeded 64-bit counter (big-endian, then
incremented, as ``ktls_frame`` does), the plaintext, for TLS 1.3 the inner
content type, then 16 placeholder bytes for the tag. In ifnet mode the card
encrypts these bytes in place; in software mode :mod:`.fallback` seals them
before they reach TCP.
"""

import dataclasses

from tlsnic.abi import TLS_MAX_CIPHERTEXT, TlsCipher, TlsVersion

__all__ = [
    "TLS_MAX_PLAINTEXT", "HEADER_LEN", "TAG_LEN", "EXPLICIT_NONCE_LEN",
    "TLS_CT_ALERT", "TLS_CT_HANDSHAKE", "TLS_CT_APPLICATION_DATA",
    "CIPHERS", "AES_GCM", "TlsSessionParams", "TlsRecord", "RecordFramer", "parse_records",
    "TLS_HS_KEY_UPDATE", "handshake_types",
]

#: ``kern.ipc.tls.maxlen`` default and RFC 8446's 2**14.
TLS_MAX_PLAINTEXT = 16384
HEADER_LEN = 5
TAG_LEN = 16
EXPLICIT_NONCE_LEN = 8
TLS_CT_ALERT = 21
TLS_CT_HANDSHAKE = 22
TLS_CT_APPLICATION_DATA = 23
#: RFC 8446 4.6.3 ``key_update`` handshake message type.
TLS_HS_KEY_UPDATE = 24
#: Suites the driver knows, with their key length (``tls_enable.cipher_key_len``).
CIPHERS = {"AES-128-GCM": 16, "AES-256-GCM": 32, "CHACHA20-POLY1305": 32}
AES_GCM = {"AES-128-GCM": TlsCipher.AES_128_GCM, "AES-256-GCM": TlsCipher.AES_256_GCM}


@dataclasses.dataclass(frozen=True)
class TlsSessionParams:
    """What ``ktls_enable_tx`` was given for one direction (``struct tls_enable``).

    ``iv`` is the 4-byte salt for TLS 1.2 AES-GCM and the 12-byte IV
    otherwise. ``cipher`` is a suite name (:data:`CIPHERS`): the card's
    :class:`~tlsnic.abi.TlsCipher` where it has one, else software only.
    """
    version: TlsVersion
    cipher: str
    key: bytes
    iv: bytes
    rec_seq: int = 0          # number of the first record

    @property
    def explicit_nonce_len(self):
        # RFC 5288 for AES-GCM; ChaCha20-Poly1305 (RFC 7905) has none.
        return EXPLICIT_NONCE_LEN if self.has_explicit_nonce else 0

    @property
    def has_explicit_nonce(self):
        return self.version is TlsVersion.TLS_1_2 and self.cipher in AES_GCM

    @property
    def card_cipher(self):
        """The card's :class:`~tlsnic.abi.TlsCipher`, or None (software only)."""
        return AES_GCM.get(self.cipher)

    @property
    def header_len(self):
        """``tls_hlen``: header plus explicit nonce."""
        return HEADER_LEN + self.explicit_nonce_len

    @property
    def trailer_len(self):
        """``tls_tlen``: tag, plus the inner type byte for TLS 1.3."""
        return TAG_LEN + (1 if self.version is TlsVersion.TLS_1_3 else 0)


@dataclasses.dataclass
class TlsRecord:
    """One framed record (FreeBSD: one ``M_EXTPG`` mbuf).

    Attributes
    ----------
    seqno : int
        ``m_epg_seqno``: the record number.
    record_type : int
        The real content type (the TLS 1.3 header says 23 whatever it is).
    plaintext : bytes
    data : bytes
        The framed bytes as the card gets them (placeholders where the tag goes).
    wire : bytes or None
        Software mode: the sealed record, what TCP sends instead of ``data``.
    session : object
        The session that framed it; retransmits use *its* tag (FreeBSD takes
        the send tag from the mbuf's session, not the socket's).
    """
    seqno: int
    record_type: int
    plaintext: bytes
    data: bytes
    wire: bytes = None
    session: object = None
    #: Where the framed bytes sit in host memory (ifnet mode): ``(offset in
    #: record, length, DMA address)`` spans, which DUMP reads (re-DMA).
    host: list = None
    #: Host buffers the driver allocated for this record (freed at ACK).
    owned: list = dataclasses.field(default_factory=list)
    #: DUMP descriptors in the ring that read ``owned`` memory; an ACK while
    #: there are any defers the free to the last one's completion.
    dma_refs: int = 0
    free_deferred: bool = False

    def __len__(self):
        return len(self.data)

    @property
    def length_field(self):
        return len(self.data) - HEADER_LEN

    @property
    def tag_offset(self):
        """Offset of the tag's first byte in the record."""
        return len(self.data) - TAG_LEN


class RecordFramer:
    """``ktls_frame`` + ``ktls_seq`` for one session.

    Parameters
    ----------
    params : TlsSessionParams
    rng : random.Random
        Seeds the TLS 1.2 explicit nonce counter (FreeBSD: ``arc4random``).
    maxlen : int
        ``kern.ipc.tls.maxlen``, clamped to 16384.
    """

    def __init__(self, params, rng, maxlen=TLS_MAX_PLAINTEXT):
        self.params = params
        self.max_frame_len = min(TLS_MAX_PLAINTEXT, maxlen)
        self.next_seqno = params.rec_seq              # sb_tls_seqno
        self.nonce_counter = rng.getrandbits(64)       # iv[8..15] in ktls_create_session

    def clone(self):
        """The framer of a cloned session: same record number and nonce counter.

        ``ktls_clone_session`` copies ``params.iv`` (whose bytes 8..15 are the
        TLS 1.2 nonce counter); taken at the swap, so no nonce repeats.
        """
        twin = RecordFramer.__new__(RecordFramer)
        twin.__dict__.update(self.__dict__)
        return twin

    def frame(self, plaintext, record_type=TLS_CT_APPLICATION_DATA, session=None):
        """Frame one record of ``plaintext`` (at most ``max_frame_len`` bytes)."""
        plaintext = bytes(plaintext)
        if len(plaintext) > self.max_frame_len:
            raise ValueError(f"{len(plaintext)} bytes: a record holds at most {self.max_frame_len}")
        p = self.params
        prefix = b""
        if p.version is TlsVersion.TLS_1_3:
            inner = plaintext + bytes([record_type])
            header_type = TLS_CT_APPLICATION_DATA
        else:
            inner = plaintext
            header_type = record_type
        if p.has_explicit_nonce:
            prefix = self.nonce_counter.to_bytes(8, "big")
            self.nonce_counter = (self.nonce_counter + 1) & ((1 << 64) - 1)
        length = len(prefix) + len(inner) + TAG_LEN
        assert length <= TLS_MAX_CIPHERTEXT + EXPLICIT_NONCE_LEN
        data = (bytes([header_type, 3, 3]) + length.to_bytes(2, "big") + prefix + inner
                + bytes(TAG_LEN))
        record = TlsRecord(self.next_seqno, record_type, plaintext, data, session=session)
        self.next_seqno += 1
        return record

    def frame_stream(self, payload, record_size=None, record_type=TLS_CT_APPLICATION_DATA,
                     session=None):
        """Cut ``payload`` into records of ``record_size`` (default the maximum)."""
        size = record_size or self.max_frame_len
        payload = bytes(payload)
        if not payload:
            return [self.frame(b"", record_type, session)]
        return [self.frame(payload[i:i + size], record_type, session)
                for i in range(0, len(payload), size)]


def handshake_types(data):
    """Message types of the handshake messages in ``data`` (``type(1) || length(3) || body``).

    A message cut short at the end still yields its type: a KeyUpdate must
    be caught even when the caller splits messages across writes.
    """
    types, pos, data = [], 0, bytes(data)
    while pos < len(data):
        types.append(data[pos])
        length = int.from_bytes(data[pos + 1:pos + 4], "big")
        pos += 4 + length
    return types


def parse_records(stream):
    """Split a TLS byte stream into ``(header, body)`` records; a partial tail is an error."""
    records, pos = [], 0
    stream = bytes(stream)
    while pos < len(stream):
        if pos + HEADER_LEN > len(stream):
            raise ValueError(f"stream ends inside a header at {pos}")
        length = int.from_bytes(stream[pos + 3:pos + 5], "big")
        end = pos + HEADER_LEN + length
        if end > len(stream):
            raise ValueError(f"stream ends inside a record at {pos}")
        records.append((stream[pos:pos + HEADER_LEN], stream[pos + HEADER_LEN:end]))
        pos = end
    return records
