"""Software TLS (FreeBSD ``ktls_ocf`` / Linux ``tls_sw``) for records the card does not encrypt.

Software-mode sessions seal each framed record here before TCP sees it, so
the segments leave as plain frames (tag 0). The same functions are the
independent oracle the tests decrypt the wire with.
"""

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tlsnic.abi import TlsVersion

from .tls_record import AES_GCM, EXPLICIT_NONCE_LEN, HEADER_LEN, TAG_LEN

__all__ = ["aead", "record_nonce", "record_aad", "seal_record", "open_record"]


def aead(params):
    """The AEAD object of a session's suite."""
    return (AESGCM if params.cipher in AES_GCM else ChaCha20Poly1305)(params.key)


def record_nonce(params, seqno, explicit_nonce=b""):
    """The GCM nonce: salt || explicit nonce (TLS 1.2) or IV ^ seqno (TLS 1.3)."""
    if params.has_explicit_nonce:
        return bytes(params.iv[:4]) + bytes(explicit_nonce)
    padded = seqno.to_bytes(12, "big")
    return bytes(a ^ b for a, b in zip(params.iv, padded))


def record_aad(params, seqno, header):
    """TLS 1.2: seq_num || type || version || plaintext length; TLS 1.3: the header."""
    if params.version is TlsVersion.TLS_1_2:
        plain_len = int.from_bytes(header[3:5], "big") - params.explicit_nonce_len - TAG_LEN
        return seqno.to_bytes(8, "big") + header[:3] + plain_len.to_bytes(2, "big")
    return bytes(header)


def seal_record(params, record):
    """The wire bytes of a framed :class:`~.tls_record.TlsRecord` (``ktls_ocf_tls1x_encrypt``)."""
    data = record.data
    header = data[:HEADER_LEN]
    explicit = data[HEADER_LEN:HEADER_LEN + params.explicit_nonce_len]
    inner = data[params.header_len:len(data) - TAG_LEN]
    sealed = aead(params).encrypt(record_nonce(params, record.seqno, explicit), inner,
                                        record_aad(params, record.seqno, header))
    return header + explicit + sealed


def open_record(params, seqno, header, body):
    """Decrypt one record from the wire; return ``(record_type, plaintext)``.

    Raises ``cryptography.exceptions.InvalidTag`` when the tag is wrong.
    """
    explicit = body[:params.explicit_nonce_len]
    sealed = body[params.explicit_nonce_len:]
    inner = aead(params).decrypt(record_nonce(params, seqno, explicit), sealed,
                                       record_aad(params, seqno, header))
    if params.version is TlsVersion.TLS_1_3:
        stripped = inner.rstrip(b"\0")      # zero padding (RFC 8446 5.4)
        return stripped[-1], stripped[:-1]
    return header[0], inner
