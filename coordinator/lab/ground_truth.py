"""What OpenSSL itself concludes on this host: `openssl s_client` for a handshake, `openssl verify` for a
chain against one store. The yardstick the tests hold the agent's verdicts against.

Both are read by their exit status and OpenSSL's numeric verify code, never by message wording."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .corpus import OPENSSL

_VERIFY_ERROR = re.compile(r"verify error:num=(\d+)")
_VERIFY_RETURN = re.compile(r"Verify return code: (\d+)")
_ERROR_AT_DEPTH = re.compile(r"error (\d+) at (\d+) depth lookup")
_PROTOCOL = re.compile(r"^(?:Protocol version|\s*Protocol\s*): (\S+)", re.M)
_CIPHER = re.compile(r"^(?:Ciphersuite|\s*Cipher\s*): (\S+)", re.M)
_ALERT_NUMBER = re.compile(r"SSL alert number (\d+)")
# OpenSSL 3's packed error code on an error line: library in bits 23-30, reason in bits 0-22.
_ERROR_CODE = re.compile(r":error:([0-9A-F]{8}):")
_LIB_SSL = 20
# How long s_client keeps reading after the handshake: TLS 1.3 servers refuse a missing client
# certificate only after the client's Finished, so an immediate exit would miss their alert.
_LINGER_S = 0.4


@dataclass(frozen=True)
class ClientTruth:
    """One `openssl s_client -verify_return_error` connection."""

    connected: bool  # the handshake completed and the verify callback accepted the chain
    verify_code: int  # OpenSSL's X509_V_ERR code; 0 when the chain verified (or none was judged)
    protocol: str
    cipher: str
    output: str  # for the assertion message only
    alert: int | None = None  # the description code of the alert the server sent, when it sent one
    reason: int | None = None  # OpenSSL's reason code (library SSL) of the first error, when one was printed

    @property
    def outcome(self) -> str:
        if self.connected:
            return "ok"
        return f"verify:{self.verify_code}" if self.verify_code else "handshake_failure"


def s_client(
    host: str,
    port: int,
    *,
    servername: str | None,
    env: Mapping[str, str],
    extra: tuple[str, ...] = (),
    starttls: str | None = None,
    linger: float = _LINGER_S,
) -> ClientTruth:
    """Connect as an OpenSSL client with the host's defaults (the trust store `env` names), checking the
    name as curl does, and failing on any verify error; with `starttls` (smtp, postgres, ldap, ...) TLS
    starts inside that protocol, as `-starttls` speaks it. `linger`: how long s_client reads after the
    handshake (shorter where the server sends no post-handshake alert)."""
    connect = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    command = [OPENSSL, "s_client", "-connect", connect, "-verify_return_error", "-brief", *extra]
    if starttls is not None:
        command += ["-starttls", starttls]
    if servername is not None:
        try:
            ipaddress.ip_address(servername)
            command += ["-verify_ip", servername]
        except ValueError:
            command += ["-servername", servername, "-verify_hostname", servername]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(env)
    )
    try:
        time.sleep(linger)
        out, _ = process.communicate(input=b"", timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    text = out.decode(errors="replace")
    code = _first_code(text)
    connected = process.returncode == 0 and "CONNECTION ESTABLISHED" in text and not _alerted(text)
    protocol = _PROTOCOL.search(text)
    cipher = _CIPHER.search(text)
    alert = _ALERT_NUMBER.search(text)
    return ClientTruth(
        connected=connected,
        verify_code=code,
        protocol=protocol.group(1) if protocol else "",
        cipher=cipher.group(1) if cipher else "",
        output=text[-2000:],
        alert=int(alert.group(1)) if alert else None,
        reason=_ssl_reason(text),
    )


def _ssl_reason(text: str) -> int | None:
    for match in _ERROR_CODE.finditer(text):
        code = int(match.group(1), 16)
        if code >> 23 == _LIB_SSL:
            return code & 0x7FFFFF
    return None


def _first_code(text: str) -> int:
    match = _VERIFY_ERROR.search(text)
    if match:
        return int(match.group(1))
    match = _VERIFY_RETURN.search(text)
    return int(match.group(1)) if match else 0


def _alerted(text: str) -> bool:
    # An alert after the handshake (TLS 1.3 certificate_required) shows as an SSL error line after
    # "CONNECTION ESTABLISHED"; s_client still exits 0 when its stdin ends first.
    established = text.find("CONNECTION ESTABLISHED")
    return established >= 0 and ":SSL routines:" in text[established:] and "alert" in text[established:]


@dataclass(frozen=True)
class VerifyTruth:
    """One `openssl verify` of a served chain against one trust store."""

    code: int  # 0: OK
    depth: int  # where the error was found (-1 when none)
    output: str


def openssl_verify(
    leaf: Path,
    untrusted: Path | None,
    *,
    cafile: str | None = None,
    capath: str | None = None,
    name: str | None = None,
    at_time: int | None = None,
    auth_level: int | None = None,
) -> VerifyTruth:
    """`openssl verify` with only this store (no default paths), the served intermediates as untrusted,
    the name the probe checked, the purpose a TLS client checks and, with `auth_level`, the key and
    digest strength of that security level (without it `openssl verify` checks none)."""
    command = [OPENSSL, "verify", "-no-CAfile", "-no-CApath", "-no-CAstore", "-purpose", "sslserver"]
    if auth_level is not None:
        command += ["-auth_level", str(auth_level)]
    if cafile:
        command = [c for c in command if c != "-no-CAfile"] + ["-CAfile", cafile]
    if capath:
        command = [c for c in command if c != "-no-CApath"] + ["-CApath", capath]
    if untrusted is not None and untrusted.stat().st_size:
        command += ["-untrusted", str(untrusted)]
    if name:
        try:
            ipaddress.ip_address(name)
            command += ["-verify_ip", name]
        except ValueError:
            command += ["-verify_hostname", name]
    if at_time is not None:
        command += ["-attime", str(at_time)]
    done = subprocess.run([*command, str(leaf)], capture_output=True, timeout=30, check=False)
    text = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode == 0 and text.rstrip().endswith(": OK"):
        return VerifyTruth(0, -1, text)
    match = _ERROR_AT_DEPTH.search(text)
    if match:
        return VerifyTruth(int(match.group(1)), int(match.group(2)), text)
    return VerifyTruth(-1, -1, text)


def python_client(
    host: str,
    port: int,
    *,
    servername: str | None,
    cafile: str,
    linger: float = _LINGER_S,
    alpn: tuple[str, ...] = (),
) -> str:
    """What `ssl.create_default_context()` trusting `cafile` concludes for `servername` (sent in SNI unless an
    IP literal, and checked; None: no SNI and no name checked, as a client that names no host), offering `alpn`:
    "ok", "verify:CODE" when it rejects the chain, or "handshake_failure" (a failed handshake, or an alert in the
    `linger` seconds after it, as TLS 1.3 servers refuse a client certificate)."""
    context = ssl.create_default_context(cafile=cafile)
    if servername is None:
        context.check_hostname = False
    if alpn:
        context.set_alpn_protocols(list(alpn))
    try:
        with (
            socket.create_connection((host, port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=servername) as tls,
        ):
            tls.settimeout(linger)
            with contextlib.suppress(TimeoutError, ssl.SSLWantReadError):
                tls.recv(1)
    except ssl.SSLCertVerificationError as error:
        return f"verify:{error.verify_code}"
    except (ssl.SSLError, OSError):
        return "handshake_failure"
    return "ok"
