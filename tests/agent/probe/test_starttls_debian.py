"""STARTTLS against Debian's own servers, each judged against `openssl s_client -starttls` on the same port:
Postfix (smtpd, and postscreen in front of it), Dovecot (IMAP and POP3) and slapd, each run from a
configuration of the lab's own (`coordinator/lab/debian_servers.py`) with a lab certificate.

For each: the full chain, a chain without its intermediate, an expired leaf; STARTTLS not offered; TLS
required before login. For Postfix also: the client host refused (554, postscreen's 521, 421 too many
connections), STARTTLS accepted without a usable certificate, SMTPS probed as if it spoke SMTP first, and
postscreen holding its greeting back, within the probe's default budget and past a shorter one; and what the
diagnosis then tells the person on call.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from tlsfleet.agent.model import AddressResult, Failure, Starttls, Verdict
from tlsfleet.agent.probe.handshake import ContextCache, handshake
from tlsfleet.agent.probe.starttls import Route
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.corpus import OPENSSL
from tlsfleet.coordinator.lab.debian_servers import (
    MAIL_HOSTNAME,
    DebianServerUnavailable,
    Dovecot,
    Postfix,
    Slapd,
    SmtpService,
)
from tlsfleet.coordinator.lab.ground_truth import ClientTruth, s_client
from tlsfleet.coordinator.lab.pki import Issued, LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity

pytestmark = pytest.mark.e2e

NAME = MAIL_HOSTNAME
QUICK = 0.05  # s_client's read after the handshake: these servers send no post-handshake alert
ELSEWHERE = "192.0.2.0/24"  # a mynetworks that leaves the loopback client out
GREET_WAIT = 6  # postscreen_greet_wait's default
Server = TypeVar("Server", Postfix, Dovecot, Slapd)


@pytest.fixture(scope="module")
def leaf(pki: LabPKI) -> Issued:
    return pki.issue_leaf(NAME)


@pytest.fixture(scope="module")
def expired_leaf(pki: LabPKI) -> Issued:
    now = datetime.now(UTC)
    return pki.issue_leaf(NAME, not_before=now - timedelta(days=90), not_after=now - timedelta(days=2))


@pytest.fixture(scope="module")
def identities(pki: LabPKI, leaf: Issued, expired_leaf: Issued) -> dict[str, tuple[ServedIdentity, Issued, int]]:
    """Each chain case: what the server presents, its leaf, and how many certificates it sends."""
    return {
        "full chain": (ServedIdentity.of(leaf, pki.intermediate), leaf, 2),
        "no intermediate": (ServedIdentity.of(leaf), leaf, 1),
        "expired leaf": (ServedIdentity.of(expired_leaf, pki.intermediate), expired_leaf, 2),
    }


@pytest.fixture(scope="module")
def root_file(pki: LabPKI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pem(tmp_path_factory.mktemp("roots") / "root.pem", pki.root.cert_pem)


@pytest.fixture(scope="module")
def cache(root_file: Path) -> ContextCache:
    return ContextCache(cafile=str(root_file))


@pytest.fixture(scope="module")
def truth_env(root_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """s_client's and the CLI's environment: the one root the agent's contexts trust, and nothing else."""
    return trust_env(tmp_path_factory.mktemp("trust"), root_file)


def probe(
    port: int, cache: ContextCache, protocol: Starttls, *, connect: float = 3.0, tls: float = 3.0
) -> AddressResult:
    return asyncio.run(
        handshake(
            "127.0.0.1",
            port,
            server_hostname_for_sni=NAME,
            expected_name=NAME,
            connect_timeout=connect,
            handshake_timeout=tls,
            context_cache=cache,
            route=Route(connect_host=NAME, starttls=protocol),
        )
    )


def truth(port: int, protocol: Starttls, env: dict[str, str]) -> ClientTruth:
    return s_client("127.0.0.1", port, servername=NAME, env=env, starttls=protocol.value, linger=QUICK)


def assert_same_chain_and_verdict(result: AddressResult, seen: ClientTruth, leaf: Issued, served: int) -> None:
    """The agent got what s_client got: the same certificates, and the same verdict (code) on them."""
    assert result.connect_failure is Failure.NONE, result.connect_error
    assert result.chain[0] == leaf.der and len(result.chain) == served
    assert result.native.verify_code == seen.verify_code, seen.output
    if seen.connected:
        assert result.handshake.failure is Failure.NONE, result.handshake.error
        assert result.native.verdict is Verdict.OK and result.handshake.tls_version == seen.protocol
    else:
        assert seen.verify_code in (10, 20), seen.output
        assert result.handshake.failure is Failure.CERT_VERIFY


