"""What the card keeps per TX context, and the GCM states it builds from it.

Per send tag, two entries in block RAM (entry 0 is unused: tag 0 means "no
context"): a :class:`TxConnection`, written by ``SET_STATIC`` only, and a
:class:`TxContext`, which moves with every committed frame, ``SET_PROGRESS``
and ``DUMP``. ``FREE`` writes both with zeros, key included. Nothing here is
reachable from the register file: the only way out of the table is through
the cipher.

The GCM state of the record in progress is stored only between frames that
split a record (``gcm_saved``). A record's first cipher chunk otherwise starts
from a state built here: :func:`fresh_state` (a new record: its AAD chunk goes
first) or :func:`seek_state` (a record entered by ``SET_PROGRESS`` with
``SEEK``: the counter starts at the byte offset, no GHASH).
"""

from amaranth import *
from amaranth.lib import data

from tlsnic.abi import TlsCipher, TlsVersion
from ..crypto.gcm import GcmProgress, GcmState

__all__ = ["TxRecord", "TxConnection", "TxContext", "record_nonce", "record_aad", "fresh_state", "seek_state",
           "static_ok", "static_entry", "HEADER_LEN", "NONCE_LEN", "TAG_LEN"]

HEADER_LEN = 5
NONCE_LEN = 8       # TLS 1.2 GCM explicit nonce (RFC 5288)
TAG_LEN = 16


class TxRecord(data.Struct):
    """The record a context is inside of (the model's ``TlsTxRecord``)."""
    number:      64     #: TLS sequence number of the record
    offset:      15     #: record bytes seen, header included (a record is < 2**15 bytes)
    header:      40     #: header bytes in wire order (byte 0 in bits 0..7)
    nonce:       64     #: TLS 1.2 explicit nonce bytes in wire order
    hdr_known:   1      #: header came from SET_PROGRESS (stream bytes there are not checked)
    nonce_known: 1      #: explicit nonce came from SET_PROGRESS
    seek:        1      #: entered by SET_PROGRESS with SEEK: no GHASH, tag from ``tag``
    tag_valid:   1      #: ``tag`` holds the tag of a seek record
    tag:         128
    aad_done:    1      #: the AAD chunk has gone to the cipher (the GCM state exists)
    gcm_saved:   1      #: ``TxContext.gcm`` holds the state after the last committed byte


class TxConnection(data.Struct):
    """What ``SET_STATIC`` gives a send tag: the connection, fixed for its life.

    Kept in a table of its own, apart from what moves (:class:`TxContext`):
    it is written only when the tag is installed or freed, so the key has no
    way in but from the static parameters, and the per-frame commit (a write
    of the moving half) multiplexes none of these bits."""
    in_use:       1
    aes256:       1
    tls13:        1
    ipv6:         1
    port:         2
    key:          256
    salt_iv:      96
    src_addr:     128   #: IPv4: bytes 0..3, the rest zero
    dst_addr:     128
    src_port:     16
    dst_port:     16
    tag_log_addr: 64
    tag_log_log2: 5


class TxContext(data.Struct):
    """What moves in a send tag's context: the stream position and the record."""
    failed:       1     #: a bogus header was seen; packets dropped until SET_PROGRESS
    next_seq:     32
    rec:          TxRecord
    gcm:          GcmProgress   #: the record so far (``gcm_saved``); key and nonce: the connection


def record_length(rec):
    """The header's length field (big-endian bytes 3 and 4)."""
    return Cat(rec.header[32:40], rec.header[24:32])


def record_nonce(conn, rec):
    """The 96-bit GCM nonce (LSB-first bytes) of ``rec``: RFC 5288 / RFC 8446 5.3."""
    number_bytes = Cat(*[rec.number[8 * (7 - i):8 * (8 - i)] for i in range(8)])
    return Mux(conn.tls13, conn.salt_iv ^ Cat(C(0, 32), number_bytes),
               Cat(conn.salt_iv[:32], rec.nonce))


def record_aad(conn, rec):
    """``(data, count)`` of the record's AAD chunk: TLS 1.2 seq || type || version
    || plaintext length (13 bytes); TLS 1.3 the header (5 bytes)."""
    number_bytes = Cat(*[rec.number[8 * (7 - i):8 * (8 - i)] for i in range(8)])
    plain_len = (record_length(rec) - (NONCE_LEN + TAG_LEN))[:16]
    aad12 = Cat(number_bytes, rec.header[:24], plain_len[8:16], plain_len[0:8])
    return Mux(conn.tls13, rec.header, aad12), Mux(conn.tls13, HEADER_LEN, 13)


def fresh_state(m, conn, rec, decrypt=0):
    """The :class:`GcmState` that starts ``rec`` (``gcm.state_record``, H derived).

    ``conn`` is a TX or RX connection (``key``, ``aes256``, ``tls13``,
    ``salt_iv``); ``decrypt`` selects the receive direction."""
    st = Signal(GcmState)
    m.d.comb += [
        st.key.eq(conn.key), st.aes256.eq(conn.aes256), st.hgen.eq(1), st.decrypt.eq(decrypt),
        st.iv.eq(record_nonce(conn, rec)), st.ctr.eq(2), st.kpos.eq(16),
    ]
    return st


def seek_state(m, conn, rec, text_offset):
    """The state that enters ``rec`` at payload byte ``text_offset`` (``gcm.state_seek``)."""
    st = Signal(GcmState)
    m.d.comb += [
        st.key.eq(conn.key), st.aes256.eq(conn.aes256), st.hgen.eq(1),
        st.iv.eq(record_nonce(conn, rec)), st.ctr.eq(2 + (text_offset >> 4)), st.prime.eq(1),
        st.kpos.eq(text_offset[:4]), st.text_len.eq(text_offset), st.seeked.eq(1),
        st.ptext.eq(1),
    ]
    return st


def static_ok(static, ports):
    """The checks of a :class:`~tlsnic.abi.TlsStaticParams` block that both
    directions make: a known cipher and version, IP version 4 or 6, an
    existing port."""
    return (((static.cipher == TlsCipher.AES_128_GCM) | (static.cipher == TlsCipher.AES_256_GCM))
            & ((static.version == TlsVersion.TLS_1_2) | (static.version == TlsVersion.TLS_1_3))
            & ((static.ip_version == 4) | (static.ip_version == 6))
            & (static.port < ports))


def static_entry(m, conn, entry, static):
    """Drive what a TX or RX context takes from its static block: the
    connection ``conn`` (``in_use``, cipher, version, flow, key and salt/IV;
    IPv4 addresses keep bytes 0..3, the rest zero) and, in the moving
    ``entry``, ``next_seq`` and the first record's number."""
    v6 = static.ip_version == 6
    m.d.comb += [
        conn.in_use.eq(1),
        conn.aes256.eq(static.cipher == TlsCipher.AES_256_GCM),
        conn.tls13.eq(static.version == TlsVersion.TLS_1_3),
        conn.ipv6.eq(v6), conn.port.eq(static.port),
        conn.key.eq(static.key), conn.salt_iv.eq(static.salt_iv),
        conn.src_addr.eq(Mux(v6, static.src_addr, static.src_addr[:32])),
        conn.dst_addr.eq(Mux(v6, static.dst_addr, static.dst_addr[:32])),
        conn.src_port.eq(static.src_port), conn.dst_port.eq(static.dst_port),
        entry.next_seq.eq(static.tcp_seq),
        entry.rec.number.eq(static.record_number),
    ]
