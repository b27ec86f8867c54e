"""TLS from a capture: key logs, the handshake, traffic keys, and the records under them.

Given both directions of a TCP connection reassembled (:mod:`.capture`) and
an NSS key log, this module finds what a kTLS session would have been given:

* the negotiated version (``supported_versions`` included; pre-RFC TLS 1.3
  drafts named as such), cipher suite, randoms, ``extended_master_secret``
  and compression, from the ClientHello and ServerHello (Scapy parses them);
* each direction's traffic keys: TLS 1.3 by HKDF-Expand-Label from
  ``CLIENT_TRAFFIC_SECRET_0`` / ``SERVER_TRAFFIC_SECRET_0`` (and ``traffic
  upd`` after a KeyUpdate); TLS 1.2 by the PRF's key expansion of the master
  secret (``CLIENT_RANDOM``), or, for the plain PSK suites, of a master
  secret made from the PSK (RFC 4279 premaster; RFC 7627 when the extended
  master secret was negotiated);
* where the application traffic keys take over, and each record under them
  with its record number (TLS 1.2: after ChangeCipherSpec the encrypted
  Finished is record 0, so application data starts at 1; TLS 1.3: per
  traffic secret, from 0), opened and checked with its tag.

The opening here is the replay's independent oracle: it uses
``cryptography``'s AEADs directly and nothing of the driver under test.
Secrets never appear in messages, logs or reprs.
"""

import dataclasses
import hashlib
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from scapy.layers.tls.crypto.suites import _tls_cipher_suites
from scapy.layers.tls.extensions import TLS_Ext_ExtendedMasterSecret, TLS_Ext_SupportedVersion_SH
from scapy.layers.tls.handshake import TLSClientHello, TLSServerHello

__all__ = ["KeylogError", "TlsError", "Keylog", "Suite", "suite", "Record", "split_records",
           "Handshake", "parse_handshake", "TrafficKeys", "derive_keys", "AppRecord",
           "application_records", "hkdf_expand_label", "prf", "psk_premaster",
           "CT_CHANGE_CIPHER_SPEC", "CT_ALERT", "CT_HANDSHAKE", "CT_APPLICATION_DATA"]

CT_CHANGE_CIPHER_SPEC, CT_ALERT, CT_HANDSHAKE, CT_APPLICATION_DATA = 20, 21, 22, 23
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_CLIENT_KEY_EXCHANGE, HS_KEY_UPDATE = 1, 2, 16, 24
HEADER_LEN = 5
#: RFC 8446 5.2: a record body is at most 2**14 + 256 bytes (TLS 1.2 allows 2**14 + 2048).
MAX_BODY = 2**14 + 2048
#: The ServerHello random of a HelloRetryRequest (RFC 8446 4.1.3).
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
VERSION_NAMES = {0x0300: "SSL 3.0", 0x0301: "1.0", 0x0302: "1.1", 0x0303: "1.2", 0x0304: "1.3"}


class KeylogError(ValueError):
    """A key log line that is not NSS key log format (message: ``file:line: what``)."""


class TlsError(ValueError):
    """The connection's TLS cannot be followed (not TLS, no ServerHello, keys that do not fit)."""


# --- the key log ------------------------------------------------------------------------------

#: Labels of the NSS key log format and the length of their first field (the
#: ClientHello random, except RSA's first 8 bytes of the encrypted premaster).
_LABELS = {
    "CLIENT_RANDOM": 32, "CLIENT_EARLY_TRAFFIC_SECRET": 32, "CLIENT_HANDSHAKE_TRAFFIC_SECRET": 32,
    "SERVER_HANDSHAKE_TRAFFIC_SECRET": 32, "CLIENT_TRAFFIC_SECRET_0": 32,
    "SERVER_TRAFFIC_SECRET_0": 32, "EARLY_EXPORTER_SECRET": 32, "EXPORTER_SECRET": 32,
    "ECH_SECRET": 32, "ECH_CONFIG": 32, "RSA": 8,
}
_HEX = re.compile(r"[0-9A-Fa-f]+")


