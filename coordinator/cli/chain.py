"""`tlsfleet chain TARGET`: the served chain as each vantage saw it, to read, share or feed to `openssl`.

Vantages (and addresses) that were served the same chain are listed together; `--pem` prints PEM blocks
with `#` lines between them (openssl skips text outside the blocks), `--text` the fields a reader asks for next.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

from ...agent import exit_codes
from ...agent.command import fail, run_coroutine
from ...agent.model import AddressResult, Failure
from ..observation import Observation
from ..outcomes import VantageState
from ..probing import build_request
from .probe import ProbeArguments, probe_fleet

FORMATS = ("summary", "pem", "text")


@dataclass(frozen=True)
class ChainArguments:
    target: str
    output: str = "summary"  # one of FORMATS
    sni: str | None = None
    address: str | None = None
    starttls: str | None = None
    agents: str | None = None
    inventory: Path | None = None
    no_local: bool = False
    timeout: float = 10.0


@dataclass(frozen=True)
class ServedChain:
    """One chain and every vantage@address it was served to, each with its native verdict."""

    chain: tuple[bytes, ...]
    seen_by: tuple[str, ...]
    tls: str


def served_chains(observation: Observation) -> tuple[tuple[ServedChain, ...], tuple[str, ...]]:
    """The distinct chains served, in the order first seen, and the vantage@address that got none (why)."""
    by_chain: dict[tuple[bytes, ...], list[str]] = {}
    tls: dict[tuple[bytes, ...], str] = {}
    without: list[str] = []
    for outcome in observation.outcomes:
        if outcome.state is not VantageState.OK or outcome.result is None:
            without.append(f"{outcome.vantage.name}: did not answer ({outcome.state.value})")
            continue
        for a in outcome.result.addresses:
            where = f"{outcome.vantage.name}@{a.address}"
            if not a.chain:
                without.append(f"{where}: no chain ({_why_none(a)})")
                continue
            by_chain.setdefault(a.chain, []).append(f"{where} ({a.native.verdict.value})")
            tls.setdefault(a.chain, a.handshake.tls_version or "handshake failed after the certificate")
    chains = tuple(ServedChain(chain, tuple(seen), tls[chain]) for chain, seen in by_chain.items())
    return chains, tuple(without)


def _why_none(a: AddressResult) -> str:
    if a.connect_failure is not Failure.NONE:
        return f"{a.connect_failure.value}: {a.connect_error}" if a.connect_error else a.connect_failure.value
    h = a.handshake
    return f"{h.failure.value}: {h.error}" if h.error else h.failure.value


def render(chains: Sequence[ServedChain], without: Sequence[str], output: str) -> Iterator[str]:
    """The lines of the listing."""
    for index, served in enumerate(chains, 1):
        yield f"# chain {index} of {len(chains)}: {len(served.chain)} certificate(s), {served.tls}"
        yield f"# seen by {', '.join(served.seen_by)}"
        for depth, der in enumerate(served.chain):
            yield from _certificate(depth, der, output)
        yield ""
    for line in without:
        yield f"# {line}"


def _certificate(depth: int, der: bytes, output: str) -> Iterator[str]:
    from ...agent.trust.certinfo import CertificateParseError, parse_der, summarize

    try:
        s = summarize(der)
    except CertificateParseError as error:
        yield f"#  {depth}: not a certificate the parser accepts ({error}); sha256 {_sha256(der)}"
        if output == "pem":
            yield from _pem(der)
        return
    yield f"#  {depth}: {s.subject}"
    yield f"#     issuer {s.issuer}"
    yield f"#     valid {s.not_before:%Y-%m-%d %H:%M} to {s.not_after:%Y-%m-%d %H:%M} UTC; sha256 {s.sha256}"
    if output == "text":
        cert = parse_der(der)
        algorithm = cert.signature_hash_algorithm
        yield f"#     serial {s.serial}; key {_key_text(cert.public_key())}"
        yield f"#     signature {cert.signature_algorithm_oid._name}" + (f" ({algorithm.name})" if algorithm else "")
        if s.san:
            yield f"#     SAN {', '.join(s.san)}"
        yield (
            f"#     CA {'yes' if s.is_ca else 'no'}; subject key id {s.subject_key_id or '-'}; "
            f"authority key id {s.authority_key_id or '-'}"
        )
        for url in s.aia_ca_issuers:
            yield f"#     AIA caIssuers {url}"
    if output == "pem":
        yield from _pem(der)


def _key_text(key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size} bits"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return type(key).__name__.removesuffix("PublicKey")
    return type(key).__name__


def _pem(der: bytes) -> Iterator[str]:
    body = base64.b64encode(der).decode()
    yield "-----BEGIN CERTIFICATE-----"
    yield from (body[i : i + 64] for i in range(0, len(body), 64))
    yield "-----END CERTIFICATE-----"


def _sha256(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()


def run_chain(args: ChainArguments) -> int:
    from .cli_logging import configure_cli_logging

    if args.output not in FORMATS:
        raise fail(f"output {args.output!r} is not accepted; accepted: {', '.join(FORMATS)}")
    configure_cli_logging()
    request = build_request(
        args.target,
        now_ns=time.time_ns(),
        timeout=args.timeout,
        sni=args.sni,
        address=args.address,
        starttls=args.starttls,
    )
    probe = ProbeArguments(
        targets=(args.target,),
        agents=args.agents,
        inventory=args.inventory,
        no_local=args.no_local,
        timeout=args.timeout,
    )
    observation = run_coroutine(probe_fleet(probe, request))
    chains, without = served_chains(observation)
    from ..matrix import visible

    for line in render(chains, without, args.output):
        typer.echo(visible(line))  # agents' addresses and errors, certificates' names
    if observation.silent:
        return exit_codes.UNANSWERED
    return exit_codes.PROBLEM if without or not chains else exit_codes.OK
