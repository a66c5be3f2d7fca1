"""Which clients a host's trust store speaks for, and whether anything on the host is known to use it.

A store the agent judged only because it found the runtime there (a JRE on PATH, a system Python with
certifi) says what that runtime would conclude, not that a service uses it: most hosts carry a JRE or a
certifi nobody runs with. A store counts as in use when the agent declares it (TrustStore.declared): the
operator named the runtime (`--runtime python=...`, `--runtime java=...`) or the bundle (`--extra-store
LABEL=PATH`), or a variable in the agent's environment points a client at it (REQUESTS_CA_BUNDLE,
CURL_CA_BUNDLE, NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, JAVA_HOME). What declares it is quoted from found_by.

Agents older than that flag report every store undeclared; for them the declaration is read from how they
word found_by (agent/trust/stores.py, runtimes.py): the option it carries, the variable it names, or the
store's name when only a variable makes that store exist (recordings without found_by included).
Everything else (found_by "system interpreter in /usr/bin", "`java` on PATH", no found_by at all) is found,
not declared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...agent.model import TrustStore

__all__ = ["StoreUse", "is_system_store", "store_use"]

# Stores that exist only because a variable in the agent's environment names them.
_BY_VARIABLE: dict[str, str] = {
    "requests_ca_bundle": "REQUESTS_CA_BUNDLE",
    "curl_ca_bundle": "CURL_CA_BUNDLE",
    "node_extra_ca_certs": "NODE_EXTRA_CA_CERTS",
    "java_home": "JAVA_HOME",
}
_OPTION = re.compile(r"--(?:runtime|extra-store) [^\s;()]+")
_VARIABLE = re.compile(r"\b([A-Z][A-Z0-9_]*) in the agent's environment")


def is_system_store(name: str) -> bool:
    """Stores the host's default OpenSSL context reads (the native verdict's own stores)."""
    return name in ("system", "system_dir", "ssl_cert_file", "ssl_cert_dir") or name.startswith("system:")


@dataclass(frozen=True)
class StoreUse:
    """What a store stands for on its host."""

    store: str  # the store's name
    runtime: str  # "python", "java", "node", "curl", "bundle" (an extra store), "system"
    declared: str  # what declares it in use ("--runtime python=/srv/venv", "JAVA_HOME set ..."); "" when none
    found: str  # how the agent came to judge it (found_by), for the evidence

    @property
    def in_use(self) -> bool:
        return bool(self.declared)


def _runtime(name: str, info: TrustStore | None) -> str:
    if is_system_store(name):
        return "system"
    base = name.split(":", 1)[0]
    if base in ("certifi", "requests_ca_bundle"):
        return "python"
    if base in ("java", "java_home"):
        return "java"
    if base == "node_extra_ca_certs":
        return "node"
    if base == "curl_ca_bundle":
        return "curl"
    if base == "extra":
        return "bundle"
    return (info.runtime if info is not None and info.runtime else "") or "bundle"


def _named(found_by: str) -> tuple[list[str], list[str]]:
    """The options and the environment variables a found_by names."""
    options = list(dict.fromkeys(m.group(0) for m in _OPTION.finditer(found_by)))
    variables = list(dict.fromkeys(m.group(1) for m in _VARIABLE.finditer(found_by)))
    return options, variables


def _said(options: list[str], variables: list[str]) -> str:
    return "; ".join([*options, *(f"{v} set in the agent's environment" for v in variables)])


def _worded(name: str, found_by: str) -> str:
    """An older agent's declaration, from its found_by wording and the store's name alone."""
    options, variables = _named(found_by)
    variable = _BY_VARIABLE.get(name)
    if variable and variable not in variables:
        variables.insert(0, variable)
    if name.startswith("extra:") and not options:
        options.append(f"--extra-store {name.removeprefix('extra:')}")
    return _said(options, variables)


def store_use(name: str, info: TrustStore | None) -> StoreUse:
    """What the store `name` (with its identity `info`, when the agent reported one) stands for."""
    found_by = info.found_by if info is not None else ""
    runtime = _runtime(name, info)
    if runtime == "system":
        declared = ""
    elif info is not None and info.declared:
        declared = _said(*_named(found_by)) or found_by or "declared in use by the agent"
    else:
        declared = _worded(name, found_by)
    return StoreUse(name, runtime, declared, found_by)
