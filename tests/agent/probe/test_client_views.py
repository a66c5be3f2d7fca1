"""Two client views: `openssl` (the host's OpenSSL policy, as `openssl s_client` and curl get it) and
`python` (`ssl.create_default_context()`), reported only where they differ. Every scenario is held against
`openssl s_client` on this host, and the python view against a plain Python client in the same process.

A policy is an OPENSSL_CONF file given to a child process: OpenSSL reads its configuration at start."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from tests.agent.probe.openssl_lab import (
    Lab,
    needs_openssl,
    policy_file,
    probe,
    probe_in_child,
    rsa_leaf,
    s_client,
    views,
)
from tlsfleet.agent.hostfacts import gather_host_facts
from tlsfleet.agent.model import Client, Failure, Party, Verdict
from tlsfleet.agent.probe.handshake import ContextCache
from tlsfleet.agent.probe.openssl_policy import host_policy, python_default_policy
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = needs_openssl


def spec(lab: Lab, port: int, name: str, **extra: object) -> dict[str, object]:
    return {"port": port, "name": name, "cafile": str(lab.root), **extra}


def plain_python(lab: Lab, port: int, name: str) -> str:
    """What `ssl.create_default_context()` gets here: "ok", "verify:CODE" or the OpenSSL reason."""
    context = ssl.create_default_context(cafile=str(lab.root))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=name),
        ):
            return "ok"
    except ssl.SSLCertVerificationError as error:
        return f"verify:{error.verify_code}"
    except ssl.SSLError as error:
        return error.reason or "ssl-error"


# --------------------------------------------------------------------------------------- security level


def test_seclevel_3_rejects_an_rsa_2048_leaf_that_python_accepts(lab: Lab) -> None:
    server = lab.s_server(rsa_leaf(lab.pki, "rsa.test"))
    strict = policy_file(lab.tmp, "seclevel3", "CipherString = DEFAULT:@SECLEVEL=3")
    truth = s_client(server.port, "rsa.test", lab.root, config=strict)
    assert not truth.ok and truth.verify_code == 66, truth.output  # EE certificate key too weak
    assert s_client(server.port, "rsa.test", lab.root).ok  # the default level 2 accepts it
    policy, [result] = probe_in_child(strict, [spec(lab, server.port, "rsa.test")])
    assert policy["SecurityLevel"] == "3" and policy["config_file"] == str(strict)
    assert policy["system_default.CipherString"] == "DEFAULT:@SECLEVEL=3"
    found = views(result)
    assert list(found) == ["openssl", "python"]
    openssl = found["openssl"]
    assert (openssl["failure"], openssl["verify_code"]) == (Failure.CERT_VERIFY, truth.verify_code)
    assert openssl["verdict"] == Verdict.INVALID
    assert result["native"]["verify_code"] == 66 and result["handshake"]["refused_by"] == Party.CLIENT
    # Python's default context puts its own @SECLEVEL=2 in place: it accepts what the host's clients refuse.
    python = found["python"]
    assert (python["failure"], python["verdict"], python["verify_code"]) == (Failure.NONE, Verdict.OK, 0)
    assert "security level 2" in python["detail"] and "level 3" in python["detail"]
    assert result["plain_python"]["ok"] is True


def test_seclevel_3_accepts_a_p256_leaf_in_both_views(lab: Lab) -> None:
    server = lab.s_server(lab.pki.issue_leaf("ec.test"))
    strict = policy_file(lab.tmp, "seclevel3", "CipherString = DEFAULT:@SECLEVEL=3")
    assert s_client(server.port, "ec.test", lab.root, config=strict).ok
    _, [result] = probe_in_child(strict, [spec(lab, server.port, "ec.test")])
    assert list(views(result)) == ["openssl"]
    assert result["handshake"]["failure"] == Failure.NONE and result["native"]["verdict"] == Verdict.OK


# ------------------------------------------------------------------------------------------------ ciphers


def test_a_static_rsa_only_server_serves_openssl_clients_and_refuses_python(lab: Lab) -> None:
    server = lab.s_server(rsa_leaf(lab.pki, "legacy.test"), "-cipher", "AES128-SHA", "-no_tls1_3")
    truth = s_client(server.port, "legacy.test", lab.root)
    assert truth.ok and truth.verify_code == 0, truth.output
    assert plain_python(lab, server.port, "legacy.test") == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    result = probe(lab, server.port, "legacy.test")
    assert result.handshake.failure is Failure.NONE, result.handshake
    assert (result.handshake.tls_version, result.handshake.cipher) == ("TLSv1.2", "AES128-SHA")
    assert result.native.verdict is Verdict.OK
    openssl, python = result.views
    assert openssl.client is Client.OPENSSL and openssl.failure is Failure.NONE and openssl.cipher == "AES128-SHA"
    assert python.client is Client.PYTHON
    assert python.failure is Failure.TLS_ALERT and python.verdict is Verdict.NO_CHAIN
    assert "AES128-SHA" in python.detail


def test_configured_ciphersuites_and_groups_reach_both_views(lab: Lab) -> None:
    """Python's context keeps the configured TLS 1.3 suites and groups: both views follow them."""
    config = policy_file(lab.tmp, "suites", "Ciphersuites = TLS_AES_128_GCM_SHA256", "Groups = secp384r1:secp521r1")
    x25519_only = lab.s_server(lab.pki.issue_leaf("groups.test"), "-tls1_3", "-groups", "X25519")
    p384 = lab.s_server(lab.pki.issue_leaf("groups.test"), "-tls1_3", "-groups", "secp384r1")
    assert not s_client(x25519_only.port, "groups.test", lab.root, config=config).ok
    assert s_client(p384.port, "groups.test", lab.root, config=config).ok
    _, [refused, accepted] = probe_in_child(
        config, [spec(lab, x25519_only.port, "groups.test"), spec(lab, p384.port, "groups.test")]
    )
    assert refused["handshake"]["failure"] == Failure.TLS_ALERT and refused["handshake"]["alert"] == "handshake_failure"
    assert list(views(refused)) == ["openssl"]  # Python's context refuses alike
    assert refused["plain_python"]["ok"] is False
    assert accepted["handshake"]["failure"] == Failure.NONE
    assert accepted["handshake"]["cipher"] == "TLS_AES_128_GCM_SHA256"  # the server would prefer AES-256
    assert accepted["plain_python"]["cipher"] == "TLS_AES_128_GCM_SHA256"
    assert list(views(accepted)) == ["openssl"]


