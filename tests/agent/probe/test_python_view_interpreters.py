"""The python view against a real Python client in its own process, on servers where Python's cipher defaults
decide: static RSA key exchange and an ECDHE CBC-SHA1 suite, which OpenSSL's defaults offer and CPython's own
cipher string leaves out.

The python view is what the agent's own interpreter's `ssl.create_default_context()` gives, and its detail
names that interpreter; a Python built with `--with-ssl-default-suites=openssl` (Debian's /usr/bin/python3)
keeps OpenSSL's cipher list and minimum version instead, and is held to the view only where it was built like
the agent's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.probe.openssl_lab import Lab, needs_openssl, probe, rsa_leaf
from tlsfleet.agent.model import AddressResult, Client, Failure

pytestmark = [needs_openssl, pytest.mark.e2e]  # openssl s_server and real Python clients as processes of their own

HOST_PYTHON = Path("/usr/bin/python3")

_CLIENT = r"""
import socket, ssl, sys
port, name, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.create_default_context(cafile=cafile)
try:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=name):
            print("ok")
except ssl.SSLCertVerificationError as error:
    print(f"verify:{error.verify_code}")
except (ssl.SSLError, OSError):
    print("refused")
"""

_BUILD = "import sysconfig; print(sysconfig.get_config_var('CONFIG_ARGS') or '')"

SERVERS = {
    "static-rsa": ("-cipher", "AES128-SHA", "-no_tls1_3"),
    "ecdhe-cbc-sha1": ("-cipher", "ECDHE-RSA-AES128-SHA", "-no_tls1_3"),
}


def real_python(executable: str, port: int, name: str, cafile: Path) -> str:
    """What `executable`'s default context concludes: "ok", "verify:CODE" or "refused"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [executable, "-I", "-c", _CLIENT, str(port), name, str(cafile)],
        capture_output=True,
        text=True,
        timeout=10,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def python_view(result: AddressResult) -> str:
    """The python view in the same words; absent, it is the openssl view."""
    views = {v.client: v for v in result.views}
    view = views.get(Client.PYTHON, views[Client.OPENSSL])
    if view.verify_code:
        return f"verify:{view.verify_code}"
    return "ok" if view.failure is Failure.NONE else "refused"


def keeps_openssl_ciphers(executable: str) -> bool:
    done = subprocess.run([executable, "-I", "-c", _BUILD], capture_output=True, text=True, timeout=10)
    return "--with-ssl-default-suites=openssl" in done.stdout


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_the_python_view_is_what_this_interpreters_client_gets(lab: Lab, server: str) -> None:
    if keeps_openssl_ciphers(sys.executable):
        pytest.skip("this interpreter keeps OpenSSL's cipher defaults: these servers do not tell the contexts apart")
    served = lab.s_server(rsa_leaf(lab.pki, "legacy.test"), *SERVERS[server])
    truth = real_python(sys.executable, served.port, "legacy.test", lab.root)
    assert truth == "refused"
    result = probe(lab, served.port, "legacy.test")
    assert python_view(result) == truth
    python = next(v for v in result.views if v.client is Client.PYTHON)
    # Which Python refused, so that a host whose own python3 was built otherwise is not misread.
    assert f"the agent's Python {sys.version.split()[0]}, {sys.executable})" in python.detail, python.detail


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_the_python_view_is_what_the_hosts_python_gets_when_built_alike(lab: Lab, server: str) -> None:
    if not HOST_PYTHON.exists():
        pytest.skip(f"{HOST_PYTHON} is not installed here")
    if keeps_openssl_ciphers(str(HOST_PYTHON)) != keeps_openssl_ciphers(sys.executable):
        pytest.skip(
            f"{HOST_PYTHON} and this interpreter differ in --with-ssl-default-suites: the python view models this "
            "interpreter's default context, as the agent's own (README: the python view)"
        )
    served = lab.s_server(rsa_leaf(lab.pki, "legacy.test"), *SERVERS[server])
    truth = real_python(str(HOST_PYTHON), served.port, "legacy.test", lab.root)
    assert python_view(probe(lab, served.port, "legacy.test")) == truth
