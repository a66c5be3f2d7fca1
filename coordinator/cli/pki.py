"""`tlsfleet pki`: create the fleet CA and issue coordinator and agent certificates.

Cheap to import: the `cryptography`-backed fleet PKI loads only when a command runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ...agent.command import epilog
from ...agent.command_group import CommandGroup

if TYPE_CHECKING:
    from ...agent.pki.fleet_ca import CertificateInfo

__all__ = ["app"]

app = typer.Typer(
    help="Create the fleet CA and the certificates coordinators and agents use for mutual TLS.",
    no_args_is_help=True,
    add_completion=False,
    cls=CommandGroup,
)


class IssueRole(StrEnum):
    agent = "agent"
    coordinator = "coordinator"


DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="PKI directory (default: $TLSFLEET_PKI_DIR or ~/.config/tlsfleet/pki).",
        show_default=False,
    ),
]


def _resolve_dir(directory: Path | None) -> Path:
    from ...agent.pki.location import default_pki_dir

    return (directory or default_pki_dir()).expanduser()


def _date(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC"


@app.command(
    epilog=epilog("tlsfleet pki init", "tlsfleet pki init --dir /etc/tlsfleet/pki", exits="0 the CA was written")
)
def init(
    directory: DirOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing CA (every issued certificate stops working).")
    ] = False,
    days: Annotated[int, typer.Option("--days", help="CA validity in days.")] = 3650,
    common_name: Annotated[str, typer.Option("--common-name", help="CA subject common name.")] = ("tlsfleet fleet CA"),
) -> None:
    """Create the fleet CA (ca.pem, and ca.key readable only by you)."""
    from ...agent.pki.fleet_ca import describe_certificate, init_fleet_ca

    pki_dir = _resolve_dir(directory)
    paths = init_fleet_ca(pki_dir, common_name=common_name, days=days, force=force)
    info = describe_certificate(paths.cert)
    typer.echo(f"wrote {paths.cert} (fleet CA {common_name!r}, valid until {_date(info.not_after)})")
    typer.echo(f"wrote {paths.key} (CA private key, mode 0600; keep it on this machine only)")


@app.command(
    epilog=epilog(
        "tlsfleet pki issue agent web-1",
        "tlsfleet pki issue coordinator coordinator --dir /etc/tlsfleet/pki --days 365",
        exits="0 the certificate and key were written",
    )
)
def issue(
    role: Annotated[IssueRole, typer.Argument(help="Who the certificate is for.", show_default=False)],
    name: Annotated[
        str,
        typer.Argument(
            help="The agent or coordinator name: 1-63 of a-z, 0-9, '-'. Agents must match the inventory.",
            show_default=False,
        ),
    ],
    directory: DirOption = None,
    days: Annotated[int, typer.Option("--days", help="Validity in days (capped at the CA's expiry).")] = 825,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing certificate and key.")] = False,
) -> None:
    """Issue a certificate and key for an agent or a coordinator, signed by the fleet CA."""
    from ...agent.pki.fleet_ca import describe_certificate
    from ...agent.pki.fleet_ca import issue as issue_certificate

    pki_dir = _resolve_dir(directory)
    paths = issue_certificate(pki_dir, role.value, name, days=days, force=force)
    info = describe_certificate(paths.cert)
    typer.echo(f"wrote {paths.cert} ({role.value} {info.name}, valid until {_date(info.not_after)})")
    typer.echo(f"wrote {paths.key} (private key of {role.value} {info.name}, mode 0600)")


def _status(info: CertificateInfo, now: datetime) -> str:
    if not info.issued_by_ca:
        return "NOT ISSUED BY THIS CA"
    if now >= info.not_after:
        return "EXPIRED"
    if now < info.not_before:
        return "NOT YET VALID"
    return f"{(info.not_after - now).days} days left"


def _as_json(info: CertificateInfo, now: datetime) -> dict[str, object]:
    return {
        "path": str(info.path),
        "role": info.role,
        "name": info.name,
        "subject": info.subject,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "sha256": info.sha256,
        "issued_by_ca": info.issued_by_ca,
        "status": _status(info, now),
    }


@app.command(epilog=epilog("tlsfleet pki show", "tlsfleet pki show --json", exits="0 listed"))
def show(
    directory: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """List the fleet CA and every issued certificate with its expiry."""
    from ...agent.pki.fleet_ca import inventory

    pki_dir = _resolve_dir(directory)
    inv = inventory(pki_dir)
    now = datetime.now(UTC)
    if as_json:
        from ...agent.documents import document

        doc = {
            "directory": str(pki_dir),
            "ca": _as_json(inv.ca, now),
            "issued": [_as_json(i, now) for i in inv.issued],
            "unreadable": [{"path": str(p), "error": err} for p, err in inv.unreadable],
        }
        typer.echo(json.dumps(document("pki", doc), indent=2))
        return
    typer.echo(
        f"CA           {inv.ca.subject}  until {_date(inv.ca.not_after)}  ({_status(inv.ca, now)})  {inv.ca.path}"
    )
    if not inv.issued:
        typer.echo("no certificates issued yet; run `tlsfleet pki issue agent NAME`")
    for info in inv.issued:
        who = f"{info.role or '?'} {info.name or '(no tlsfleet identity)'}"
        typer.echo(f"{who:<32} until {_date(info.not_after)}  ({_status(info, now)})  {info.path}")
    for path, err in inv.unreadable:
        typer.echo(f"warning: skipped {path}: {err}", err=True)