# ----------------------------------------------------------------------------------------------- versions


def test_min_protocol_tls13_against_servers_that_refuse_and_accept(lab: Lab) -> None:
    config = policy_file(lab.tmp, "min13", "MinProtocol = TLSv1.3")
    old = lab.s_server(lab.pki.issue_leaf("old.test"), "-no_tls1_3")
    modern = lab.s_server(lab.pki.issue_leaf("modern.test"))
    old_truth = s_client(old.port, "old.test", lab.root, config=config)
    assert not old_truth.ok and old_truth.verify_code == 0, old_truth.output
    assert s_client(modern.port, "modern.test", lab.root, config=config).ok
    policy, [refused, accepted] = probe_in_child(
        config, [spec(lab, old.port, "old.test"), spec(lab, modern.port, "modern.test")]
    )
    assert policy["MinProtocol"] == "TLSv1.3"
    hs = refused["handshake"]
    assert (hs["failure"], hs["alert"], hs["refused_by"]) == (Failure.TLS_ALERT, "protocol_version", Party.SERVER)
    # Python's default context replaces the host's minimum with TLS 1.2: it gets through where curl does not.
    python = views(refused)["python"]
    assert python["failure"] == Failure.NONE and python["tls_version"] == "TLSv1.2"
    assert refused["plain_python"] == {
        "ok": True,
        "version": "TLSv1.2",
        "cipher": python["cipher"],
        "verify_code": 0,
    }
    assert refused["chain_length"] == 2  # the chain the server served to Python's client
    assert accepted["handshake"]["failure"] == Failure.NONE and accepted["handshake"]["tls_version"] == "TLSv1.3"
    assert list(views(accepted)) == ["openssl"]


def test_max_protocol_tls12_against_servers_that_refuse_and_accept(lab: Lab) -> None:
    config = policy_file(lab.tmp, "max12", "MaxProtocol = TLSv1.2")
    tls13_only = lab.s_server(lab.pki.issue_leaf("only13.test"), "-tls1_3")
    both = lab.s_server(lab.pki.issue_leaf("both.test"))
    assert not s_client(tls13_only.port, "only13.test", lab.root, config=config).ok
    assert s_client(both.port, "both.test", lab.root, config=config).ok
    policy, [refused, capped] = probe_in_child(
        config, [spec(lab, tls13_only.port, "only13.test"), spec(lab, both.port, "both.test")]
    )
    assert policy["MaxProtocol"] == "TLSv1.2"
    hs = refused["handshake"]
    assert (hs["failure"], hs["alert"], hs["refused_by"]) == (Failure.TLS_ALERT, "protocol_version", Party.SERVER)
    # Python keeps the configured maximum: the same refusal, so no python view.
    assert list(views(refused)) == ["openssl"]
    assert refused["plain_python"]["ok"] is False
    assert capped["handshake"]["tls_version"] == "TLSv1.2"
    assert capped["plain_python"]["version"] == "TLSv1.2"
    assert list(views(capped)) == ["openssl"]


# ------------------------------------------------------------------------------ when a second handshake runs