def tlsfleet_probe(port: int, protocol: Starttls, env: dict[str, str], *extra: str) -> tuple[int, dict]:
    """`tlsfleet probe` on this machine (the local vantage), as the person on call runs it."""
    done = subprocess.run(
        [
            *tlsfleet_command(),
            "probe",
            f"{NAME}:{port}",
            "--address",
            "127.0.0.1",
            "--starttls",
            protocol.value,
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def unreachable(report: dict) -> dict:
    (finding,) = [f for f in report["findings"] if f["cause"] == "unreachable"]
    return finding


@contextmanager
def serving(make: Callable[[], Server]) -> Iterator[Server]:
    """The server `make` builds, started, and removed after; skipped with the reason where it cannot run."""
    try:
        server = make()
    except DebianServerUnavailable as why:
        pytest.skip(f"cannot run here: {why}")
    try:
        server.start()
    except DebianServerUnavailable as why:
        server.remove()
        pytest.skip(f"{server.name} cannot run here: {why}")
    try:
        yield server
    finally:
        server.remove()


# --- Postfix ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postfix(identities: dict[str, tuple[ServedIdentity, Issued, int]]) -> Iterator[Postfix]:
    """One Postfix master with a listener per case, as a mail host has 25 and 587 side by side."""
    full = identities["full chain"][0]
    services = {name: SmtpService(identity) for name, (identity, _, _) in identities.items()}
    services |= {
        "no tls": SmtpService(None),
        "tls required": SmtpService(full, {"smtpd_tls_security_level": "encrypt", "smtpd_tls_auth_only": "yes"}),
        # Postfix's default smtpd_delay_reject = yes: client restrictions bite at RCPT TO, after STARTTLS.
        "rejects at rcpt": SmtpService(full, {"smtpd_client_restrictions": "reject"}),
        "rejects the client": SmtpService(
            full,
            {
                "mynetworks": ELSEWHERE,
                "smtpd_client_restrictions": "permit_mynetworks, reject",
                "smtpd_delay_reject": "no",
            },
        ),
        "connection limit": SmtpService(full, {"mynetworks": ELSEWHERE, "smtpd_client_connection_count_limit": "1"}),
        "postscreen denylist": SmtpService(
            full,
            {"mynetworks": ELSEWHERE, "postscreen_access_list": "static:reject", "postscreen_blacklist_action": "drop"},
            greet_wait=1,
        ),
        # STARTTLS offered and accepted, but smtpd has no certificate it could load: a broken upgrade.
        "no certificate": SmtpService(full, {"smtpd_tls_chain_files": "/nonexistent/key.pem, /nonexistent/chain.pem"}),
        # SMTPS (465's TLS from the first byte) on a port probed as if it spoke SMTP first.
        "wrapper mode": SmtpService(full, {"smtpd_tls_wrappermode": "yes"}),
        # Not in mynetworks, so postscreen tests the client: its 220- teaser, then GREET_WAIT seconds.
        "postscreen": SmtpService(full, {"mynetworks": ELSEWHERE}, greet_wait=GREET_WAIT),
    }
    with serving(lambda: Postfix(services, pass_identity=full)) as server:
        yield server


@pytest.mark.slow  # Postfix takes seconds to start
@pytest.mark.parametrize("case", ["full chain", "no intermediate", "expired leaf"])
def test_postfix_chains_agree_with_s_client(case: str, postfix: Postfix, identities, cache, truth_env) -> None:
    _, leaf, served = identities[case]
    port = postfix.ports[case]
    assert_same_chain_and_verdict(
        probe(port, cache, Starttls.SMTP), truth(port, Starttls.SMTP, truth_env), leaf, served
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", ["tls required", "rejects at rcpt"])
def test_postfix_upgrades_where_s_client_does(case: str, postfix: Postfix, leaf: Issued, cache, truth_env) -> None:
    """TLS required before AUTH, and a client refused only at RCPT TO: STARTTLS itself is offered."""
    port = postfix.ports[case]
    assert_same_chain_and_verdict(probe(port, cache, Starttls.SMTP), truth(port, Starttls.SMTP, truth_env), leaf, 2)


@pytest.mark.slow
def test_postfix_without_tls_does_not_offer_starttls(postfix: Postfix, cache, truth_env) -> None:
    port = postfix.ports["no tls"]
    seen = truth(port, Starttls.SMTP, truth_env)
    result = probe(port, cache, Starttls.SMTP)
    assert not seen.connected and "Didn't find STARTTLS" in seen.output, seen.output
    assert result.connect_failure is Failure.STARTTLS_UNSUPPORTED
    assert result.connect_error == (
        "the server does not offer STARTTLS: STARTTLS is not among the extensions its EHLO reply lists"
    )


@pytest.mark.slow
def test_postfix_without_a_usable_certificate_fails_the_handshake_as_s_client_sees_it(
    postfix: Postfix, cache: ContextCache, truth_env
) -> None:
    """Postfix offers STARTTLS and answers 220 though its smtpd_tls_chain_files cannot be read; the handshake
    then ends in the server's handshake_failure alert (its log: no shared cipher)."""
    port = postfix.ports["no certificate"]
    seen = truth(port, Starttls.SMTP, truth_env)
    result = probe(port, cache, Starttls.SMTP)
    assert not seen.connected and seen.alert == 40, seen.output
    assert result.connect_failure is Failure.NONE, result.connect_error
    assert result.handshake.failure is Failure.TLS_ALERT and result.handshake.alert == "handshake_failure"
    assert not result.chain


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "greeting"),
    [
        ("rejects the client", "'554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied'"),
        ("postscreen denylist", "'521 5.3.2 Service currently unavailable'"),
        ("connection limit", f"'421 4.7.0 {NAME} Error: too many connections from 127.0.0.1'"),
    ],
)
def test_postfix_turning_the_client_away_is_quoted(
    case: str, greeting: str, postfix: Postfix, cache: ContextCache, truth_env
) -> None:
    port = postfix.ports[case]
    held = None
    if case == "connection limit":  # the one connection this client may have, held open
        held = socket.create_connection(("127.0.0.1", port), timeout=3)
        held.recv(512)
    try:
        seen = truth(port, Starttls.SMTP, truth_env)
        result = probe(port, cache, Starttls.SMTP)
    finally:
        if held is not None:
            held.close()
    assert not seen.connected, seen.output
    assert result.connect_failure is Failure.STARTTLS_REFUSED, result.connect_error
    assert result.connect_error == (
        f"the server turned the session away before STARTTLS: its greeting is {greeting}, not 220"
    )


@pytest.mark.slow  # postscreen holds the greeting back for 6 s
def test_postscreen_greet_wait_fits_the_default_budget_and_a_short_one_is_told(
    postfix: Postfix, truth_env: dict[str, str]
) -> None:
    """A postscreen that has not seen the client sends `220-`, waits postscreen_greet_wait (6 s), then hands
    it to smtpd. s_client waits; `tlsfleet probe` with its default 10 s --timeout waits too and gets the chain;
    with --timeout 4 it says what the server sent last, and the finding asks for more time, not for TLS to
    be turned on. The three connect at once: postscreen lets a client it has passed through at once after."""
    port = postfix.ports["postscreen"]
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        seen = pool.submit(truth, port, Starttls.SMTP, truth_env)
        waited = pool.submit(tlsfleet_probe, port, Starttls.SMTP, truth_env)
        hurried = pool.submit(tlsfleet_probe, port, Starttls.SMTP, truth_env, "--timeout", "4")
        assert seen.result().connected, seen.result().output
        took = time.monotonic() - started
        code, report = waited.result()
        short_code, short = hurried.result()
    assert took >= GREET_WAIT - 1, "postscreen let s_client through without its greet wait"
    (address,) = _addresses(report)
    assert code == 0, report["findings"]
    assert address["connect_failure"] == "none" and address["native"]["verdict"] == "ok"
    assert len(address["chain"]) == 2
    (cut,) = _addresses(short)
    assert short_code == 1 and cut["connect_failure"] == "starttls_timeout"
    assert cut["connect_error"].endswith(f"the server's last line was '220-{NAME} ESMTP Postfix', then nothing more")
    finding = unreachable(short)
    assert "the smtp dialogue before TLS was still unfinished at the probe's deadline" in finding["summary"]
    assert finding["fix"].startswith("Probe again with more time (`--timeout`")
    assert "postscreen_greet_wait" in finding["fix"] and "Turn TLS on" not in finding["fix"]


@pytest.mark.slow  # s_client and the probe wait for a greeting that never comes
def test_smtps_probed_with_starttls_waits_like_s_client_and_is_told_to_speak_tls_first(
    postfix: Postfix, truth_env: dict[str, str]
) -> None:
    port = postfix.ports["wrapper mode"]
    command = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "smtp", "-brief"]
    with ThreadPoolExecutor(1) as pool:
        cut = pool.submit(tlsfleet_probe, port, Starttls.SMTP, truth_env, "--timeout", "3")
        with pytest.raises(subprocess.TimeoutExpired):  # s_client waits for the 220 greeting as long as it takes
            subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, env=truth_env, timeout=3)
        code, report = cut.result()
    (address,) = _addresses(report)
    assert code == 1 and address["connect_failure"] == "starttls_timeout"
    assert address["connect_error"].endswith(": the server sent nothing")
    finding = unreachable(report)
    assert "Turn TLS on" not in finding["fix"] and "probe with `--starttls none`" in finding["fix"]


