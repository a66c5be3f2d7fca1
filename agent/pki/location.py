"""Where the fleet PKI directory is, and why a given one is not one: all a command needs before it reads
a certificate, kept apart from fleet_ca so that finding the directory loads none of the issuing code."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_pki_dir", "from_pki_env", "pki_dir_problem"]


def default_pki_dir() -> Path:
    """`$TLSFLEET_PKI_DIR`, else `~/.config/tlsfleet/pki`."""
    env = os.environ.get("TLSFLEET_PKI_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "tlsfleet" / "pki"


def from_pki_env(path: Path) -> bool:
    """Whether `path` lies in the PKI directory that $TLSFLEET_PKI_DIR chose (worth saying in an error:
    a variable set long ago in a shell profile is easy to forget)."""
    env = os.environ.get("TLSFLEET_PKI_DIR")
    if not env:
        return False
    return path.expanduser().is_relative_to(Path(env).expanduser())


def pki_dir_problem(pki: Path) -> str | None:
    """Why `pki` is not a fleet PKI directory (one holding ca.pem), or None when it is one."""
    if (pki / "ca.pem").is_file():
        return None
    if pki.name in ("agents", "coordinators") and (pki.parent / "ca.pem").is_file():
        return (
            f"PKI directory {pki} is the {pki.name}/ sub-folder; give the PKI directory itself, {pki.parent} "
            f"(the one that holds ca.pem)"
        )
    origin = " (from $TLSFLEET_PKI_DIR)" if from_pki_env(pki) else ""
    return (
        f"PKI directory {pki}{origin} holds no fleet CA (ca.pem); create one with `tlsfleet pki init --dir {pki}` "
        f"or give the directory that holds it"
    )
