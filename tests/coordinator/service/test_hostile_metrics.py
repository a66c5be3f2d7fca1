"""/metrics labels that quote an agent's or a certificate's words (TLS version, cipher, subject) show control
characters escaped and are bounded: `curl /metrics` in a terminal is not driven by what an agent sent."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.coordinator.test_hostile_agent import ESCAPES, _reply
from tlsfleet.agent import wire
from tlsfleet.agent.model import ProbeOptions, ProbeRequest, Target
from tlsfleet.coordinator.observation import Observation
from tlsfleet.coordinator.outcomes import ProbeOutcome, VantageInfo, VantageState
from tlsfleet.coordinator.service.metrics import MAX_LABEL_CHARS, TLS_CIPHER_INFO, TLS_VERSION_INFO, probe_series


def test_an_agents_tls_version_and_cipher_are_escaped_and_bounded_in_metric_labels() -> None:
    request = ProbeRequest(Target("target.test", 443), ProbeOptions())
    message = _reply("edge-1", wire.request_to_wire(request))
    message.addresses[0].handshake.tls_version = ESCAPES
    message.addresses[0].handshake.cipher = "C" * 10_000
    assert wire.result_problem(message, request) == ""  # within what the wire accepts
    result, _name, _version = wire.result_from_wire(message)
    outcome = ProbeOutcome(VantageInfo("edge-1", "127.0.0.1:7000"), VantageState.OK, result=result)
    snap, _dropped = probe_series("target.test:443", Observation(request, (outcome,)), (), datetime.now(UTC))
    [(_t, _a, shown_version)] = snap[TLS_VERSION_INFO.name]
    [(_t, _a, shown_cipher)] = snap[TLS_CIPHER_INFO.name]
    assert shown_version == "\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202e"
    assert len(shown_cipher) == MAX_LABEL_CHARS and shown_cipher.endswith("...")
