"""The few TLS handshake messages a probe reads for itself, as OpenSSL's message callback hands them over.

OpenSSL passes every handshake message it reads (decrypted, header included) to the callback that
Python exposes as `SSLContext._msg_callback`. From those the probe learns what the server chose even when
the handshake then fails: the version and cipher (ServerHello), ALPN (ServerHello or EncryptedExtensions),
and whether it asked for a client certificate, from which CAs (CertificateRequest). Alerts come the same way:
the first fatal one the server sent names the refusal by its RFC name, and the first warning (which OpenSSL
passes over) tells what a server that then hangs up warned of. Parsing never raises: a malformed
message yields nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

__all__ = [
    "CERTIFICATE",
    "CERTIFICATE_REQUEST",
    "ENCRYPTED_EXTENSIONS",
    "SERVER_HELLO",
    "ServerHello",
    "Transcript",
    "alert_name",
    "certificate_authorities",
    "distinguished_name",
    "version_name",
]

# Handshake message types (RFC 8446 section 4, RFC 5246 section 7.4).
SERVER_HELLO = 2
NEW_SESSION_TICKET = 4
ENCRYPTED_EXTENSIONS = 8
CERTIFICATE = 11
SERVER_KEY_EXCHANGE = 12
CERTIFICATE_REQUEST = 13
SERVER_HELLO_DONE = 14
CERTIFICATE_VERIFY = 15
FINISHED = 20
KEY_UPDATE = 24

_EXT_ALPN = 16
_EXT_SUPPORTED_VERSIONS = 43
_EXT_CERTIFICATE_AUTHORITIES = 47
# The ServerHello random that marks a HelloRetryRequest (RFC 8446 section 4.1.3).
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
MAX_CA_NAMES = 64

_VERSION_NAMES = {0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
FATAL, WARNING = 2, 1  # AlertLevel
CLOSE_NOTIFY = 0
# AlertDescription (RFC 8446 section 6, RFC 5246 section 7.2, RFC 6066, RFC 7301), by code.
_ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    111: "certificate_unobtainable",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    114: "bad_certificate_hash_value",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}


def version_name(code: int) -> str:
    return _VERSION_NAMES.get(code, f"0x{code:04x}")


def alert_name(code: int) -> str:
    """The RFC name of an alert description ("no_application_protocol"); "alert_N" for one no RFC names."""
    return _ALERT_NAMES.get(code, f"alert_{code}")


@dataclass(frozen=True)
class ServerHello:
    """What a ServerHello (or HelloRetryRequest) negotiated."""

    version: int  # the negotiated version (supported_versions when present, else legacy_version)
    cipher: int  # the IANA cipher suite code
    alpn: str = ""
    retry: bool = False  # a HelloRetryRequest


@dataclass
class Transcript:
    """What the server sent during one handshake, message by message (mutable: the callback fills it)."""

    received: list[int] = field(default_factory=list)  # handshake message types, in order
    hello: ServerHello | None = None
    alpn: str = ""
    certificate_requested: bool = False
    ca_names: tuple[str, ...] = ()
    after_handshake: int = 0  # records read once the handshake was complete (tickets, alerts, data)
    handshake_done: bool = False
    at_certificate: Transcript | None = None  # a copy as it stood once the server's Certificate was read
    # The first fatal alert the server sent during the handshake, by its description code (None: none). Read
    # off the wire because Python's table of OpenSSL reasons lacks some (no_application_protocol on 3.11).
    fatal_alert: int | None = None
    # The first warning alert other than close_notify during the handshake (None: none), which OpenSSL passes
    # over: a server that warns (unrecognized_name, user_canceled) and then hangs up says why only there.
    warning_alert: int | None = None

    def saw(self, message_type: int) -> bool:
        return message_type in self.received

    @property
    def past_certificate(self) -> bool:
        """The server's Certificate was followed by another server message: the client processed (and,
        when verifying, accepted) the chain before anything went wrong."""
        if CERTIFICATE not in self.received:
            return False
        index = self.received.index(CERTIFICATE)
        return any(
            m in (SERVER_KEY_EXCHANGE, CERTIFICATE_REQUEST, SERVER_HELLO_DONE, CERTIFICATE_VERIFY, FINISHED)
            for m in self.received[index + 1 :]
        )

    def alert(self, data: bytes) -> None:
        """One alert record's body as read (level, description)."""
        if len(data) != 2 or self.handshake_done:
            return
        if data[0] == FATAL and self.fatal_alert is None:
            self.fatal_alert = data[1]
        elif data[0] == WARNING and data[1] != CLOSE_NOTIFY and self.warning_alert is None:
            self.warning_alert = data[1]

    def handshake_message(self, data: bytes) -> None:
        """One handshake message as read (4-byte header included)."""
        if len(data) < 4:
            return
        message_type = data[0]
        body = data[4:]
        if self.handshake_done:
            self.after_handshake += 1
        self.received.append(message_type)
        if message_type == CERTIFICATE and self.at_certificate is None and not self.handshake_done:
            # A client that refuses the chain stops here; `handshake` reports what it had seen by then.
            self.at_certificate = Transcript(
                list(self.received), self.hello, self.alpn, self.certificate_requested, self.ca_names
            )
        if message_type == SERVER_HELLO:
            hello = server_hello(body)
            if hello is not None:
                self.hello = hello
                if hello.alpn:
                    self.alpn = hello.alpn
        elif message_type == ENCRYPTED_EXTENSIONS:
            alpn = _alpn(_extensions(body, 0))
            if alpn:
                self.alpn = alpn
        elif message_type == CERTIFICATE_REQUEST:
            self.certificate_requested = True
            tls13 = self.hello is not None and self.hello.version == 0x0304
            self.ca_names = tuple(
                name for name in (distinguished_name(der) for der in certificate_authorities(body, tls13=tls13)) if name
            )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(int.from_bytes(self.take(length_bytes), "big"))

    @property
    def left(self) -> int:
        return len(self.data) - self.at