def test_one_connection_when_python_certainly_agrees(pki, tmp_path: Path) -> None:
    """Success, or a verdict no security level decides (62): Python's context would see the same."""
    lab = Lab(tmp_path, pki)
    leaf = pki.issue_leaf("count.test")
    server = TlsServer(ServedIdentity.of(leaf, pki.intermediate)).start()
    tls12 = TlsServer(ServedIdentity.of(leaf, pki.intermediate), max_version=ssl.TLSVersion.TLSv1_2).start()
    try:
        cache = ContextCache(cafile=str(lab.root))
        for target, name, failure in (
            (server, "count.test", Failure.NONE),
            (server, "other.test", Failure.CERT_VERIFY),
            (tls12, "count.test", Failure.NONE),
            (tls12, "other.test", Failure.CERT_VERIFY),
        ):
            before = target.accepted
            result = probe(lab, target.port, name, cache=cache)
            assert result.handshake.failure is failure, result.handshake
            assert target.accepted - before == 1, (name, result.handshake)
            assert [v.client for v in result.views] == [Client.OPENSSL]
            # Version and cipher come from the ServerHello even when the chain was refused.
            assert result.handshake.tls_version and result.handshake.cipher
    finally:
        server.stop()
        tls12.stop()


def test_a_failure_before_the_server_chose_runs_pythons_handshake_too(pki, tmp_path: Path) -> None:
    lab = Lab(tmp_path, pki)
    leaf = pki.issue_leaf("modern.test")
    server = TlsServer(ServedIdentity.of(leaf, pki.intermediate), min_version=ssl.TLSVersion.TLSv1_3).start()
    try:
        before = server.accepted
        result = probe(lab, server.port, "modern.test", max_version="TLSv1.2")
        connections = server.accepted - before
    finally:
        server.stop()
    assert result.handshake.failure is Failure.TLS_ALERT and result.handshake.alert == "protocol_version"
    assert connections == 2  # the second one found Python refused alike, so one view
    assert [v.client for v in result.views] == [Client.OPENSSL]


# ---------------------------------------------------------------------------------------------- the policy


def test_the_policy_is_read_from_this_processs_openssl() -> None:
    policy = host_policy()
    assert policy.from_openssl, policy.error
    fresh = ContextCache().get(verify=True, check_hostname=True)
    python = ssl.create_default_context()
    assert fresh.security_level == policy.security_level
    assert "AES128-SHA" in policy.ciphers  # OpenSSL's DEFAULT has static RSA; Python's own list does not
    # The openssl view's context offers exactly what OpenSSL configured, in its order.
    offered = [c["name"] for c in fresh.get_ciphers()]
    assert offered == [*policy.ciphersuites, *policy.ciphers]
    assert "AES128-SHA" in offered
    assert "AES128-SHA" not in {c["name"] for c in python.get_ciphers()}
    facts = dict(policy.facts())
    assert facts["source"] == "libssl" and facts["SecurityLevel"] == str(policy.security_level)
    assert facts["ciphers"] == str(len(policy.ciphers)) and facts["config_file"]
    assert dict(gather_host_facts("0", {}).openssl_policy) == facts


def test_without_libssl_pythons_context_stands_in_and_says_so(lab: Lab) -> None:
    fallback = python_default_policy(error="libssl cannot be reached (test)")
    assert not fallback.from_openssl
    assert dict(fallback.facts())["source"].startswith("python (libssl cannot be reached")
    server = lab.s_server(rsa_leaf(lab.pki, "legacy.test"), "-cipher", "AES128-SHA", "-no_tls1_3")
    result = probe(lab, server.port, "legacy.test", cache=ContextCache(cafile=str(lab.root), policy=fallback))
    [openssl] = result.views  # the two contexts are alike now: one view, one handshake
    assert openssl.failure is Failure.TLS_ALERT
    assert "could not be read" in openssl.detail


@pytest.mark.parametrize("directive", ["MinProtocol = TLSv1.2", "MaxProtocol = TLSv1.3"])
def test_facts_list_the_configured_directives(lab: Lab, directive: str) -> None:
    config = policy_file(lab.tmp, "facts", directive, "CipherString = DEFAULT:@SECLEVEL=2")
    server = lab.s_server(lab.pki.issue_leaf("facts.test"))
    policy, _ = probe_in_child(config, [spec(lab, server.port, "facts.test")])
    key, value = (part.strip() for part in directive.split("="))
    assert policy[f"system_default.{key}"] == value
    assert policy[key] == value
    assert policy["source"] == "libssl"


# ---------------------------------------------------------------------------------------------- verify flags