def _addresses(report: dict) -> list[dict]:
    return [a for outcome in report["vantages"] for a in (outcome.get("result") or {}).get("addresses", [])]


# --- Dovecot ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["full chain", "no intermediate", "expired leaf"])
@pytest.mark.parametrize("ssl", ["yes", "required"])
def test_dovecot_chains_agree_with_s_client(case: str, ssl: str, identities, cache, truth_env) -> None:
    """`ssl = required` (no plaintext login) offers STARTTLS as `yes` does: both upgrade as s_client does."""
    identity, leaf, served = identities[case]
    with serving(lambda: Dovecot(identity, ssl=ssl)) as server:
        for port, protocol in ((server.imap_port, Starttls.IMAP), (server.pop3_port, Starttls.POP3)):
            assert_same_chain_and_verdict(probe(port, cache, protocol), truth(port, protocol, truth_env), leaf, served)


def test_dovecot_with_ssl_no_does_not_offer_starttls(cache: ContextCache, truth_env) -> None:
    with serving(lambda: Dovecot(None, ssl="no")) as server:
        imap_truth, imap = (
            truth(server.imap_port, Starttls.IMAP, truth_env),
            probe(server.imap_port, cache, Starttls.IMAP),
        )
        pop3_truth, pop3 = (
            truth(server.pop3_port, Starttls.POP3, truth_env),
            probe(server.pop3_port, cache, Starttls.POP3),
        )
    assert not imap_truth.connected and "Didn't find STARTTLS" in imap_truth.output, imap_truth.output
    assert not pop3_truth.connected, pop3_truth.output
    assert imap.connect_failure is pop3.connect_failure is Failure.STARTTLS_UNSUPPORTED
    assert imap.connect_error == "the server does not offer STARTTLS: STARTTLS is not among its capabilities"
    assert pop3.connect_error == 'the server refused STARTTLS: STLS answered "-ERR TLS support isn\'t enabled."'


