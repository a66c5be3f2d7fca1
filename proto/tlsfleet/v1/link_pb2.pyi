from tlsfleet.v1 import agent_pb2 as _agent_pb2
from tlsfleet.v1 import probe_pb2 as _probe_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("request_id", "registration", "heartbeat", "probe_result", "description", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    PROBE_RESULT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    registration: Registration
    heartbeat: Heartbeat
    probe_result: _probe_pb2.ProbeResult
    description: _agent_pb2.AgentDescription
    error: RequestError
    def __init__(self, request_id: _Optional[str] = ..., registration: _Optional[_Union[Registration, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., probe_result: _Optional[_Union[_probe_pb2.ProbeResult, _Mapping]] = ..., description: _Optional[_Union[_agent_pb2.AgentDescription, _Mapping]] = ..., error: _Optional[_Union[RequestError, _Mapping]] = ...) -> None: ...

class Registration(_message.Message):
    __slots__ = ("name", "version", "labels", "facts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    labels: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Label]
    facts: _agent_pb2.HostFacts
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[_agent_pb2.Label, _Mapping]]] = ..., facts: _Optional[_Union[_agent_pb2.HostFacts, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("agent_time_ns", "probes_in_flight")
    AGENT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    PROBES_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    agent_time_ns: int
    probes_in_flight: int
    def __init__(self, agent_time_ns: _Optional[int] = ..., probes_in_flight: _Optional[int] = ...) -> None: ...

class RequestError(_message.Message):
    __slots__ = ("code", "message")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CODE_UNSPECIFIED: _ClassVar[RequestError.Code]
        CODE_INVALID: _ClassVar[RequestError.Code]
        CODE_BUSY: _ClassVar[RequestError.Code]
        CODE_INTERNAL: _ClassVar[RequestError.Code]
    CODE_UNSPECIFIED: RequestError.Code
    CODE_INVALID: RequestError.Code
    CODE_BUSY: RequestError.Code
    CODE_INTERNAL: RequestError.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: RequestError.Code
    message: str
    def __init__(self, code: _Optional[_Union[RequestError.Code, str]] = ..., message: _Optional[str] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("request_id", "timeout_s", "welcome", "refusal", "probe", "describe", "cancel")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    DESCRIBE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    timeout_s: float
    welcome: Welcome
    refusal: Refusal
    probe: _probe_pb2.ProbeRequest
    describe: _agent_pb2.DescribeRequest
    cancel: Cancel
    def __init__(self, request_id: _Optional[str] = ..., timeout_s: _Optional[float] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., refusal: _Optional[_Union[Refusal, _Mapping]] = ..., probe: _Optional[_Union[_probe_pb2.ProbeRequest, _Mapping]] = ..., describe: _Optional[_Union[_agent_pb2.DescribeRequest, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("coordinator", "heartbeat_interval_s")
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    coordinator: str
    heartbeat_interval_s: float
    def __init__(self, coordinator: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("reason", "retry")
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    reason: str
    retry: bool
    def __init__(self, reason: _Optional[str] = ..., retry: _Optional[bool] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("selector", "timeout_s", "include_roots", "describe", "names")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ROOTS_FIELD_NUMBER: _ClassVar[int]
    DESCRIBE_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    selector: str
    timeout_s: float
    include_roots: bool
    describe: bool
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, selector: _Optional[str] = ..., timeout_s: _Optional[float] = ..., include_roots: _Optional[bool] = ..., describe: _Optional[bool] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class LinkedAgent(_message.Message):
    __slots__ = ("name", "address", "labels", "state", "link_state", "error", "description", "clock_offset_ms", "clock_error_ms", "has_clock", "duration_ms", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LINK_STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_ERROR_MS_FIELD_NUMBER: _ClassVar[int]
    HAS_CLOCK_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    labels: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Label]
    state: str
    link_state: str
    error: str
    description: _agent_pb2.AgentDescription
    clock_offset_ms: float
    clock_error_ms: float
    has_clock: bool
    duration_ms: float
    version: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[_agent_pb2.Label, _Mapping]]] = ..., state: _Optional[str] = ..., link_state: _Optional[str] = ..., error: _Optional[str] = ..., description: _Optional[_Union[_agent_pb2.AgentDescription, _Mapping]] = ..., clock_offset_ms: _Optional[float] = ..., clock_error_ms: _Optional[float] = ..., has_clock: _Optional[bool] = ..., duration_ms: _Optional[float] = ..., version: _Optional[str] = ...) -> None: ...

class ListAgentsReply(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[LinkedAgent]
    def __init__(self, agents: _Optional[_Iterable[_Union[LinkedAgent, _Mapping]]] = ...) -> None: ...

class FleetProbeRequest(_message.Message):
    __slots__ = ("agent", "timeout_s", "request")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    agent: str
    timeout_s: float
    request: _probe_pb2.ProbeRequest
    def __init__(self, agent: _Optional[str] = ..., timeout_s: _Optional[float] = ..., request: _Optional[_Union[_probe_pb2.ProbeRequest, _Mapping]] = ...) -> None: ...

class FleetProbeOutcome(_message.Message):
    __slots__ = ("name", "address", "labels", "state", "error", "result", "agent_version", "clock_offset_ms", "clock_error_ms", "has_clock", "duration_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_ERROR_MS_FIELD_NUMBER: _ClassVar[int]
    HAS_CLOCK_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    labels: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Label]
    state: str
    error: str
    result: _probe_pb2.ProbeResult
    agent_version: str
    clock_offset_ms: float
    clock_error_ms: float
    has_clock: bool
    duration_ms: float
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[_agent_pb2.Label, _Mapping]]] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., result: _Optional[_Union[_probe_pb2.ProbeResult, _Mapping]] = ..., agent_version: _Optional[str] = ..., clock_offset_ms: _Optional[float] = ..., clock_error_ms: _Optional[float] = ..., has_clock: _Optional[bool] = ..., duration_ms: _Optional[float] = ...) -> None: ...