def _extensions(body: bytes, at: int) -> dict[int, bytes]:
    """Extensions from `at` (their u16 length first); {} when absent or malformed."""
    try:
        reader = _Reader(body[at:])
        if not reader.left:
            return {}
        block = _Reader(reader.vector(2))
        out: dict[int, bytes] = {}
        while block.left:
            kind = block.u16()
            out.setdefault(kind, block.vector(2))
        return out
    except ValueError:
        return {}


def _alpn(extensions: dict[int, bytes]) -> str:
    data = extensions.get(_EXT_ALPN)
    if not data:
        return ""
    try:
        names = _Reader(_Reader(data).vector(2))
        return names.vector(1).decode("ascii", "replace")
    except ValueError:
        return ""


def server_hello(body: bytes) -> ServerHello | None:
    try:
        reader = _Reader(body)
        legacy_version = reader.u16()
        random = reader.take(32)
        reader.vector(1)  # legacy_session_id_echo
        cipher = reader.u16()
        reader.u8()  # legacy_compression_method
    except ValueError:
        return None
    extensions = _extensions(body, reader.at)
    version = legacy_version
    selected = extensions.get(_EXT_SUPPORTED_VERSIONS)
    if selected is not None and len(selected) == 2:
        version = int.from_bytes(selected, "big")
    return ServerHello(version=version, cipher=cipher, alpn=_alpn(extensions), retry=random == _HRR_RANDOM)


def certificate_authorities(body: bytes, *, tls13: bool) -> tuple[bytes, ...]:
    """The DER distinguished names a CertificateRequest lists (TLS 1.2 field, TLS 1.3 extension)."""
    try:
        reader = _Reader(body)
        if tls13:
            reader.vector(1)  # certificate_request_context
            data = _extensions(body, reader.at).get(_EXT_CERTIFICATE_AUTHORITIES)
            if not data:
                return ()
            names = _Reader(_Reader(data).vector(2))
        else:
            reader.vector(1)  # certificate_types
            reader.vector(2)  # supported_signature_algorithms
            names = _Reader(reader.vector(2))
        out: list[bytes] = []
        while names.left and len(out) < MAX_CA_NAMES:
            out.append(names.vector(2))
        return tuple(out)
    except ValueError:
        return ()


# ----------------------------------------------------------------------------------- distinguished names

_STRING_TAGS = {
    12: "utf-8",  # UTF8String
    18: "ascii",  # NumericString
    19: "ascii",  # PrintableString
    20: "latin-1",  # TeletexString (T61), as OpenSSL treats it
    22: "ascii",  # IA5String
    26: "ascii",  # VisibleString
    28: "utf-32-be",  # UniversalString
    30: "utf-16-be",  # BMPString
}


def _tlv(reader: _Reader) -> tuple[int, bytes]:
    tag = reader.u8()
    if tag & 0x1F == 0x1F:
        raise ValueError("high tag numbers are not used in names")
    first = reader.u8()
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 3:
            raise ValueError("length")
        length = int.from_bytes(reader.take(count), "big")
    return tag, reader.take(length)


def _oid(data: bytes) -> str:
    if not data:
        raise ValueError("empty OID")
    parts: list[int] = []
    value = 0
    for byte in data:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = parts[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(p) for p in (*head, *parts[1:]))


def distinguished_name(der: bytes) -> str:
    """RFC 4514 text of a DER Name, as `cryptography` writes it elsewhere in the agent; "" when unreadable."""
    try:
        tag, content = _tlv(_Reader(der))
        if tag != 0x30:
            return ""
        rdns = []
        outer = _Reader(content)
        while outer.left:
            set_tag, set_content = _tlv(outer)
            if set_tag != 0x31:
                return ""
            attributes = []
            inner = _Reader(set_content)
            while inner.left:
                seq_tag, seq_content = _tlv(inner)
                if seq_tag != 0x30:
                    return ""
                pair = _Reader(seq_content)
                oid_tag, oid = _tlv(pair)
                value_tag, value = _tlv(pair)
                if oid_tag != 0x06 or value_tag not in _STRING_TAGS:
                    return ""
                attributes.append(
                    x509.NameAttribute(ObjectIdentifier(_oid(oid)), value.decode(_STRING_TAGS[value_tag]))
                )
            rdns.append(x509.RelativeDistinguishedName(attributes))
        return x509.Name(rdns).rfc4514_string()
    except (ValueError, TypeError, UnicodeDecodeError):
        return ""