@pytest.fixture
def python_313_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ssl.create_default_context()` as Python 3.13 makes it (Lib/ssl.py adds VERIFY_X509_STRICT and
    VERIFY_X509_PARTIAL_CHAIN), whatever Python runs the test; `openssl s_client` and curl set neither."""
    original = ssl.create_default_context

    def create(*args: object, **kwargs: object) -> ssl.SSLContext:
        context = original(*args, **kwargs)  # type: ignore[arg-type]
        context.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    monkeypatch.setattr(ssl, "create_default_context", create)


def test_the_openssl_view_verifies_without_pythons_strict_flags(lab: Lab, python_313_defaults: None) -> None:
    """A leaf without an Authority Key Identifier: s_client and curl accept it; Python 3.13's default context
    refuses it (85, X509_STRICT). The openssl view says what s_client says, the python view what Python does."""
    server = lab.s_server(rsa_leaf(lab.pki, "noaki.test"))
    truth = s_client(server.port, "noaki.test", lab.root)
    assert truth.ok and truth.verify_code == 0, truth.output
    assert plain_python(lab, server.port, "noaki.test") == "verify:85"
    result = probe(lab, server.port, "noaki.test")
    openssl, python = result.views
    assert (openssl.client, openssl.failure, openssl.verdict) == (Client.OPENSSL, Failure.NONE, Verdict.OK)
    assert result.native.verdict is Verdict.OK and result.handshake.failure is Failure.NONE
    assert (python.client, python.failure, python.verify_code) == (Client.PYTHON, Failure.CERT_VERIFY, 85)
    assert "VERIFY_X509_STRICT" in python.detail


def test_the_openssl_view_does_not_anchor_on_an_intermediate(lab: Lab, python_313_defaults: None) -> None:
    """A store holding only the intermediate: s_client cannot reach a root (2); Python 3.13's default context
    takes the intermediate as the anchor (PARTIAL_CHAIN) and accepts."""
    server = lab.s_server(lab.pki.issue_leaf("partial.test"))
    intermediate = lab.tmp / "intermediate-only.pem"
    intermediate.write_bytes(lab.pki.intermediate.cert_pem)
    truth = s_client(server.port, "partial.test", intermediate)
    assert not truth.ok and truth.verify_code == 2, truth.output
    result = probe(lab, server.port, "partial.test", cache=ContextCache(cafile=str(intermediate)))
    openssl, python = result.views
    assert (openssl.failure, openssl.verify_code) == (Failure.CERT_VERIFY, truth.verify_code)
    assert result.native.verify_code == truth.verify_code
    assert (python.client, python.failure, python.verdict) == (Client.PYTHON, Failure.NONE, Verdict.OK)


# A system_default section with MinProtocol = TLSv1.3, and what follows it in the file.
CONFIGS = {
    "loaded": ("", "loaded", False),
    "unparseable": ("[unterminated\n", "does not parse (line 11): OpenSSL ignores all of it", True),
    "absent": (None, "absent: OpenSSL's built-in defaults apply", True),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_a_configuration_openssl_cannot_load_is_ignored_by_both_and_said(lab: Lab, case: str) -> None:
    """OpenSSL ignores an OPENSSL_CONF that does not exist or does not parse, silently: s_client then runs on
    its defaults and reaches a TLS 1.2 server that MinProtocol = TLSv1.3 would refuse. The openssl view
    does the same, and the facts say why the file's directives are not in force."""
    tail, status, reaches = CONFIGS[case]
    server = lab.s_server(lab.pki.issue_leaf("conf.test"), "-no_tls1_3")
    config = policy_file(lab.tmp, case, "MinProtocol = TLSv1.3")
    if tail is None:
        config.unlink()
    else:
        config.write_text(config.read_text() + tail)
    truth = s_client(server.port, "conf.test", lab.root, config=config)
    assert truth.ok is reaches, truth.output
    policy, [result] = probe_in_child(config, [spec(lab, server.port, "conf.test")])
    assert (result["handshake"]["failure"] == Failure.NONE) is reaches, result["handshake"]
    assert policy["config_file"] == str(config)
    assert policy["config_status"].startswith(status), policy
    assert policy["MinProtocol"] == ("library minimum" if reaches else "TLSv1.3")


def test_strict_flags_cost_no_second_handshake_when_the_chain_meets_them(
    pki: LabPKI, tmp_path: Path, python_313_defaults: None
) -> None:
    """A chain Python's flags accept too (judged offline): one connection, one view."""
    lab = Lab(tmp_path, pki)
    server = TlsServer(ServedIdentity.of(pki.issue_leaf("strict.test"), pki.intermediate)).start()
    try:
        before = server.accepted
        result = probe(lab, server.port, "strict.test")
        connections = server.accepted - before
    finally:
        server.stop()
    assert result.handshake.failure is Failure.NONE, result.handshake
    assert [v.client for v in result.views] == [Client.OPENSSL]
    assert connections == 1
