"""What one probe asks for and what it observed: frozen dataclasses used inside the process.

Protobuf appears only at the wire edge (`tlsfleet.agent.wire`); everything else speaks these types.
Times are integer nanoseconds since the Unix epoch, durations float milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache


class Verdict(StrEnum):
    """The closed set of chain-verification outcomes, aligned with OpenSSL's verify codes."""

    OK = "ok"
    NOT_YET_VALID = "not_yet_valid"  # 9
    EXPIRED = "expired"  # 10
    SELF_SIGNED = "self_signed"  # 18: the leaf is its own, untrusted, issuer
    UNTRUSTED_ROOT = "untrusted_root"  # 19: a self-signed root in the chain that the store lacks
    UNKNOWN_ISSUER = "unknown_issuer"  # 20 (and 2): the last served certificate's issuer is nowhere
    LEAF_ONLY_UNVERIFIABLE = "leaf_only_unverifiable"  # 21: one certificate served, issuer unknown
    HOSTNAME_MISMATCH = "hostname_mismatch"  # 62
    IP_MISMATCH = "ip_mismatch"  # 64
    REVOKED = "revoked"  # 23
    INVALID = "invalid"  # a path exists but breaks policy: signature, CA flag, purpose, path length
    NO_CHAIN = "no_chain"  # nothing to judge: the handshake ended before a certificate arrived
    OTHER = "other"  # any other OpenSSL code; the code itself is kept beside the verdict


class Failure(StrEnum):
    """Why a phase of a probe did not complete. NONE when it did."""

    NONE = "none"
    DNS_ERROR = "dns_error"
    DNS_TIMEOUT = "dns_timeout"
    REFUSED = "refused"
    CONNECT_TIMEOUT = "connect_timeout"
    UNREACHABLE = "unreachable"
    CONNECT_ERROR = "connect_error"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    TLS_ALERT = "tls_alert"  # the server sent a fatal alert
    PROTOCOL_ERROR = "protocol_error"  # no common version/cipher, garbage, not TLS at all
    CLOSED = "closed"  # the peer closed or reset the connection mid-handshake
    CERT_VERIFY = "cert_verify"  # the native client rejected the chain (chain still captured)
    TOO_LARGE = "too_large"  # the server sent more handshake data than we accept
    INTERNAL = "internal"
    NOT_TLS = "not_tls"  # the peer answered with something that is not TLS
    RESET = "reset"  # the peer reset the connection mid-handshake
    NO_COMMON_VERSION = "no_common_version"  # client and server share no protocol version
    NO_COMMON_CIPHER = "no_common_cipher"  # ... or no cipher suite
    WEAK_KEY_EXCHANGE = "weak_key_exchange"  # the client refused the server's DH/EC group or key as too weak
    CERT_TOO_LARGE = "cert_too_large"  # the certificate message exceeds the client's limit (OpenSSL: 100 KiB)
    CLIENT_CERT_REQUIRED = "client_cert_required"  # the server demands a client certificate it did not get
    STARTTLS_UNSUPPORTED = "starttls_unsupported"  # the server does not offer STARTTLS (or refused it)
    STARTTLS_REFUSED = "starttls_refused"  # it turned the session away before STARTTLS (an error greeting)
    STARTTLS_BAD_REPLY = "starttls_bad_reply"  # the server's STARTTLS reply was not understood
    STARTTLS_TIMEOUT = "starttls_timeout"  # the STARTTLS exchange did not finish within the connect budget
    PROXY_REFUSED = "proxy_refused"  # the HTTPS proxy answered CONNECT with a non-2xx status
    PROXY_ERROR = "proxy_error"  # the proxy's answer was not HTTP, or it did not answer in time
    DENIED_BY_POLICY = "denied_by_policy"  # the agent's probe policy refused the address; nothing was sent


class Party(StrEnum):
    """Who refused: the side that ended the handshake."""

    NONE = ""
    CLIENT = "client"  # this host's TLS library refused what the server offered
    SERVER = "server"  # the server refused what this host offered (an alert, a close)


class Client(StrEnum):
    """The clients whose view an agent reports, in a closed set."""

    OPENSSL = "openssl"  # OpenSSL-based clients with the host's defaults and OpenSSL configuration
    PYTHON = "python"  # Python's ssl.create_default_context() on this host


class Starttls(StrEnum):
    """The plaintext protocol spoken before the TLS handshake, as `openssl s_client -starttls`."""

    NONE = "none"  # TLS from the first byte
    SMTP = "smtp"
    IMAP = "imap"
    POP3 = "pop3"
    FTP = "ftp"
    LDAP = "ldap"
    POSTGRES = "postgres"
    MYSQL = "mysql"
    XMPP = "xmpp"


