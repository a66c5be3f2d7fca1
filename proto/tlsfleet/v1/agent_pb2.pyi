from tlsfleet.v1 import probe_pb2 as _probe_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ("target_host", "include_roots")
    TARGET_HOST_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ROOTS_FIELD_NUMBER: _ClassVar[int]
    target_host: str
    include_roots: bool
    def __init__(self, target_host: _Optional[str] = ..., include_roots: _Optional[bool] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class HostFacts(_message.Message):
    __slots__ = ("hostname", "os", "python_version", "openssl_version", "agent_version", "proxy_env", "resolv_conf", "hosts_entries", "ntp_synchronized", "ntp_detail", "gathered_ns", "openssl_policy", "runtimes", "client_certs")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPENSSL_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROXY_ENV_FIELD_NUMBER: _ClassVar[int]
    RESOLV_CONF_FIELD_NUMBER: _ClassVar[int]
    HOSTS_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NTP_SYNCHRONIZED_FIELD_NUMBER: _ClassVar[int]
    NTP_DETAIL_FIELD_NUMBER: _ClassVar[int]
    GATHERED_NS_FIELD_NUMBER: _ClassVar[int]
    OPENSSL_POLICY_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERTS_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    os: str
    python_version: str
    openssl_version: str
    agent_version: str
    proxy_env: _containers.RepeatedCompositeFieldContainer[Label]
    resolv_conf: _containers.RepeatedScalarFieldContainer[str]
    hosts_entries: _containers.RepeatedScalarFieldContainer[str]
    ntp_synchronized: bool
    ntp_detail: str
    gathered_ns: int
    openssl_policy: _containers.RepeatedCompositeFieldContainer[Label]
    runtimes: _containers.RepeatedCompositeFieldContainer[Label]
    client_certs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hostname: _Optional[str] = ..., os: _Optional[str] = ..., python_version: _Optional[str] = ..., openssl_version: _Optional[str] = ..., agent_version: _Optional[str] = ..., proxy_env: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., resolv_conf: _Optional[_Iterable[str]] = ..., hosts_entries: _Optional[_Iterable[str]] = ..., ntp_synchronized: _Optional[bool] = ..., ntp_detail: _Optional[str] = ..., gathered_ns: _Optional[int] = ..., openssl_policy: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., runtimes: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., client_certs: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentDescription(_message.Message):
    __slots__ = ("agent", "labels", "facts", "trust_stores", "agent_time_ns", "probe_policy")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    TRUST_STORES_FIELD_NUMBER: _ClassVar[int]
    AGENT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    PROBE_POLICY_FIELD_NUMBER: _ClassVar[int]
    agent: _probe_pb2.AgentRef
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    facts: HostFacts
    trust_stores: _containers.RepeatedCompositeFieldContainer[_probe_pb2.TrustStore]
    agent_time_ns: int
    probe_policy: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent: _Optional[_Union[_probe_pb2.AgentRef, _Mapping]] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., facts: _Optional[_Union[HostFacts, _Mapping]] = ..., trust_stores: _Optional[_Iterable[_Union[_probe_pb2.TrustStore, _Mapping]]] = ..., agent_time_ns: _Optional[int] = ..., probe_policy: _Optional[_Iterable[str]] = ...) -> None: ...

class TaggedProbeRequest(_message.Message):
    __slots__ = ("tag", "request", "timeout_s")
    TAG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    tag: int
    request: _probe_pb2.ProbeRequest
    timeout_s: float
    def __init__(self, tag: _Optional[int] = ..., request: _Optional[_Union[_probe_pb2.ProbeRequest, _Mapping]] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class ProbeBatch(_message.Message):
    __slots__ = ("probes",)
    PROBES_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedCompositeFieldContainer[TaggedProbeRequest]
    def __init__(self, probes: _Optional[_Iterable[_Union[TaggedProbeRequest, _Mapping]]] = ...) -> None: ...

class TaggedProbeResult(_message.Message):
    __slots__ = ("tag", "result", "refused_code", "refused")
    TAG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_CODE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    tag: int
    result: _probe_pb2.ProbeResult
    refused_code: str
    refused: str
    def __init__(self, tag: _Optional[int] = ..., result: _Optional[_Union[_probe_pb2.ProbeResult, _Mapping]] = ..., refused_code: _Optional[str] = ..., refused: _Optional[str] = ...) -> None: ...

class ProbeResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TaggedProbeResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TaggedProbeResult, _Mapping]]] = ...) -> None: ...