class Keylog:
    """Secrets from NSS key logs, by ClientHello random and label.

    Lines with a label this reader does not know are kept (the format grows
    new labels); a line that is not ``LABEL <hex> <hex>`` is an error.
    """

    def __init__(self):
        self._secrets = {}          # client random -> {label: secret}
        self.sources = []

    def __repr__(self):
        return f"<Keylog: {len(self._secrets)} client randoms from {', '.join(self.sources) or '-'}>"

    def __len__(self):
        return len(self._secrets)

    @classmethod
    def from_file(cls, path):
        log = cls()
        log.add_file(path)
        return log

    def add_file(self, path):
        """Add a key log file (errors name it, with the line)."""
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError as error:
            raise KeylogError(f"{path}: {error.strerror or error}") from None
        self.add_text(text, str(path))

    def add_text(self, text, source):
        """Add every line of ``text``; errors name ``source`` and the line number."""
        self.sources.append(source)
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            where = f"{source}:{number}"
            if len(fields) != 3:
                raise KeylogError(f"{where}: expected 'LABEL <hex> <hex>', got {len(fields)} "
                                  f"field(s)")
            label, ident, secret = fields
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", label):
                raise KeylogError(f"{where}: {label[:40]!r} is not a key log label")
            for name, value in (("first field", ident), ("secret", secret)):
                if not _HEX.fullmatch(value) or len(value) % 2:
                    raise KeylogError(f"{where}: {label}: the {name} is not an even number of "
                                      f"hex digits")
            ident, secret = bytes.fromhex(ident), bytes.fromhex(secret)
            want = _LABELS.get(label)
            if want is not None and len(ident) != want:
                raise KeylogError(f"{where}: {label}: first field of {len(ident)} bytes, "
                                  f"expected {want}")
            if label == "CLIENT_RANDOM" and len(secret) != 48:
                raise KeylogError(f"{where}: CLIENT_RANDOM: master secret of {len(secret)} bytes, "
                                  f"expected 48")
            self._secrets.setdefault(ident, {})[label] = secret

    def get(self, client_random, label):
        """The secret logged for ``client_random`` under ``label``, or None."""
        return self._secrets.get(bytes(client_random), {}).get(label)


# --- cipher suites ------------------------------------------------------------------------------

#: AEADs by the cipher part of an IANA suite name:
#: (name the driver uses, key length, fixed IV length in TLS 1.2, tag length).
_AEADS = {
    "AES_128_GCM": ("AES-128-GCM", 16, 4, 16), "AES_256_GCM": ("AES-256-GCM", 32, 4, 16),
    "AES_128_CCM": ("AES-128-CCM", 16, 4, 16), "AES_256_CCM": ("AES-256-CCM", 32, 4, 16),
    "AES_128_CCM_8": ("AES-128-CCM-8", 16, 4, 8), "AES_256_CCM_8": ("AES-256-CCM-8", 32, 4, 8),
    "CHACHA20_POLY1305": ("CHACHA20-POLY1305", 32, 12, 16),
}


@dataclasses.dataclass(frozen=True)
class Suite:
    """A cipher suite as the key schedule and the record layer need it.

    Attributes
    ----------
    code : int
    name : str
        IANA name (from Scapy's table), or ``0x....`` when unknown.
    tls13 : bool
        A TLS 1.3 suite (``TLS_AES_128_GCM_SHA256``...).
    aead : str or None
        ``AES-128-GCM``, ``AES-256-GCM``, ``AES-128-CCM``, ``AES-128-CCM-8``,
        ``CHACHA20-POLY1305``...; None for CBC, RC4, NULL and the rest.
    key_len, fixed_iv_len, tag_len : int
    hash : str
        PRF / HKDF hash (``SHA256`` or ``SHA384``).
    psk : bool
        TLS 1.2 key exchange with a PSK alone (``TLS_PSK_WITH_...``).
    """
    code: int
    name: str
    tls13: bool
    aead: str = None
    key_len: int = 0
    fixed_iv_len: int = 0
    tag_len: int = 16
    hash: str = "SHA256"
    psk: bool = False


