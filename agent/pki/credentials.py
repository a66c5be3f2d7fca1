"""Loading a fleet identity from files, checking it, and the gRPC glue for mutual TLS.

Both sides trust only the fleet CA. A client dials a named peer with `channel_options_for_peer`, so
the TLS hostname check proves the server holds that identity. A server requires a client certificate
from the fleet CA, and `AllowedPeersInterceptor` then admits only the listed names of one role.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from ..bounded_read import FileTooLarge, read_capped
from ..errors import UsageError
from ..logs import get_logger
from .fleet_ca import (
    MAX_PEM_BYTES,
    ROLES,
    FleetPkiError,
    certificate_identity,
    identity_dns_name,
    identity_from_dns_names,
    normalize_name,
)

__all__ = [
    "AllowedPeersInterceptor",
    "ClockProblem",
    "CredentialError",
    "FleetCredentials",
    "channel_credentials",
    "channel_options_for_peer",
    "check_peer_allowed",
    "load_credentials",
    "peer_identity",
    "require_peer",
    "server_credentials",
]

_log = get_logger("tlsfleet")
_MAX_NAMES_SHOWN = 5
_SAN_KEY = "x509_subject_alternative_name"
_HEALTH_METHODS = "/grpc.health.v1.Health/"


class CredentialError(UsageError):
    """A credential file cannot be used; the one-line message names the file and the problem."""


@dataclass(frozen=True)
class ClockProblem:
    """A certificate that this host's clock puts outside its validity: an expired one, or a clock off."""

    what: str  # "CA file" or "certificate"
    path: Path
    subject: str
    not_before: datetime
    not_after: datetime
    host_time: datetime
    state: str  # "not_yet_valid" or "expired"

    def message(self) -> str:
        if self.state == "not_yet_valid":
            return (
                f"{self.what} {self.path}: not valid until {_when(self.not_before)}, and this host's clock says "
                f"{_when(self.host_time)} (is the clock behind?)"
            )
        return (
            f"{self.what} {self.path}: expired on {_when(self.not_after)}, and this host's clock says "
            f"{_when(self.host_time)} (is the clock ahead, or does it need reissuing?)"
        )