class TlsVersion(StrEnum):
    TLS1_0 = "TLSv1"
    TLS1_1 = "TLSv1.1"
    TLS1_2 = "TLSv1.2"
    TLS1_3 = "TLSv1.3"


@dataclass(frozen=True)
class Target:
    """A TLS endpoint: host name or IP literal, and port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ProbeOptions:
    """Everything about a probe besides its target. Deadlines are seconds per phase."""

    sni: str | None = None  # override of the name sent in SNI; None sends the target host
    send_sni: bool = True  # False: no SNI at all, as `openssl s_client -noservername`
    alpn: tuple[str, ...] = ()
    min_version: TlsVersion | None = None
    max_version: TlsVersion | None = None
    pin_address: str | None = None  # probe this address only, skipping resolution
    max_addresses: int = 8
    resolve_timeout: float = 3.0
    connect_timeout: float = 3.0
    handshake_timeout: float = 5.0
    reference_time_ns: int | None = None  # the coordinator's notion of true time
    client_cert: str | None = None  # present the agent's client certificate of this name (--client-cert)
    starttls: Starttls = Starttls.NONE  # negotiate TLS inside this protocol first (--starttls)
    via_proxy: bool = False  # connect through the host's HTTPS_PROXY, honouring NO_PROXY (--via-proxy)


@dataclass(frozen=True)
class ProbeRequest:
    """One probe a coordinator asks of an agent: the target, how to reach it, and an id to match the answer."""

    target: Target
    options: ProbeOptions = field(default_factory=ProbeOptions)
    request_id: str = ""


@dataclass(frozen=True)
class Resolution:
    """What the host's own resolver returned for the target's name."""

    addresses: tuple[str, ...]
    duration_ms: float
    failure: Failure = Failure.NONE
    error: str = ""
    truncated_from: int = 0  # how many addresses there were before the cap; 0 when not capped


@dataclass(frozen=True)
class NativeVerdict:
    """What an OpenSSL client on this host with default settings concluded."""

    verdict: Verdict
    verify_code: int = 0
    verify_message: str = ""
    hostname_checked: bool = True  # False when no SNI was sent: OpenSSL then checks no name


@dataclass(frozen=True)
class Handshake:
    """How the handshake went: its failure in the closed set (NONE when it completed), what was negotiated."""

    failure: Failure = Failure.NONE
    error: str = ""
    tls_version: str = ""
    cipher: str = ""
    alpn: str = ""
    duration_ms: float = 0.0
    alert: str = ""  # the alert description when the server sent one ("certificate_required", ...)
    refused_by: Party = Party.NONE
    client_cert_requested: bool = False  # the server sent a CertificateRequest
    acceptable_ca_names: tuple[str, ...] = ()  # RFC 4514 names from that request, when it listed any
    client_cert: str = ""  # the name of the client certificate this probe presented ("" none)


@dataclass(frozen=True)
class ClientView:
    """What one named client on this host concludes about the handshake and the served chain."""

    client: Client
    verdict: Verdict
    verify_code: int = 0
    failure: Failure = Failure.NONE  # the handshake's outcome for this client
    error: str = ""
    tls_version: str = ""
    cipher: str = ""
    detail: str = ""  # why it differs from the openssl view, when it does


@dataclass(frozen=True)
class RootCertificate:
    """A root a store holds, as `tlsfleet agents` lists it."""

    sha256: str
    subject: str  # RFC 4514


@dataclass(frozen=True)
class TrustStore:
    """One trust store found on the host, identified by its content."""

    name: str  # "system", "ssl_cert_file", "certifi", "requests_ca_bundle", "java", "extra:<label>"...
    kind: str  # "file", "dir", "java-keystore"
    path: str
    root_count: int
    fingerprint: str  # sha256 over the sorted DER fingerprints of its roots, hex
    error: str = ""  # what could not be read; roots read before the problem still count
    roots: tuple[RootCertificate, ...] = ()  # listed only when asked for (Describe with include_roots)
    runtime: str = ""  # "" for the system's OpenSSL stores; "python", "java", "node" for a runtime's own
    found_by: str = ""  # why this store is judged: the interpreter, JRE or variable that uses it
    # In use by declaration: named by the operator (--runtime, --extra-store) or by a variable in the agent's
    # environment (REQUESTS_CA_BUNDLE, SSL_CERT_FILE, JAVA_HOME...), not merely found on the host.
    declared: bool = False


@dataclass(frozen=True)
class StoreVerdict:
    """The served chain judged offline against one trust store."""

    store: str  # TrustStore.name
    at_agent_time: Verdict
    at_reference_time: Verdict
    verified_path: tuple[str, ...] = ()  # sha256 fingerprints, leaf first, root last
    detail: str = ""
    verify_code: int = 0  # OpenSSL's X509_V_ERR code at agent time (0: ok)
    reference_verify_code: int = 0  # ... at the reference time
    strict_note: str = ""  # what the CA/Browser Forum profile (browsers, Go) would refuse that OpenSSL accepts
    same_as: tuple[str, ...] = ()  # other stores with the identical root set, judged by this one verdict


def per_store(verdicts: tuple[StoreVerdict, ...]) -> tuple[StoreVerdict, ...]:
    """One verdict per store: a verdict judged once for a group of identical stores, repeated for each."""
    if not any(v.same_as for v in verdicts):
        return verdicts
    return _expanded(verdicts)


# A fleet's addresses mostly carry equal verdicts (one chain, one set of stores): expand each set once.
@lru_cache(maxsize=256)
def _expanded(verdicts: tuple[StoreVerdict, ...]) -> tuple[StoreVerdict, ...]:
    out: list[StoreVerdict] = []
    for v in verdicts:
        out.append(replace(v, same_as=()))
        out.extend(replace(v, store=name, same_as=()) for name in v.same_as)
    return tuple(out)


@dataclass(frozen=True)
class AiaFetch:
    """The issuer named by the last served certificate's AIA caIssuers URL, fetched by the agent."""

    url: str
    fetched: bool  # the URL answered
    error: str = ""
    certificate: bytes = b""  # the fetched issuer, DER
    completes_chain: bool = False  # with it, the chain verifies against the store OpenSSL uses by default
    verdict: Verdict = Verdict.NO_CHAIN  # that verdict