def suite(code):
    """The :class:`Suite` of a cipher suite number, read off its IANA name."""
    name = _tls_cipher_suites.get(code, f"0x{code:04x}")
    tls13 = name.startswith("TLS_") and "_WITH_" not in name and (code >> 8) == 0x13
    kx, _, cipher = name[4:].partition("_WITH_") if not tls13 else ("", "", name[4:])
    hash_name = "SHA384" if cipher.endswith("_SHA384") else "SHA256"
    cipher = re.sub(r"_(SHA|SHA256|SHA384|MD5)$", "", cipher)
    aead = _AEADS.get(cipher)
    if aead is None:
        return Suite(code, name, tls13, hash=hash_name)
    aead_name, key_len, fixed_iv, tag = aead
    return Suite(code, name, tls13, aead_name, key_len, 12 if tls13 else fixed_iv, tag,
                 hash_name, psk=kx == "PSK")


# --- records ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Record:
    """One TLS record of a direction's stream.

    Attributes
    ----------
    offset : int
        Stream offset of the header's first byte.
    header : bytes
        The 5 header bytes.
    body : bytes
    complete : bool
        Every byte was captured (False: a hole in the capture, or the stream
        ends inside the record).
    """
    offset: int
    header: bytes
    body: bytes
    complete: bool = True

    @property
    def content_type(self):
        return self.header[0]

    @property
    def end(self):
        return self.offset + HEADER_LEN + int.from_bytes(self.header[3:5], "big")


def split_records(direction):
    """The records of a :class:`~.capture.Direction`'s stream, in order.

    Stops at the end of the stream (a record cut short there is returned
    with ``complete=False``) or at bytes that are no TLS record header
    (a hole where a header should be, or not TLS at all).
    """
    stream, out, pos = direction.stream, [], 0
    while pos + HEADER_LEN <= len(stream):
        header = stream[pos:pos + HEADER_LEN]
        length = int.from_bytes(header[3:5], "big")
        if not (CT_CHANGE_CIPHER_SPEC <= header[0] <= 24 and header[1] == 3 and length <= MAX_BODY):
            break
        if not direction.complete(pos, pos + HEADER_LEN):
            break
        end = pos + HEADER_LEN + length
        body = stream[pos + HEADER_LEN:end]
        out.append(Record(pos, header, body, end <= len(stream) and direction.complete(pos, end)))
        pos = end
    return out


def _handshake_messages(records):
    """``(type, whole message bytes)`` of the plaintext handshake before the first CCS or
    encrypted record, messages reassembled across records."""
    data = bytearray()
    for record in records:
        if record.content_type != CT_HANDSHAKE or not record.complete:
            break
        data += record.body
    out, pos = [], 0
    while pos + 4 <= len(data):
        end = pos + 4 + int.from_bytes(data[pos + 1:pos + 4], "big")
        if end > len(data):
            break
        out.append((data[pos], bytes(data[pos:end])))
        pos = end
    return out


# --- the handshake -------------------------------------------------------------------------------

@dataclasses.dataclass
class Handshake:
    """What the hellos negotiated.

    Attributes
    ----------
    version : str
        ``"1.2"``, ``"1.3"``, ``"1.0"``, ``"1.1"``, ``"SSL 3.0"``, or
        ``"draft-NN"`` for a pre-RFC TLS 1.3 draft.
    suite : Suite
    client_random, server_random : bytes
    extended_master_secret : bool
        Both hellos carried the extension (TLS 1.2 only).
    compression : int
        The ServerHello's compression method (0: none).
    hello_retry : bool
        The server asked for a second ClientHello.
    transcript : list[tuple[str, bytes]]
        Plaintext handshake messages in protocol order with their sender,
        up to the client's ChangeCipherSpec (TLS 1.2 extended master secret).
    """
    version: str
    suite: Suite
    client_random: bytes
    server_random: bytes
    extended_master_secret: bool = False
    compression: int = 0
    hello_retry: bool = False
    transcript: list = dataclasses.field(default_factory=list, repr=False)


