"""Dataclass <-> tlsfleet.v1 protobuf: lossless round trips through real bytes, and tolerance of newer agents."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tlsfleet.agent.model import (
    AddressResult,
    AgentDescription,
    AgentIdentity,
    Client,
    ClientView,
    Failure,
    Handshake,
    HostFacts,
    NativeVerdict,
    Party,
    ProbeOptions,
    ProbeRequest,
    ProbeResult,
    Resolution,
    StoreVerdict,
    Target,
    TlsVersion,
    TrustStore,
    Verdict,
)
from tlsfleet.agent.wire import (
    description_from_wire,
    description_to_wire,
    request_from_wire,
    request_to_wire,
    result_from_wire,
    result_to_wire,
)
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.v1 import agent_pb2, probe_pb2

AGENT_DEFAULTS = ProbeOptions()


def _through_bytes_request(request: ProbeRequest, defaults: ProbeOptions = AGENT_DEFAULTS) -> ProbeRequest:
    data = request_to_wire(request).SerializeToString()
    return request_from_wire(probe_pb2.ProbeRequest.FromString(data), defaults)


def _through_bytes_result(result: ProbeResult, name: str = "web-1", version: str = "1.2.3") -> ProbeResult:
    data = result_to_wire(result, name, version).SerializeToString()
    back, back_name, back_version = result_from_wire(probe_pb2.ProbeResult.FromString(data))
    assert (back_name, back_version) == (name, version)
    return back


def _through_bytes_description(description: AgentDescription) -> AgentDescription:
    data = description_to_wire(description).SerializeToString()
    return description_from_wire(agent_pb2.AgentDescription.FromString(data))


# --- requests ----------------------------------------------------------------------------------------


def test_full_request_round_trips() -> None:
    request = ProbeRequest(
        target=Target("api.example.test", 8443),
        options=ProbeOptions(
            sni="other.example.test",
            send_sni=True,
            alpn=("h2", "http/1.1"),
            min_version=TlsVersion.TLS1_2,
            max_version=TlsVersion.TLS1_3,
            pin_address="2001:db8::7",
            max_addresses=3,
            resolve_timeout=1.5,
            connect_timeout=2.25,
            handshake_timeout=4.125,
            reference_time_ns=1_750_000_000_123_456_789,
            client_cert="billing",
        ),
        request_id="req-42",
    )
    assert _through_bytes_request(request) == request


def test_default_request_round_trips() -> None:
    request = ProbeRequest(Target("127.0.0.1", 443))
    assert _through_bytes_request(request) == request


@pytest.mark.parametrize("version", list(TlsVersion))
def test_every_tls_version_round_trips(version: TlsVersion) -> None:
    request = ProbeRequest(Target("h", 1), ProbeOptions(min_version=version, max_version=version))
    back = _through_bytes_request(request)
    assert back.options.min_version is version
    assert back.options.max_version is version


def test_request_sni_none_empty_and_set_are_distinct() -> None:
    for sni in (None, "", "name.example"):
        request = ProbeRequest(Target("h", 1), ProbeOptions(sni=sni))
        assert _through_bytes_request(request).options.sni == sni
    assert not request_to_wire(ProbeRequest(Target("h", 1))).options.HasField("sni")
    assert request_to_wire(ProbeRequest(Target("h", 1), ProbeOptions(sni=""))).options.HasField("sni")


def test_no_sni_round_trips() -> None:
    request = ProbeRequest(Target("h", 1), ProbeOptions(send_sni=False))
    assert request_to_wire(request).options.no_sni is True
    assert _through_bytes_request(request).options.send_sni is False


def test_unset_wire_fields_take_the_agent_defaults() -> None:
    defaults = ProbeOptions(max_addresses=5, resolve_timeout=1.0, connect_timeout=2.0, handshake_timeout=7.0)
    message = probe_pb2.ProbeRequest(target=probe_pb2.Target(host="h", port=443))
    request = request_from_wire(message, defaults)
    assert request == ProbeRequest(
        Target("h", 443),
        ProbeOptions(max_addresses=5, resolve_timeout=1.0, connect_timeout=2.0, handshake_timeout=7.0),
    )
    assert request.options.sni is None
    assert request.options.pin_address is None
    assert request.options.reference_time_ns is None
    assert request.options.min_version is None
    assert request.options.max_version is None


def test_set_wire_values_win_over_the_agent_defaults() -> None:
    defaults = ProbeOptions(max_addresses=5, resolve_timeout=1.0)
    message = probe_pb2.ProbeRequest(
        target=probe_pb2.Target(host="h", port=443),
        options=probe_pb2.ProbeOptions(max_addresses=2, resolve_timeout_s=0.5),
    )
    options = request_from_wire(message, defaults).options
    assert (options.max_addresses, options.resolve_timeout) == (2, 0.5)


def test_unknown_tls_version_number_means_no_bound() -> None:
    message = probe_pb2.ProbeRequest(target=probe_pb2.Target(host="h", port=443))
    message.options.min_version = 9  # a version this build does not know
    data = message.SerializeToString()
    request = request_from_wire(probe_pb2.ProbeRequest.FromString(data), AGENT_DEFAULTS)
    assert request.options.min_version is None


# --- results -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, ...]:
    pki = LabPKI("Wire")
    return (pki.issue_leaf("api.example.test", "127.0.0.1").der, pki.intermediate.der)


def _store(name: str = "system") -> TrustStore:
    return TrustStore(name, "file", f"/etc/ssl/{name}.pem", 140, "ab" * 32)


def _full_result(
    chain: tuple[bytes, ...], verdict: Verdict = Verdict.OK, failure: Failure = Failure.NONE
) -> ProbeResult:
    address = AddressResult(
        address="127.0.0.1",
        connect_ms=1.25,
        connect_failure=failure,
        connect_error="connect detail",
        handshake=Handshake(
            failure=failure,
            error="handshake detail",
            tls_version="TLSv1.3",
            cipher="TLS_AES_256_GCM_SHA384",
            alpn="h2",
            duration_ms=12.5,
            alert="handshake_failure",
            refused_by=Party.SERVER,
            client_cert_requested=True,
            acceptable_ca_names=("CN=Acme Client CA", "CN=Other CA,O=Other"),
            client_cert="billing",
        ),
        chain=chain,
        native=NativeVerdict(
            verdict, verify_code=20, verify_message="unable to get local issuer", hostname_checked=False
        ),
        stores=(
            StoreVerdict(
                "system",
                verdict,
                Verdict.OK,
                ("aa" * 32, "bb" * 32),
                "detail",
                verify_code=20,
                reference_verify_code=0,
                strict_note="CA basicConstraints not critical",
                same_as=("system_dir", "ssl_cert_file"),
            ),
            StoreVerdict("certifi", Verdict.EXPIRED, verdict),
        ),
        views=(
            ClientView(Client.OPENSSL, verdict, 20, failure, "openssl detail", "TLSv1.2", "AES128-SHA"),
            ClientView(Client.PYTHON, Verdict.NO_CHAIN, 0, Failure.NO_COMMON_CIPHER, "", "", "", "no kRSA"),
        ),
    )
    return ProbeResult(
        target=Target("api.example.test", 443),
        sni="api.example.test",
        expected_name="api.example.test",
        resolution=Resolution(("127.0.0.1", "::1"), 3.5, failure, "resolver detail", truncated_from=11),
        addresses=(address, AddressResult("::1")),
        trust_stores=(
            _store("system"),
            TrustStore(
                "java", "java-keystore", "/x/cacerts", 0, "", error="locked", runtime="java", found_by="JAVA_HOME=/x"
            ),
        ),
        agent_received_ns=1_750_000_000_000_000_001,
        agent_replied_ns=1_750_000_000_050_000_002,
        reference_time_ns=1_750_000_000_000_000_000,
        request_id="req-7",
    )


def test_full_result_round_trips(chain: tuple[bytes, ...]) -> None:
    result = _full_result(chain)
    back = _through_bytes_result(result)
    assert back == result
    assert back.addresses[0].chain == chain  # DER bytes survive untouched


def test_minimal_result_round_trips() -> None:
    result = ProbeResult(
        target=Target("h", 1),
        sni=None,
        expected_name="h",
        resolution=Resolution((), 0.0),
        addresses=(),
        trust_stores=(),
        agent_received_ns=0,
        agent_replied_ns=0,
    )
    assert _through_bytes_result(result) == result


def test_default_address_result_round_trips() -> None:
    # connect_ms None, no handshake, no chain, the NO_CHAIN native verdict with name checking on.
    address = AddressResult("10.0.0.1")
    result = replace(_minimal(), addresses=(address,))
    assert _through_bytes_result(result).addresses == (address,)


def _minimal() -> ProbeResult:
    return ProbeResult(Target("h", 1), None, "h", Resolution((), 0.0), (), (), 1, 2)


@pytest.mark.parametrize("connect_ms", [None, 0.0, 0.001, 2500.5])
def test_connect_ms_none_is_distinct_from_zero(connect_ms: float | None) -> None:
    result = replace(_minimal(), addresses=(AddressResult("10.0.0.1", connect_ms=connect_ms),))
    message = result_to_wire(result, "a", "v")
    assert message.addresses[0].HasField("connect_ms") is (connect_ms is not None)
    assert _through_bytes_result(result).addresses[0].connect_ms == connect_ms


@pytest.mark.parametrize("sni", [None, "", "api.example.test"])
def test_result_sni_none_is_distinct_from_empty(sni: str | None) -> None:
    result = replace(_minimal(), sni=sni)
    assert result_to_wire(result, "a", "v").HasField("sni") is (sni is not None)
    assert _through_bytes_result(result).sni == sni


@pytest.mark.parametrize("reference_time_ns", [None, 1, 1_750_000_000_000_000_000])
def test_reference_time_round_trips(reference_time_ns: int | None) -> None:
    result = replace(_minimal(), reference_time_ns=reference_time_ns)
    assert _through_bytes_result(result).reference_time_ns == reference_time_ns


@pytest.mark.parametrize("verdict", list(Verdict))
def test_every_verdict_round_trips_in_every_place(chain: tuple[bytes, ...], verdict: Verdict) -> None:
    back = _through_bytes_result(_full_result(chain, verdict=verdict))
    address = back.addresses[0]
    assert address.native.verdict is verdict
    assert address.stores[0].at_agent_time is verdict
    assert address.stores[1].at_reference_time is verdict


@pytest.mark.parametrize("failure", list(Failure))
def test_every_failure_round_trips_in_every_place(chain: tuple[bytes, ...], failure: Failure) -> None:
    back = _through_bytes_result(_full_result(chain, failure=failure))
    assert back.resolution.failure is failure
    assert back.addresses[0].connect_failure is failure
    assert back.addresses[0].handshake.failure is failure


def test_every_wire_verdict_and_failure_has_a_model_member() -> None:
    # A number the proto defines but the model lacks would silently read as OTHER / INTERNAL.
    verdict_names = {f"VERDICT_{m.name}" for m in Verdict}
    assert set(probe_pb2.Verdict.keys()) - verdict_names == {"VERDICT_UNSPECIFIED"}
    failure_names = {f"FAILURE_{m.name}" for m in Failure}
    assert set(probe_pb2.Failure.keys()) == failure_names


def test_wire_numbers_follow_the_proto_names() -> None:
    message = result_to_wire(_full_result((), verdict=Verdict.EXPIRED, failure=Failure.REFUSED), "a", "v")
    assert message.addresses[0].native.verdict == probe_pb2.VERDICT_EXPIRED
    assert message.addresses[0].connect_failure == probe_pb2.FAILURE_REFUSED
    assert message.resolution.failure == probe_pb2.FAILURE_REFUSED


def test_unknown_numbers_from_a_newer_agent(chain: tuple[bytes, ...]) -> None:
    message = result_to_wire(_full_result(chain), "new-agent", "9.0")
    unknown = 200  # numbers this coordinator's proto does not define
    address = message.addresses[0]
    address.native.verdict = unknown
    address.stores[0].at_agent_time = unknown
    address.stores[0].at_reference_time = unknown + 1
    address.connect_failure = unknown
    address.handshake.failure = unknown + 2
    message.resolution.failure = unknown + 3
    # Proto3 enums are open: the numbers survive encoding and reach the converter as numbers.
    parsed = probe_pb2.ProbeResult.FromString(message.SerializeToString())
    assert parsed.addresses[0].native.verdict == unknown
    result, name, version = result_from_wire(parsed)
    assert (name, version) == ("new-agent", "9.0")
    a = result.addresses[0]
    assert a.native.verdict is Verdict.OTHER
    assert a.native.verify_code == 20  # the code beside the verdict is kept
    assert a.stores[0].at_agent_time is Verdict.OTHER
    assert a.stores[0].at_reference_time is Verdict.OTHER
    assert a.connect_failure is Failure.INTERNAL
    assert a.handshake.failure is Failure.INTERNAL
    assert result.resolution.failure is Failure.INTERNAL
    # Everything else in the reply is still read.
    assert a.chain == chain
    assert a.stores[1].at_agent_time is Verdict.EXPIRED


def test_unspecified_verdict_reads_as_other() -> None:
    message = result_to_wire(replace(_minimal(), addresses=(AddressResult("10.0.0.1"),)), "a", "v")
    message.addresses[0].native.verdict = probe_pb2.VERDICT_UNSPECIFIED
    result, _, _ = result_from_wire(probe_pb2.ProbeResult.FromString(message.SerializeToString()))
    assert result.addresses[0].native.verdict is Verdict.OTHER


def test_result_encoding_is_real_protobuf(chain: tuple[bytes, ...]) -> None:
    data = result_to_wire(_full_result(chain), "web-1", "1.0").SerializeToString()
    assert isinstance(data, bytes)
    # The DER travels verbatim inside the encoding (a length-delimited bytes field).
    assert chain[0] in data
    assert chain[1] in data
    parsed = probe_pb2.ProbeResult()
    parsed.ParseFromString(data)
    assert parsed.agent.name == "web-1"
    assert list(parsed.addresses[0].chain) == list(chain)


# --- descriptions ------------------------------------------------------------------------------------


def _description(ntp: bool | None) -> AgentDescription:
    return AgentDescription(
        identity=AgentIdentity("web-1", "1.2.3", (("region", "eu-west"), ("env", "prod"))),
        facts=HostFacts(
            hostname="web-1.internal",
            os="Linux 6.1",
            python_version="3.11.9",
            openssl_version="OpenSSL 3.0.13",
            agent_version="1.2.3",
            proxy_env=(("HTTPS_PROXY", "http://proxy:3128"), ("NO_PROXY", ".internal")),
            resolv_conf=("nameserver 10.0.0.2", "search internal"),
            hosts_entries=("10.0.0.9 api.example.test",),
            ntp_synchronized=ntp,
            ntp_detail="timedatectl: yes" if ntp is not None else "",
            gathered_ns=1_750_000_000_000_000_000,
            openssl_policy=(("MinProtocol", "TLSv1.2"), ("CipherString", "DEFAULT@SECLEVEL=2")),
            runtimes=(("python", "/usr/bin/python3"), ("java", "java on PATH: /usr/bin/java")),
            client_certs=("billing",),
        ),
        trust_stores=(_store("system"), _store("certifi")),
        agent_time_ns=1_750_000_000_000_000_123,
    )


@pytest.mark.parametrize("ntp", [None, True, False])
def test_description_round_trips(ntp: bool | None) -> None:
    description = _description(ntp)
    back = _through_bytes_description(description)
    assert back == description
    assert back.facts.ntp_synchronized is ntp
    # Label order is kept as the agent sent it.
    assert back.identity.labels == (("region", "eu-west"), ("env", "prod"))


def test_minimal_description_round_trips() -> None:
    description = AgentDescription(
        identity=AgentIdentity("a", ""),
        facts=HostFacts("", "", "", "", ""),
        trust_stores=(),
        agent_time_ns=0,
    )
    assert _through_bytes_description(description) == description


@pytest.mark.parametrize("client", list(Client))
def test_every_client_view_round_trips(client: Client) -> None:
    view = ClientView(client, Verdict.EXPIRED, verify_code=10, failure=Failure.CERT_VERIFY)
    result = replace(_minimal(), addresses=(AddressResult("127.0.0.1", views=(view,)),))
    assert _through_bytes_result(result).addresses[0].views == (view,)


def test_a_view_of_an_unknown_client_is_left_out() -> None:
    message = result_to_wire(_minimal(), "web-1", "9.9")
    address = message.addresses.add(address="127.0.0.1")
    address.views.add(client=99, verdict=probe_pb2.VERDICT_OK)
    address.views.add(client=probe_pb2.CLIENT_PYTHON, verdict=probe_pb2.VERDICT_OK)
    back, _, _ = result_from_wire(probe_pb2.ProbeResult.FromString(message.SerializeToString()))
    assert [v.client for v in back.addresses[0].views] == [Client.PYTHON]


@pytest.mark.parametrize("party", list(Party))
def test_who_refused_round_trips(party: Party) -> None:
    result = replace(_minimal(), addresses=(AddressResult("127.0.0.1", handshake=Handshake(refused_by=party)),))
    assert _through_bytes_result(result).addresses[0].handshake.refused_by is party