# --- slapd ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["full chain", "no intermediate", "expired leaf"])
def test_slapd_chains_agree_with_s_client(case: str, identities, cache, truth_env) -> None:
    identity, leaf, served = identities[case]
    with serving(lambda: Slapd(identity)) as server:
        seen, result = truth(server.port, Starttls.LDAP, truth_env), probe(server.port, cache, Starttls.LDAP)
    assert_same_chain_and_verdict(result, seen, leaf, served)


def test_slapd_without_tls_refuses_starttls_with_its_result_code(cache: ContextCache, truth_env) -> None:
    with serving(lambda: Slapd(None)) as server:
        seen, result = truth(server.port, Starttls.LDAP, truth_env), probe(server.port, cache, Starttls.LDAP)
    assert not seen.connected and "STARTTLS failed, LDAP Result Code: 2" in seen.output, seen.output
    assert result.connect_failure is Failure.STARTTLS_UNSUPPORTED
    assert result.connect_error == (
        "the server refused STARTTLS: StartTLS answered resultCode 2 (protocolError): 'unsupported extended operation'"
    )


# --- what the person on call is told -----------------------------------------------------------------


def test_the_fix_for_a_missing_starttls_names_the_servers_own_setting(truth_env: dict[str, str]) -> None:
    """Dovecot with `ssl = no` and slapd without TLS: the finding says which setting turns STARTTLS on."""
    mail, directory = serving(lambda: Dovecot(None, ssl="no")), serving(lambda: Slapd(None))
    with mail as imap_server, directory as ldap_server, ThreadPoolExecutor(2) as pool:
        imap = pool.submit(tlsfleet_probe, imap_server.imap_port, Starttls.IMAP, truth_env)
        ldap = pool.submit(tlsfleet_probe, ldap_server.port, Starttls.LDAP, truth_env)
        (imap_code, imap_report), (ldap_code, ldap_report) = imap.result(), ldap.result()
    assert imap_code == ldap_code == 1
    imap_fix, ldap_fix = unreachable(imap_report)["fix"], unreachable(ldap_report)["fix"]
    assert imap_fix.startswith("Turn TLS on in the service (Dovecot `ssl = yes` with `ssl_cert` and `ssl_key`;")
    assert "this probe spoke imap" in imap_fix
    assert ldap_fix.startswith("Turn TLS on in the service, or repair it where it is on (slapd `olcTLSCertificateFile`")
    assert ldap_fix.endswith("This probe spoke ldap.")