def parse_handshake(client_records, server_records):
    """Read the ClientHello and ServerHello; raise :class:`TlsError` if there are none."""
    client = _handshake_messages(client_records)
    server = _handshake_messages(server_records)
    hellos = [m for t, m in client if t == HS_CLIENT_HELLO]
    server_hellos = [m for t, m in server if t == HS_SERVER_HELLO]
    if not hellos:
        raise TlsError("no ClientHello at the start of the client's stream")
    if not server_hellos:
        raise TlsError("no ServerHello at the start of the server's stream")
    ch = TLSClientHello(hellos[0])
    sh_bytes = server_hellos[-1]
    hello_retry = sh_bytes[6:38] == HRR_RANDOM
    if hello_retry and len(server_hellos) == 1:
        raise TlsError("HelloRetryRequest without the ServerHello that follows it")
    sh = TLSServerHello(sh_bytes)
    version = sh.version
    for ext in sh.ext or []:
        if isinstance(ext, TLS_Ext_SupportedVersion_SH):
            version = ext.version
    if version >> 8 == 0x7F:
        name = f"draft-{version & 0xFF}"
    elif version in (0x7E01, 0x7E02, 0xFB17, 0xFB1A):     # vendor drafts (Facebook, Google)
        name = f"draft-0x{version:04x}"
    else:
        name = VERSION_NAMES.get(version, f"0x{version:04x}")
    ems = (name != "1.3" and any(isinstance(e, TLS_Ext_ExtendedMasterSecret) for e in ch.ext or [])
           and any(isinstance(e, TLS_Ext_ExtendedMasterSecret) for e in sh.ext or []))
    # TLS 1.2 full handshake: CH, the server's flight, then the client's messages.
    transcript = [("client", client[0][1])] + [("server", m) for _, m in server] + [
        ("client", m) for _, m in client[1:]]
    return Handshake(name, suite(sh.cipher), hellos[0][6:38], sh_bytes[6:38], ems,
                     sh.comp if isinstance(sh.comp, int) else (sh.comp or [0])[0],
                     hello_retry, transcript)


# --- key schedule ---------------------------------------------------------------------------------

def _hash(name):
    return {"SHA256": hashes.SHA256(), "SHA384": hashes.SHA384()}[name]