@dataclass(frozen=True)
class AddressResult:
    """What one address of the target did: the connection, the handshake, the served chain and its verdicts."""

    address: str
    connect_ms: float | None = None
    connect_failure: Failure = Failure.NONE
    connect_error: str = ""
    handshake: Handshake = field(default_factory=Handshake)
    chain: tuple[bytes, ...] = ()  # served chain, DER, in the order the server sent it
    native: NativeVerdict = field(default_factory=lambda: NativeVerdict(Verdict.NO_CHAIN))
    stores: tuple[StoreVerdict, ...] = ()
    aia: AiaFetch | None = None  # only when the agent may fetch and the issuer was missing
    views: tuple[ClientView, ...] = ()  # the openssl view first; python only when it differs
    proxy_status: int = 0  # the HTTP status the HTTPS proxy refused CONNECT with (PROXY_REFUSED); 0 otherwise


@dataclass(frozen=True)
class ProbeResult:
    """An agent's answer to one probe: the resolution, each address's result and the stores judged with."""

    target: Target
    sni: str | None  # the name actually sent in SNI, None when none was
    expected_name: str  # the name the certificate must cover
    resolution: Resolution
    addresses: tuple[AddressResult, ...]
    trust_stores: tuple[TrustStore, ...]
    agent_received_ns: int
    agent_replied_ns: int
    reference_time_ns: int | None = None
    request_id: str = ""
    starttls: Starttls = Starttls.NONE  # the protocol whose STARTTLS preceded every handshake
    proxy: str = ""  # the HTTPS proxy every connection went through (password redacted); "" direct


@dataclass(frozen=True)
class HostFacts:
    """The agent's host: what it runs, and how its TLS clients are set up (proxies, resolver, runtimes, client
    certificates)."""

    hostname: str
    os: str
    python_version: str
    openssl_version: str
    agent_version: str
    proxy_env: tuple[tuple[str, str], ...] = ()  # (name, value) of HTTPS_PROXY, NO_PROXY, ...
    resolv_conf: tuple[str, ...] = ()  # nameserver/search/options lines
    hosts_entries: tuple[str, ...] = ()  # /etc/hosts lines, filtered to the target when one is given
    ntp_synchronized: bool | None = None  # None when it cannot be read
    ntp_detail: str = ""
    gathered_ns: int = 0
    openssl_policy: tuple[tuple[str, str], ...] = ()  # the OpenSSL configuration in force (MinProtocol, ...)
    runtimes: tuple[tuple[str, str], ...] = ()  # (runtime, where and why it was found): python, java, node
    client_certs: tuple[str, ...] = ()  # names of the client certificates probes may present


@dataclass(frozen=True)
class AgentIdentity:
    """An agent's name, version and labels."""

    name: str
    version: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class AgentDescription:
    """An agent's answer to describe: who it is, its host and its trust stores, by its own clock."""

    identity: AgentIdentity
    facts: HostFacts
    trust_stores: tuple[TrustStore, ...]
    agent_time_ns: int
    probe_policy: tuple[str, ...] = ()  # the rules in force, in the order they are checked
