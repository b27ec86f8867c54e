"""Software TLS (FreeBSD ``ktls_ocf`` / Linux ``tls_sw``) for records the card does not encrypt.

Software-mode sessions seal each framed record here before TCP sees it, so
the segments leave as plain frames (tag 0). The same functions are the
independent oracle the tests decrypt the wire with.

On receive, records the card did not decrypt are opened here
(:func:`unseal_record`, :func:`split_inner`), and a record the card
decrypted only in part first gets its decrypted bytes turned back into
ciphertext (:func:`recrypt`: FreeBSD ``ktls_ocf_recrypt``, Linux
``tls_device_reencrypt``), since GCM's tag covers the ciphertext.
"""

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tlsnic.abi import TlsVersion

from .tls_record import AES_GCM, EXPLICIT_NONCE_LEN, HEADER_LEN, TAG_LEN

__all__ = ["aead", "record_nonce", "record_aad", "seal_record", "open_record",
           "unseal_record", "split_inner", "recrypt"]


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


def unseal_record(params, seqno, header, body):
    """Authenticate and decrypt one record; return its inner plaintext as is.

    ``body`` is everything after the 5-byte header (TLS 1.2 explicit nonce,
    ciphertext, tag). For TLS 1.3 the result still ends with the content
    type and its zero padding (:func:`split_inner` takes them off). Raises
    ``cryptography.exceptions.InvalidTag`` when the tag does not match.
    """
    explicit = body[:params.explicit_nonce_len]
    return aead(params).decrypt(record_nonce(params, seqno, explicit),
                                bytes(body[params.explicit_nonce_len:]),
                                record_aad(params, seqno, header))


def split_inner(params, header, inner):
    """``(content type, plaintext)`` of a decrypted record.

    TLS 1.3 (RFC 8446 5.4): the type is the last non-zero byte of the inner
    plaintext, the zeros after it are padding; an inner plaintext of zeros
    only has no type, which is a ``ValueError`` (the peer's
    ``unexpected_message``). TLS 1.2: the header's type.
    """
    if params.version is not TlsVersion.TLS_1_3:
        return header[0], bytes(inner)
    stripped = bytes(inner).rstrip(b"\0")
    if not stripped:
        raise ValueError("TLS 1.3 record with no content type (all padding)")
    return stripped[-1], stripped[:-1]


def recrypt(params, seqno, body, decrypted):
    """Turn the card-decrypted bytes of a record back into ciphertext.

    ``body`` is the record after its header, as received (some ciphertext
    bytes already plaintext); ``decrypted`` has one byte per byte of it,
    bit 0 set where the card decrypted in place (other bits are ignored).
    Only ciphertext bytes count: the explicit nonce and the tag pass the
    card unchanged. GCM encrypts with AES-CTR from ``inc32(J0)``, J0 =
    nonce || 1, so payload byte ``i`` is XORed with keystream block
    ``2 + i // 16``: XORing the same keystream again restores the
    ciphertext (CTR is its own inverse, which is all
    ``tls_device_reencrypt`` relies on). Returns the new body.
    """
    if params.card_cipher is None:
        raise ValueError(f"{params.cipher}: the card never decrypts it, nothing to recrypt")
    start = params.explicit_nonce_len
    end = len(body) - TAG_LEN
    flags = bytes(decrypted[start:end]).translate(_BIT0)
    first, last = flags.find(1), flags.rfind(1) + 1
    if first < 0:
        return bytes(body)
    block = first // 16
    nonce = record_nonce(params, seqno, body[:start])
    encryptor = Cipher(algorithms.AES(params.key),
                       modes.CTR(nonce + (2 + block).to_bytes(4, "big"))).encryptor()
    keystream = encryptor.update(bytes(last - 16 * block))
    out = bytearray(body)
    i = first
    while 0 <= i < last:                 # XOR each run of decrypted bytes at once
        j = flags.find(0, i, last)
        j = last if j < 0 else j
        ks = int.from_bytes(keystream[i - 16 * block:j - 16 * block], "big")
        run = int.from_bytes(out[start + i:start + j], "big") ^ ks
        out[start + i:start + j] = run.to_bytes(j - i, "big")
        i = flags.find(1, j, last)
    return bytes(out)


#: ``bytes.translate`` table keeping bit 0 of each byte.
_BIT0 = bytes(b & 1 for b in range(256))
