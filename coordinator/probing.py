"""Probe one target from a set of vantages, with the SNI variants asked for or suggested by what was seen.

The one path every caller takes: `tlsfleet probe`, scheduled reports, and whatever comes next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from ..agent.errors import UsageError
from ..agent.model import ProbeOptions, ProbeRequest, Starttls, TlsVersion
from ..agent.naming import NAME_PATTERN, NAME_RULE
from ..agent.probe.request_limits import (
    MAX_ADDRESSES,
    MAX_PROBE_TIMEOUT_S,
    RequestError,
    new_request_id,
    validate_request,
)
from ..agent.probe.starttls import infer_starttls
from ..agent.probe.targets import inet_aton, ip_sni_problem, parse_target
from .diagnosis import sni
from .fleet.fanout import probe_all
from .fleet.probe_slots import ProbeSlots
from .fleet.vantage import Vantage
from .observation import Observation, Variant
from .outcomes import ProbeOutcome

MIN_TIMEOUT_S = 0.1
MAX_TIMEOUT_S = MAX_PROBE_TIMEOUT_S
_VERSIONS = {"1.0": TlsVersion.TLS1_0, "1.1": TlsVersion.TLS1_1, "1.2": TlsVersion.TLS1_2, "1.3": TlsVersion.TLS1_3}


class ProbeArgumentError(UsageError):
    """A probe option that is not accepted; the message names it and what is."""


def build_request(
    target: str,
    *,
    now_ns: int,
    timeout: float = 10.0,
    sni: str | None = None,
    no_sni: bool = False,
    alpn: Sequence[str] = (),
    tls_min: str | None = None,
    tls_max: str | None = None,
    address: str | None = None,
    max_addresses: int = 8,
    client_cert: str | None = None,
    starttls: str | None = None,
    via_proxy: bool = False,
) -> ProbeRequest:
    """Validate what a person asked for into a request; `now_ns` (the coordinator's clock) is the reference
    time. `starttls` None infers the protocol from the port (5432 postgres, 25 smtp, ...); "none" asks for
    TLS at once. Raises ProbeArgumentError or TargetError naming the option and what is accepted."""
    if sni is not None and no_sni:
        raise ProbeArgumentError("--sni and --no-sni contradict each other; give one of them")
    if sni is not None and (problem := ip_sni_problem(sni)):
        raise ProbeArgumentError(problem)
    if not MIN_TIMEOUT_S <= timeout <= MAX_TIMEOUT_S:
        raise ProbeArgumentError(
            f"--timeout {timeout:g} is out of range; accepted: {MIN_TIMEOUT_S:g}-{MAX_TIMEOUT_S:g} seconds"
        )
    if not 1 <= max_addresses <= MAX_ADDRESSES:
        raise ProbeArgumentError(f"--max-addresses {max_addresses} is out of range; accepted: 1-{MAX_ADDRESSES}")
    if client_cert is not None and not NAME_PATTERN.match(client_cert):
        raise ProbeArgumentError(
            f"--client-cert {client_cert[:64]!r} is not accepted; give the NAME of a certificate the agents were "
            f"started with (agent serve --client-cert NAME=CERT,KEY); {NAME_RULE}"
        )
    parsed = parse_target(target)
    # The three phases run one after another, so together they must fit inside the deadline (with a tenth
    # to spare for the reply): resolution first, then a third of what is left to connect, the rest to the
    # handshake and the read after it.
    budget = timeout * 0.9
    resolve_s = min(3.0, budget / 3)
    connect_s = min(3.0, (budget - resolve_s) / 3)
    handshake_s = min(5.0, budget - resolve_s - connect_s)
    options = ProbeOptions(
        sni=sni,
        send_sni=not no_sni,
        alpn=tuple(alpn),
        min_version=_version(tls_min, "--tls-min"),
        max_version=_version(tls_max, "--tls-max"),
        # An IPv4 address as inet_aton reads it (127.1), as the target may be given; the wire carries it canonical.
        pin_address=(inet_aton(address) or address) if address is not None else None,
        max_addresses=max_addresses,
        resolve_timeout=resolve_s,
        connect_timeout=connect_s,
        handshake_timeout=handshake_s,
        reference_time_ns=now_ns,
        client_cert=client_cert,
        starttls=_starttls(starttls, parsed.port),
        via_proxy=via_proxy,
    )
    try:
        return validate_request(ProbeRequest(target=parsed, options=options, request_id=new_request_id()))
    except RequestError as error:
        raise ProbeArgumentError(str(error)) from None


def _version(text: str | None, flag: str) -> TlsVersion | None:
    if text is None:
        return None
    version = _VERSIONS.get(text.removeprefix("TLSv").removeprefix("tls"))
    if version is None:
        raise ProbeArgumentError(f"{flag} {text!r} is not a TLS version; accepted: 1.0, 1.1, 1.2, 1.3")
    return version


def _starttls(text: str | None, port: int) -> Starttls:
    if text is None:
        return infer_starttls(port)
    try:
        return Starttls(text.strip().lower())
    except ValueError:
        accepted = ", ".join(p.value for p in Starttls)
        raise ProbeArgumentError(f"--starttls {text!r} is not a known protocol; accepted: {accepted}") from None


async def observe(
    vantages: Sequence[Vantage],
    request: ProbeRequest,
    timeout_s: float,
    sni_variants: Sequence[str | None] = (),
    *,
    slots: ProbeSlots | None = None,
) -> Observation:
    """Fan the request out, then the variants (to the vantages that answered: the others would spend the
    deadline again). With `slots`, every fan-out first holds one slot per vantage it asks."""

    async def fan_out(chosen: Sequence[Vantage], one: ProbeRequest) -> tuple[ProbeOutcome, ...]:
        if slots is None:
            return await probe_all(chosen, one, timeout_s)
        async with slots.hold(len(chosen)):
            return await probe_all(chosen, one, timeout_s)

    outcomes = await fan_out(vantages, request)
    first = Observation(request=request, outcomes=outcomes)
    planned = planned_variants(request, sni_variants, first)
    if not planned:
        return first
    answered = {o.vantage.name for o in first.answered}
    live = [v for v in vantages if v.info.name in answered]
    results = await asyncio.gather(*(fan_out(live, v.request) for v in planned))
    return replace(first, variants=tuple(replace(v, outcomes=r) for v, r in zip(planned, results, strict=True)))


def planned_variants(request: ProbeRequest, explicit: Sequence[str | None], observation: Observation) -> list[Variant]:
    """The variants to probe: the ones asked for, plus no-SNI / with-SNI when a name mismatch hints at SNI."""
    wanted = list(explicit)
    if sni.wants_no_sni_variant(observation):
        wanted.append(None)
    if sni.wants_sni_variant(observation):
        wanted.append(request.target.host)
    variants: dict[str, Variant] = {}
    for name in wanted:
        options = request.options
        if name is None:
            if not options.send_sni:
                continue
            label, options = "no SNI", replace(options, send_sni=False, sni=None)
        else:
            if options.send_sni and (options.sni or request.target.host) == name:
                continue
            label, options = f"SNI {name}", replace(options, send_sni=True, sni=name)
        variants.setdefault(label, Variant(label=label, request=replace(request, options=options), outcomes=()))
    return list(variants.values())