def hkdf_expand_label(secret, label, context, length, hash_name):
    """RFC 8446 7.1 ``HKDF-Expand-Label`` (``cryptography``'s HKDF-Expand)."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(_hash(hash_name), length, info).derive(secret)


def prf(secret, label, seed, length, hash_name):
    """The TLS 1.2 PRF (RFC 5246 5): ``P_hash(secret, label + seed)``.

    ``cryptography`` has no TLS PRF, only the HMAC it is made of.
    """
    def mac(data):
        h = hmac.HMAC(secret, _hash(hash_name))
        h.update(data)
        return h.finalize()

    seed = label + seed
    out, a = b"", seed
    while len(out) < length:
        a = mac(a)
        out += mac(a + seed)
    return out[:length]


def psk_premaster(psk):
    """RFC 4279 2: the premaster secret of a plain PSK key exchange."""
    n = len(psk).to_bytes(2, "big")
    return n + bytes(len(psk)) + n + psk


@dataclasses.dataclass(frozen=True)
class TrafficKeys:
    """One direction's record protection under one traffic secret.

    Attributes
    ----------
    version : str
        ``"1.2"`` or ``"1.3"``.
    aead : str
    key : bytes
    iv : bytes
        TLS 1.2 AES-GCM/CCM: the 4-byte salt; otherwise the 12-byte IV.
    secret : bytes or None
        TLS 1.3: the traffic secret (the next generation is derived from it).
    hash : str
    tag_len : int
    generation : int
        TLS 1.3: 0 for ``*_TRAFFIC_SECRET_0``, +1 per KeyUpdate.
    """
    version: str
    aead: str
    key: bytes = dataclasses.field(repr=False)
    iv: bytes = dataclasses.field(repr=False)
    secret: bytes = dataclasses.field(default=None, repr=False)
    hash: str = "SHA256"
    tag_len: int = 16
    generation: int = 0

    @classmethod
    def tls13(cls, secret, suite_, generation=0):
        key = hkdf_expand_label(secret, b"key", b"", suite_.key_len, suite_.hash)
        iv = hkdf_expand_label(secret, b"iv", b"", 12, suite_.hash)
        return cls("1.3", suite_.aead, key, iv, secret, suite_.hash, suite_.tag_len, generation)

    def next_generation(self):
        """The keys after a KeyUpdate (RFC 8446 7.2 ``traffic upd``)."""
        secret = hkdf_expand_label(self.secret, b"traffic upd", b"", len(self.secret), self.hash)
        return TrafficKeys.tls13(secret, Suite(0, "", True, self.aead, len(self.key), 12,
                                               self.tag_len, self.hash), self.generation + 1)

    @property
    def explicit_nonce_len(self):
        """TLS 1.2 AES-GCM/CCM carry 8 nonce bytes in each record (RFC 5288, 6655)."""
        return 8 if self.version != "1.3" and len(self.iv) == 4 else 0

    def _cipher(self):
        if self.aead.startswith("CHACHA20"):
            return ChaCha20Poly1305(self.key)
        if "CCM" in self.aead:
            return AESCCM(self.key, tag_length=self.tag_len)
        return AESGCM(self.key)

    def open(self, number, header, body):
        """Decrypt record ``number``; return ``(inner type, plaintext, padding bytes)``.

        Raises ``cryptography.exceptions.InvalidTag`` when the tag does not hold.
        """
        explicit, sealed = body[:self.explicit_nonce_len], body[self.explicit_nonce_len:]
        if explicit:
            nonce = self.iv + explicit
        else:
            nonce = bytes(a ^ b for a, b in zip(self.iv, number.to_bytes(12, "big")))
        if self.version == "1.3":
            inner = self._cipher().decrypt(nonce, sealed, header)
            stripped = inner.rstrip(b"\0")
            if not stripped:
                raise InvalidTag("TLS 1.3 record with no content type")
            return stripped[-1], stripped[:-1], len(inner) - len(stripped)
        length = len(sealed) - self.tag_len
        aad = number.to_bytes(8, "big") + header[:3] + length.to_bytes(2, "big")
        return header[0], self._cipher().decrypt(nonce, sealed, aad), 0


def _master_secret(info, keylog, psk):
    """The TLS 1.2 master secret: logged, or made from ``psk`` for a PSK suite."""
    logged = keylog.get(info.client_random, "CLIENT_RANDOM") if keylog else None
    if logged is not None:
        return logged
    if info.suite.psk and psk is not None:
        premaster = psk_premaster(psk)
        if info.extended_master_secret:
            messages = []
            for _, message in info.transcript:
                messages.append(message)
                if message[0] == HS_CLIENT_KEY_EXCHANGE:
                    break
            else:
                raise TlsError("extended master secret: no ClientKeyExchange in the capture")
            session_hash = hashlib.new(info.suite.hash.lower(), b"".join(messages)).digest()
            return prf(premaster, b"extended master secret", session_hash, 48, info.suite.hash)
        return prf(premaster, b"master secret", info.client_random + info.server_random, 48,
                   info.suite.hash)
    if info.suite.psk:
        raise TlsError("PSK suite: no CLIENT_RANDOM in the key log and no --psk given")
    raise TlsError("no CLIENT_RANDOM for this ClientHello in the key log")


def derive_keys(info, keylog, psk=None):
    """``{"client": TrafficKeys, "server": TrafficKeys}`` of the application traffic.

    Raises :class:`TlsError` naming what is missing (the secrets themselves
    are never part of the message).
    """
    s = info.suite
    if s.aead is None:
        raise TlsError(f"{s.name}: not an AEAD suite")
    if info.version == "1.3":
        keys = {}
        for side, label in (("client", "CLIENT_TRAFFIC_SECRET_0"),
                            ("server", "SERVER_TRAFFIC_SECRET_0")):
            secret = keylog.get(info.client_random, label) if keylog else None
            if secret is None:
                raise TlsError(f"no {label} for this ClientHello in the key log")
            keys[side] = TrafficKeys.tls13(secret, s)
        return keys
    if info.version != "1.2":
        raise TlsError(f"TLS {info.version}: AEAD suites need TLS 1.2 or 1.3")
    master = _master_secret(info, keylog, psk)
    iv_len = s.fixed_iv_len
    block = prf(master, b"key expansion", info.server_random + info.client_random,
                2 * (s.key_len + iv_len), s.hash)
    ck, sk = block[:s.key_len], block[s.key_len:2 * s.key_len]
    civ, siv = block[2 * s.key_len:2 * s.key_len + iv_len], block[2 * s.key_len + iv_len:]
    return {"client": TrafficKeys("1.2", s.aead, ck, civ, None, s.hash, s.tag_len),
            "server": TrafficKeys("1.2", s.aead, sk, siv, None, s.hash, s.tag_len)}


# --- records under the application keys -------------------------------------------------------------

@dataclasses.dataclass
class AppRecord:
    """A record under application traffic keys, opened.

    Attributes
    ----------
    record : Record
    number : int
        Record number under its keys (the AEAD sequence number).
    generation : int
        TLS 1.3 traffic secret generation (0 until a KeyUpdate).
    inner_type : int or None
        Content type (TLS 1.3: the inner one); None if the record could not
        be opened (not captured whole).
    plaintext : bytes or None
    padding : int
        TLS 1.3 zero padding after the inner type.
    """
    record: Record
    number: int
    generation: int = 0
    inner_type: int = None
    plaintext: bytes = None
    padding: int = 0

    @property
    def offset(self):
        return self.record.offset


def _key_update(plaintext):
    """The TLS 1.3 handshake plaintext holds a KeyUpdate."""
    pos = 0
    while pos + 4 <= len(plaintext):
        if plaintext[pos] == HS_KEY_UPDATE:
            return True
        pos += 4 + int.from_bytes(plaintext[pos + 1:pos + 4], "big")
    return False


def application_records(records, info, keys):
    """The records of one direction under its application traffic keys.

    Parameters
    ----------
    records : list[Record]
        The direction's records (:func:`split_records`).
    info : Handshake
    keys : TrafficKeys
        Generation 0 of this direction.

    Returns
    -------
    (list[AppRecord], int)
        The records from where application keys take over, and the number
        of records before that (handshake, ChangeCipherSpec, early data).

    Raises
    ------
    TlsError
        Keys that do not open the first record they should (a wrong key log).
    """
    if info.version == "1.2":
        ccs = next((i for i, r in enumerate(records) if r.content_type == CT_CHANGE_CIPHER_SPEC),
                   None)
        if ccs is None or ccs + 1 >= len(records):
            return [], len(records)
        finished = records[ccs + 1]
        if finished.complete:
            try:
                keys.open(0, finished.header, finished.body)
            except InvalidTag:
                raise TlsError("the key log's keys do not open the encrypted Finished "
                               "(wrong key log?)") from None
        start, number = ccs + 2, 1
    else:
        start = number = None
        for i, r in enumerate(records):
            if r.content_type != CT_APPLICATION_DATA or not r.complete:
                continue
            try:
                keys.open(0, r.header, r.body)
            except InvalidTag:
                continue            # handshake keys, or early data: not ours
            start, number = i, 0
            break
        if start is None:
            encrypted = sum(r.content_type == CT_APPLICATION_DATA for r in records)
            if encrypted > 6:       # more than any handshake flight holds
                raise TlsError(f"none of {encrypted} encrypted records opens with the "
                               f"application keys (wrong key log?)")
            return [], len(records)
    out = []
    for r in records[start:]:
        app = AppRecord(r, number, keys.generation)
        if r.complete:
            try:
                app.inner_type, app.plaintext, app.padding = keys.open(number, r.header, r.body)
            except InvalidTag:
                raise TlsError(f"record {number} at stream offset {r.offset} does not open "
                               f"with its keys") from None
        out.append(app)
        number += 1
        if (info.version == "1.3" and app.inner_type == CT_HANDSHAKE
                and _key_update(app.plaintext)):
            keys, number = keys.next_generation(), 0
    return out, start