@dataclass(frozen=True)
class FleetCredentials:
    """A checked fleet identity: the CA bundle to trust, our certificate and key, and who we are.

    `clock_problems` lists what this host's clock puts outside its validity, when loaded with
    `tolerate_clock` (an agent serves anyway: peers with a right clock accept it, and the fleet learns the
    skew instead of losing the host)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    role: str
    name: str
    not_after: datetime
    clock_problems: tuple[ClockProblem, ...] = ()


def _read(path: Path, what: str) -> bytes:
    try:
        return read_capped(path, MAX_PEM_BYTES)
    except FileNotFoundError as e:
        raise CredentialError(f"{what} {path}: no such file") from e
    except IsADirectoryError as e:
        raise CredentialError(f"{what} {path}: is a directory, not a file") from e
    except FileTooLarge as e:
        raise CredentialError(f"{what} {path}: larger than {e.limit} bytes, not a PEM file") from e
    except OSError as e:
        raise CredentialError(f"{what} {path}: cannot read: {e.strerror or e}") from e


def _a(role: str) -> str:
    return f"an {role}" if role[0] in "aeiou" else f"a {role}"


def _when(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S} UTC"


def _key_id(cert: x509.Certificate, *, of_issuer: bool) -> str | None:
    """A short key identifier: the AKI for the issuer of `cert`, else the SKI of `cert` itself."""
    try:
        if of_issuer:
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            raw = aki.key_identifier
        else:
            raw = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None
    return raw.hex(":")[:23] if raw else None


def _describe(name: x509.Name, key_id: str | None) -> str:
    # Every fleet CA has the same default name, so the key id is what tells two of them apart.
    text = repr(name.rfc4514_string() or "(empty name)")
    return f"{text} (key id {key_id})" if key_id else text


def _issued_by(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _clock_problem(cert: x509.Certificate, path: Path, what: str, now: datetime) -> ClockProblem | None:
    if now >= cert.not_valid_after_utc:
        state = "expired"
    elif now < cert.not_valid_before_utc:
        state = "not_yet_valid"
    else:
        return None
    return ClockProblem(
        what=what,
        path=path,
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        host_time=now,
        state=state,
    )


def _check_validity(cert: x509.Certificate, path: Path, what: str, now: datetime, hint: str) -> None:
    if now >= cert.not_valid_after_utc:
        raise CredentialError(f"{what} {path}: expired on {_when(cert.not_valid_after_utc)}{hint}")
    if now < cert.not_valid_before_utc:
        raise CredentialError(
            f"{what} {path}: not valid until {_when(cert.not_valid_before_utc)}, and this host's clock "
            f"says {_when(now)} (is the clock behind?)"
        )


def _load_cas(path: Path, now: datetime, *, tolerate_clock: bool = False) -> tuple[bytes, list[x509.Certificate]]:
    data = _read(path, "CA file")
    try:
        cas = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CredentialError(f"CA file {path}: not a PEM certificate") from e
    for ca in cas:
        try:
            is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CredentialError(
                f"CA file {path}: {ca.subject.rfc4514_string()!r} is not a CA certificate; "
                "give the fleet CA (ca.pem from `tlsfleet pki init`)"
            )
    # A bundle may hold an old and a new fleet CA while a fleet rotates; expired ones just drop out.
    live = [ca for ca in cas if ca.not_valid_before_utc <= now < ca.not_valid_after_utc]
    if not live:
        if tolerate_clock:
            return data, cas  # this host's clock may be what is wrong: judge the issuer by signature alone
        _check_validity(cas[0], path, "CA file", now, "; create a new CA with `tlsfleet pki init --force`")
    return data, live


def load_credentials(
    ca: Path,
    cert: Path,
    key: Path,
    *,
    expect_role: str,
    now: datetime | None = None,
    tolerate_clock: bool = False,
) -> FleetCredentials:
    """Read and check a fleet identity of role `expect_role`, as of `now` (default: this host's clock).

    Raises CredentialError naming the file and the problem. With `tolerate_clock`, a CA or certificate
    that `now` puts outside its validity is no refusal: it is listed in `clock_problems` (for a warning),
    since this host's clock may be what is wrong; everything else is checked as ever.
    """
    if expect_role not in ROLES:
        raise CredentialError(f"unknown role {expect_role!r}: a role is one of {', '.join(ROLES)}")
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise CredentialError("the time to check credentials at must be timezone-aware")
    ca_pem, cas = _load_cas(ca, now, tolerate_clock=tolerate_clock)

    cert_pem = _read(cert, "certificate")
    try:
        leaf = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise CredentialError(f"certificate {cert}: not a PEM certificate") from e
    if not _issued_by(leaf, cas):
        fleet = ", ".join(_describe(c.subject, _key_id(c, of_issuer=False)) for c in cas)
        raise CredentialError(
            f"certificate {cert}: issued by {_describe(leaf.issuer, _key_id(leaf, of_issuer=True))}, "
            f"but the fleet CA is {fleet} ({ca})"
        )

    key_pem = _read(key, "private key")
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as e:
        raise CredentialError(
            f"private key {key}: is encrypted; tlsfleet needs an unencrypted key protected by mode 0600"
        ) from e
    except ValueError as e:
        raise CredentialError(f"private key {key}: not a PEM private key") from e
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise CredentialError(f"private key {key}: does not match certificate {cert}")

    identity = certificate_identity(leaf)
    if identity is None:
        raise CredentialError(
            f"certificate {cert}: carries no tlsfleet identity (a DNS name <name>.agent.tlsfleet or "
            "<name>.coordinator.tlsfleet); issue one with `tlsfleet pki issue`"
        )
    role, name = identity
    if role != expect_role:
        raise CredentialError(
            f"certificate {cert}: this is {_a(role)} certificate; {_a(expect_role)} certificate is needed"
        )
    problems: list[ClockProblem] = []
    if tolerate_clock:
        issuer = next((c for c in cas if _issued_by(leaf, [c])), None)
        for checked, path, what in ((issuer, ca, "CA file"), (leaf, cert, "certificate")):
            problem = _clock_problem(checked, path, what, now) if checked is not None else None
            if problem is not None:
                problems.append(problem)
    else:
        _check_validity(
            leaf, cert, "certificate", now, f"; issue a new one with `tlsfleet pki issue {role} {name} --force`"
        )
    return FleetCredentials(
        ca_pem=ca_pem,
        cert_pem=cert_pem,
        key_pem=key_pem,
        role=role,
        name=name,
        not_after=leaf.not_valid_after_utc,
        clock_problems=tuple(problems),
    )


def server_credentials(creds: FleetCredentials) -> grpc.ServerCredentials:
    """Serve with our identity and require a client certificate issued by the fleet CA."""
    return grpc.ssl_server_credentials(
        [(creds.key_pem, creds.cert_pem)],
        root_certificates=creds.ca_pem,
        require_client_auth=True,
    )


def channel_credentials(creds: FleetCredentials) -> grpc.ChannelCredentials:
    """Dial with our identity, trusting only the fleet CA (never the system store)."""
    return grpc.ssl_channel_credentials(
        root_certificates=creds.ca_pem,
        private_key=creds.key_pem,
        certificate_chain=creds.cert_pem,
    )


def channel_options_for_peer(role: str, name: str) -> list[tuple[str, object]]:
    """Channel options that make TLS check the server's identity, not the address dialled."""
    try:
        return [("grpc.ssl_target_name_override", identity_dns_name(role, name))]
    except FleetPkiError as e:
        raise ValueError(str(e)) from e


def peer_identity(auth_context: Mapping[str, Iterable[bytes]]) -> tuple[str, str] | None:
    """(role, name) of a verified TLS peer from a gRPC auth context, or None without one."""
    names = [v.decode("ascii", "replace") if isinstance(v, bytes) else str(v) for v in auth_context.get(_SAN_KEY, ())]
    return identity_from_dns_names(names)


def _shown(names: Collection[str]) -> str:
    ordered = sorted(names)
    text = ", ".join(ordered[:_MAX_NAMES_SHOWN])
    return text + (f" and {len(ordered) - _MAX_NAMES_SHOWN} more" if len(ordered) > _MAX_NAMES_SHOWN else "")


def check_peer_allowed(identity: tuple[str, str] | None, *, role: str, allowed_names: Collection[str]) -> str | None:
    """None when `identity` is a `role` named in `allowed_names` (case-folded), else the reason."""
    if identity is None:
        return f"the caller presented no tlsfleet identity; only {_a(role)} certificate from the fleet CA is accepted"
    peer_role, peer_name = identity
    if peer_role != role:
        return f"the caller is {peer_role} {peer_name!r}; only {_a(role)} may call this service"
    allowed = {n.casefold() for n in allowed_names}
    if peer_name.casefold() not in allowed:
        listed = f"allowed: {_shown(allowed)}" if allowed else f"no {role} is allowed"
        return f"{role} {peer_name!r} is not allowed to call this service ({listed})"
    return None


async def require_peer(context: grpc.aio.ServicerContext, role: str, allowed_names: Collection[str]) -> tuple[str, str]:
    """Return the caller's (role, name), or abort the call with PERMISSION_DENIED."""
    identity = peer_identity(context.auth_context())
    reason = check_peer_allowed(identity, role=role, allowed_names=allowed_names)
    if reason is not None:
        _log.warning(
            "call_refused",
            peer_address=context.peer(),
            peer_identity="/".join(identity) if identity else None,
            reason=reason,
        )
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
    assert identity is not None  # check_peer_allowed refuses None
    return identity


Behavior = Callable[..., Any]


class AllowedPeersInterceptor(grpc.aio.ServerInterceptor):
    """Admit only calls whose client certificate is a `role` named in `allowed_names`.

    A grpc.aio server interceptor sees no auth context, so it wraps each method handler: the check
    runs inside the call, before the servicer method, and applies to every service on the server,
    the standard health service included. Servicer methods must be async (coroutines or async
    generators), as every tlsfleet servicer is; a plain function is refused loudly rather than
    served unchecked.
    """

    def __init__(
        self,
        role: str = "coordinator",
        allowed_names: Collection[str] = (),
        *,
        health_for: tuple[str, str] | None = None,
    ) -> None:
        """`health_for` (role, name) is also admitted, to the standard health service only: the agent
        itself, so that a health check beside it (a container's HEALTHCHECK) can use its own certificate."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: a role is one of {', '.join(ROLES)}")
        try:
            self._allowed = frozenset(normalize_name(n) for n in allowed_names)
            self._health_for = (health_for[0], normalize_name(health_for[1])) if health_for else None
        except FleetPkiError as e:
            raise ValueError(f"allowed {role} names: {e}") from e
        self._role = role

    @property
    def allowed_names(self) -> frozenset[str]:
        return self._allowed

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        # Typed as Any: the stubs' RpcMethodHandler declares none of the fields every real handler has.
        handler: Any = await continuation(handler_call_details)
        if handler is None:  # no such method: grpc itself answers UNIMPLEMENTED
            return None
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._guard(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._guard(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._guard(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._guard(handler.stream_stream, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _guard(self, behavior: Behavior, method: str) -> Behavior:
        role, allowed = self._role, self._allowed
        also = self._health_for if method.startswith(_HEALTH_METHODS) else None

        async def admit(context: grpc.aio.ServicerContext) -> None:
            if also is not None:
                identity = peer_identity(context.auth_context())
                if identity is not None and (identity[0], identity[1].casefold()) == also:
                    return
            await require_peer(context, role, allowed)

        if inspect.isasyncgenfunction(behavior):

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await admit(context)
                async for response in behavior(request, context):
                    yield response

            return guarded_stream
        if inspect.iscoroutinefunction(behavior):

            async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admit(context)
                return await behavior(request, context)

            return guarded
        raise TypeError(
            f"{method}: servicer method {behavior!r} is not async; AllowedPeersInterceptor guards only "
            "async servicer methods"
        )
