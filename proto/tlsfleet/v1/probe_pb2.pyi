from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_OK: _ClassVar[Verdict]
    VERDICT_NOT_YET_VALID: _ClassVar[Verdict]
    VERDICT_EXPIRED: _ClassVar[Verdict]
    VERDICT_SELF_SIGNED: _ClassVar[Verdict]
    VERDICT_UNTRUSTED_ROOT: _ClassVar[Verdict]
    VERDICT_UNKNOWN_ISSUER: _ClassVar[Verdict]
    VERDICT_LEAF_ONLY_UNVERIFIABLE: _ClassVar[Verdict]
    VERDICT_HOSTNAME_MISMATCH: _ClassVar[Verdict]
    VERDICT_IP_MISMATCH: _ClassVar[Verdict]
    VERDICT_REVOKED: _ClassVar[Verdict]
    VERDICT_INVALID: _ClassVar[Verdict]
    VERDICT_NO_CHAIN: _ClassVar[Verdict]
    VERDICT_OTHER: _ClassVar[Verdict]

class Failure(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_NONE: _ClassVar[Failure]
    FAILURE_DNS_ERROR: _ClassVar[Failure]
    FAILURE_DNS_TIMEOUT: _ClassVar[Failure]
    FAILURE_REFUSED: _ClassVar[Failure]
    FAILURE_CONNECT_TIMEOUT: _ClassVar[Failure]
    FAILURE_UNREACHABLE: _ClassVar[Failure]
    FAILURE_CONNECT_ERROR: _ClassVar[Failure]
    FAILURE_HANDSHAKE_TIMEOUT: _ClassVar[Failure]
    FAILURE_TLS_ALERT: _ClassVar[Failure]
    FAILURE_PROTOCOL_ERROR: _ClassVar[Failure]
    FAILURE_CLOSED: _ClassVar[Failure]
    FAILURE_CERT_VERIFY: _ClassVar[Failure]
    FAILURE_TOO_LARGE: _ClassVar[Failure]
    FAILURE_INTERNAL: _ClassVar[Failure]
    FAILURE_NOT_TLS: _ClassVar[Failure]
    FAILURE_RESET: _ClassVar[Failure]
    FAILURE_NO_COMMON_VERSION: _ClassVar[Failure]
    FAILURE_NO_COMMON_CIPHER: _ClassVar[Failure]
    FAILURE_WEAK_KEY_EXCHANGE: _ClassVar[Failure]
    FAILURE_CERT_TOO_LARGE: _ClassVar[Failure]
    FAILURE_CLIENT_CERT_REQUIRED: _ClassVar[Failure]
    FAILURE_STARTTLS_UNSUPPORTED: _ClassVar[Failure]
    FAILURE_STARTTLS_BAD_REPLY: _ClassVar[Failure]
    FAILURE_STARTTLS_TIMEOUT: _ClassVar[Failure]
    FAILURE_PROXY_REFUSED: _ClassVar[Failure]
    FAILURE_PROXY_ERROR: _ClassVar[Failure]
    FAILURE_DENIED_BY_POLICY: _ClassVar[Failure]
    FAILURE_STARTTLS_REFUSED: _ClassVar[Failure]

class Client(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLIENT_UNSPECIFIED: _ClassVar[Client]
    CLIENT_OPENSSL: _ClassVar[Client]
    CLIENT_PYTHON: _ClassVar[Client]

class TlsVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TLS_VERSION_UNSPECIFIED: _ClassVar[TlsVersion]
    TLS_VERSION_1_0: _ClassVar[TlsVersion]
    TLS_VERSION_1_1: _ClassVar[TlsVersion]
    TLS_VERSION_1_2: _ClassVar[TlsVersion]
    TLS_VERSION_1_3: _ClassVar[TlsVersion]
VERDICT_UNSPECIFIED: Verdict
VERDICT_OK: Verdict
VERDICT_NOT_YET_VALID: Verdict
VERDICT_EXPIRED: Verdict
VERDICT_SELF_SIGNED: Verdict
VERDICT_UNTRUSTED_ROOT: Verdict
VERDICT_UNKNOWN_ISSUER: Verdict
VERDICT_LEAF_ONLY_UNVERIFIABLE: Verdict
VERDICT_HOSTNAME_MISMATCH: Verdict
VERDICT_IP_MISMATCH: Verdict
VERDICT_REVOKED: Verdict
VERDICT_INVALID: Verdict
VERDICT_NO_CHAIN: Verdict
VERDICT_OTHER: Verdict
FAILURE_NONE: Failure
FAILURE_DNS_ERROR: Failure
FAILURE_DNS_TIMEOUT: Failure
FAILURE_REFUSED: Failure
FAILURE_CONNECT_TIMEOUT: Failure
FAILURE_UNREACHABLE: Failure
FAILURE_CONNECT_ERROR: Failure
FAILURE_HANDSHAKE_TIMEOUT: Failure
FAILURE_TLS_ALERT: Failure
FAILURE_PROTOCOL_ERROR: Failure
FAILURE_CLOSED: Failure
FAILURE_CERT_VERIFY: Failure
FAILURE_TOO_LARGE: Failure
FAILURE_INTERNAL: Failure
FAILURE_NOT_TLS: Failure
FAILURE_RESET: Failure
FAILURE_NO_COMMON_VERSION: Failure
FAILURE_NO_COMMON_CIPHER: Failure
FAILURE_WEAK_KEY_EXCHANGE: Failure
FAILURE_CERT_TOO_LARGE: Failure
FAILURE_CLIENT_CERT_REQUIRED: Failure
FAILURE_STARTTLS_UNSUPPORTED: Failure
FAILURE_STARTTLS_BAD_REPLY: Failure
FAILURE_STARTTLS_TIMEOUT: Failure
FAILURE_PROXY_REFUSED: Failure
FAILURE_PROXY_ERROR: Failure
FAILURE_DENIED_BY_POLICY: Failure
FAILURE_STARTTLS_REFUSED: Failure
CLIENT_UNSPECIFIED: Client
CLIENT_OPENSSL: Client
CLIENT_PYTHON: Client
TLS_VERSION_UNSPECIFIED: TlsVersion
TLS_VERSION_1_0: TlsVersion
TLS_VERSION_1_1: TlsVersion
TLS_VERSION_1_2: TlsVersion
TLS_VERSION_1_3: TlsVersion

class Target(_message.Message):
    __slots__ = ("host", "port")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class ProbeOptions(_message.Message):
    __slots__ = ("sni", "no_sni", "alpn", "min_version", "max_version", "pin_address", "max_addresses", "resolve_timeout_s", "connect_timeout_s", "handshake_timeout_s", "reference_time_ns", "client_cert", "starttls", "via_proxy")
    SNI_FIELD_NUMBER: _ClassVar[int]
    NO_SNI_FIELD_NUMBER: _ClassVar[int]
    ALPN_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_VERSION_FIELD_NUMBER: _ClassVar[int]
    PIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MAX_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    CONNECT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERT_FIELD_NUMBER: _ClassVar[int]
    STARTTLS_FIELD_NUMBER: _ClassVar[int]
    VIA_PROXY_FIELD_NUMBER: _ClassVar[int]
    sni: str
    no_sni: bool
    alpn: _containers.RepeatedScalarFieldContainer[str]
    min_version: TlsVersion
    max_version: TlsVersion
    pin_address: str
    max_addresses: int
    resolve_timeout_s: float
    connect_timeout_s: float
    handshake_timeout_s: float
    reference_time_ns: int
    client_cert: str
    starttls: str
    via_proxy: bool
    def __init__(self, sni: _Optional[str] = ..., no_sni: _Optional[bool] = ..., alpn: _Optional[_Iterable[str]] = ..., min_version: _Optional[_Union[TlsVersion, str]] = ..., max_version: _Optional[_Union[TlsVersion, str]] = ..., pin_address: _Optional[str] = ..., max_addresses: _Optional[int] = ..., resolve_timeout_s: _Optional[float] = ..., connect_timeout_s: _Optional[float] = ..., handshake_timeout_s: _Optional[float] = ..., reference_time_ns: _Optional[int] = ..., client_cert: _Optional[str] = ..., starttls: _Optional[str] = ..., via_proxy: _Optional[bool] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("target", "options", "request_id")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    target: Target
    options: ProbeOptions
    request_id: str
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., options: _Optional[_Union[ProbeOptions, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Resolution(_message.Message):
    __slots__ = ("addresses", "duration_ms", "failure", "error", "truncated_from")
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FROM_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    duration_ms: float
    failure: Failure
    error: str
    truncated_from: int
    def __init__(self, addresses: _Optional[_Iterable[str]] = ..., duration_ms: _Optional[float] = ..., failure: _Optional[_Union[Failure, str]] = ..., error: _Optional[str] = ..., truncated_from: _Optional[int] = ...) -> None: ...

class NativeVerdict(_message.Message):
    __slots__ = ("verdict", "verify_code", "verify_message", "hostname_checked")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    VERIFY_CODE_FIELD_NUMBER: _ClassVar[int]
    VERIFY_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_CHECKED_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    verify_code: int
    verify_message: str
    hostname_checked: bool
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., verify_code: _Optional[int] = ..., verify_message: _Optional[str] = ..., hostname_checked: _Optional[bool] = ...) -> None: ...

class Handshake(_message.Message):
    __slots__ = ("failure", "error", "tls_version", "cipher", "alpn", "duration_ms", "alert", "refused_by", "client_cert_requested", "acceptable_ca_names", "client_cert")
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TLS_VERSION_FIELD_NUMBER: _ClassVar[int]
    CIPHER_FIELD_NUMBER: _ClassVar[int]
    ALPN_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_BY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERT_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTABLE_CA_NAMES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERT_FIELD_NUMBER: _ClassVar[int]
    failure: Failure
    error: str
    tls_version: str
    cipher: str
    alpn: str
    duration_ms: float
    alert: str
    refused_by: str
    client_cert_requested: bool
    acceptable_ca_names: _containers.RepeatedScalarFieldContainer[str]
    client_cert: str
    def __init__(self, failure: _Optional[_Union[Failure, str]] = ..., error: _Optional[str] = ..., tls_version: _Optional[str] = ..., cipher: _Optional[str] = ..., alpn: _Optional[str] = ..., duration_ms: _Optional[float] = ..., alert: _Optional[str] = ..., refused_by: _Optional[str] = ..., client_cert_requested: _Optional[bool] = ..., acceptable_ca_names: _Optional[_Iterable[str]] = ..., client_cert: _Optional[str] = ...) -> None: ...

class ClientView(_message.Message):
    __slots__ = ("client", "verdict", "verify_code", "failure", "error", "tls_version", "cipher", "detail")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    VERIFY_CODE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TLS_VERSION_FIELD_NUMBER: _ClassVar[int]
    CIPHER_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    client: Client
    verdict: Verdict
    verify_code: int
    failure: Failure
    error: str
    tls_version: str
    cipher: str
    detail: str
    def __init__(self, client: _Optional[_Union[Client, str]] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., verify_code: _Optional[int] = ..., failure: _Optional[_Union[Failure, str]] = ..., error: _Optional[str] = ..., tls_version: _Optional[str] = ..., cipher: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class TrustStore(_message.Message):
    __slots__ = ("name", "kind", "path", "root_count", "fingerprint", "error", "roots", "runtime", "found_by", "declared")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ROOT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ROOTS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    FOUND_BY_FIELD_NUMBER: _ClassVar[int]
    DECLARED_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    path: str
    root_count: int
    fingerprint: str
    error: str
    roots: _containers.RepeatedCompositeFieldContainer[RootCertificate]
    runtime: str
    found_by: str
    declared: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., path: _Optional[str] = ..., root_count: _Optional[int] = ..., fingerprint: _Optional[str] = ..., error: _Optional[str] = ..., roots: _Optional[_Iterable[_Union[RootCertificate, _Mapping]]] = ..., runtime: _Optional[str] = ..., found_by: _Optional[str] = ..., declared: _Optional[bool] = ...) -> None: ...

class RootCertificate(_message.Message):
    __slots__ = ("sha256", "subject")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    subject: str
    def __init__(self, sha256: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class StoreVerdict(_message.Message):
    __slots__ = ("store", "at_agent_time", "at_reference_time", "verified_path", "detail", "verify_code", "reference_verify_code", "strict_note", "same_as")
    STORE_FIELD_NUMBER: _ClassVar[int]
    AT_AGENT_TIME_FIELD_NUMBER: _ClassVar[int]
    AT_REFERENCE_TIME_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_PATH_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    VERIFY_CODE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_VERIFY_CODE_FIELD_NUMBER: _ClassVar[int]
    STRICT_NOTE_FIELD_NUMBER: _ClassVar[int]
    SAME_AS_FIELD_NUMBER: _ClassVar[int]
    store: str
    at_agent_time: Verdict
    at_reference_time: Verdict
    verified_path: _containers.RepeatedScalarFieldContainer[str]
    detail: str
    verify_code: int
    reference_verify_code: int
    strict_note: str
    same_as: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, store: _Optional[str] = ..., at_agent_time: _Optional[_Union[Verdict, str]] = ..., at_reference_time: _Optional[_Union[Verdict, str]] = ..., verified_path: _Optional[_Iterable[str]] = ..., detail: _Optional[str] = ..., verify_code: _Optional[int] = ..., reference_verify_code: _Optional[int] = ..., strict_note: _Optional[str] = ..., same_as: _Optional[_Iterable[str]] = ...) -> None: ...

class AddressResult(_message.Message):
    __slots__ = ("address", "connect_ms", "connect_failure", "connect_error", "handshake", "chain", "native", "stores", "aia", "views", "proxy_status")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECT_MS_FIELD_NUMBER: _ClassVar[int]
    CONNECT_FAILURE_FIELD_NUMBER: _ClassVar[int]
    CONNECT_ERROR_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    NATIVE_FIELD_NUMBER: _ClassVar[int]
    STORES_FIELD_NUMBER: _ClassVar[int]
    AIA_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    PROXY_STATUS_FIELD_NUMBER: _ClassVar[int]
    address: str
    connect_ms: float
    connect_failure: Failure
    connect_error: str
    handshake: Handshake
    chain: _containers.RepeatedScalarFieldContainer[bytes]
    native: NativeVerdict
    stores: _containers.RepeatedCompositeFieldContainer[StoreVerdict]
    aia: AiaFetch
    views: _containers.RepeatedCompositeFieldContainer[ClientView]
    proxy_status: int
    def __init__(self, address: _Optional[str] = ..., connect_ms: _Optional[float] = ..., connect_failure: _Optional[_Union[Failure, str]] = ..., connect_error: _Optional[str] = ..., handshake: _Optional[_Union[Handshake, _Mapping]] = ..., chain: _Optional[_Iterable[bytes]] = ..., native: _Optional[_Union[NativeVerdict, _Mapping]] = ..., stores: _Optional[_Iterable[_Union[StoreVerdict, _Mapping]]] = ..., aia: _Optional[_Union[AiaFetch, _Mapping]] = ..., views: _Optional[_Iterable[_Union[ClientView, _Mapping]]] = ..., proxy_status: _Optional[int] = ...) -> None: ...

class AiaFetch(_message.Message):
    __slots__ = ("url", "fetched", "error", "certificate", "completes_chain", "verdict")
    URL_FIELD_NUMBER: _ClassVar[int]
    FETCHED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    COMPLETES_CHAIN_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    url: str
    fetched: bool
    error: str
    certificate: bytes
    completes_chain: bool
    verdict: Verdict
    def __init__(self, url: _Optional[str] = ..., fetched: _Optional[bool] = ..., error: _Optional[str] = ..., certificate: _Optional[bytes] = ..., completes_chain: _Optional[bool] = ..., verdict: _Optional[_Union[Verdict, str]] = ...) -> None: ...

class AgentRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ProbeResult(_message.Message):
    __slots__ = ("agent", "target", "sni", "expected_name", "resolution", "addresses", "trust_stores", "agent_received_ns", "agent_replied_ns", "reference_time_ns", "request_id", "starttls", "proxy")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SNI_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_NAME_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    TRUST_STORES_FIELD_NUMBER: _ClassVar[int]
    AGENT_RECEIVED_NS_FIELD_NUMBER: _ClassVar[int]
    AGENT_REPLIED_NS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STARTTLS_FIELD_NUMBER: _ClassVar[int]
    PROXY_FIELD_NUMBER: _ClassVar[int]
    agent: AgentRef
    target: Target
    sni: str
    expected_name: str
    resolution: Resolution
    addresses: _containers.RepeatedCompositeFieldContainer[AddressResult]
    trust_stores: _containers.RepeatedCompositeFieldContainer[TrustStore]
    agent_received_ns: int
    agent_replied_ns: int
    reference_time_ns: int
    request_id: str
    starttls: str
    proxy: str
    def __init__(self, agent: _Optional[_Union[AgentRef, _Mapping]] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., sni: _Optional[str] = ..., expected_name: _Optional[str] = ..., resolution: _Optional[_Union[Resolution, _Mapping]] = ..., addresses: _Optional[_Iterable[_Union[AddressResult, _Mapping]]] = ..., trust_stores: _Optional[_Iterable[_Union[TrustStore, _Mapping]]] = ..., agent_received_ns: _Optional[int] = ..., agent_replied_ns: _Optional[int] = ..., reference_time_ns: _Optional[int] = ..., request_id: _Optional[str] = ..., starttls: _Optional[str] = ..., proxy: _Optional[str] = ...) -> None: ...
