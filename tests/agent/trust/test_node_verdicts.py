"""The agent's Node store judged against node itself: a lab TLS server on loopback with a private root, a
tiny `node -e` TLS client run with the very environment the agent's discovery is given, and the node store's
verdict (and OpenSSL code) must be what node concluded.

Not covered: a chain under a public root that node bundles and the test's OpenSSL store lacks (no public
root's key is at hand without the network)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust.node_roots import ask_node
from tlsfleet.agent.trust.runtimes import RuntimeOptions, forget_answers
from tlsfleet.agent.trust.stores import discover
from tlsfleet.agent.trust.verify import judge_against_stores
from tlsfleet.coordinator.lab.pki import Issued, LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

NODE = shutil.which("node", path="/usr/local/bin:/usr/bin:/bin")
pytestmark = pytest.mark.skipif(NODE is None, reason="no node executable in /usr/local/bin, /usr/bin or /bin")

NAME = "node.test"
# What node's TLS client says (err.code), as the OpenSSL verify code the agent keeps beside its verdict.
NODE_CODES = {
    "UNABLE_TO_GET_ISSUER_CERT": 2,
    "DEPTH_ZERO_SELF_SIGNED_CERT": 18,
    "SELF_SIGNED_CERT_IN_CHAIN": 19,
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY": 20,
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE": 21,
}
CLIENT = r"""
const socket = require("tls").connect({host: "127.0.0.1", port: Number(process.argv[1]), servername: process.argv[2]});
socket.setTimeout(5000, () => { console.log(JSON.stringify({code: "TIMEOUT"})); process.exit(0); });
socket.on("secureConnect", () => { console.log(JSON.stringify({code: "OK"})); socket.destroy(); });
socket.on("error", (e) => { console.log(JSON.stringify({code: e.code || String(e)})); });
"""


@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Nodelab")


@pytest.fixture(scope="module")
def leaf(pki: LabPKI) -> Issued:
    return pki.issue_leaf(NAME)


@pytest.fixture(scope="module", params=["intermediate", "with root"])
def served(request: pytest.FixtureRequest, pki: LabPKI, leaf: Issued) -> Iterator[tuple[TlsServer, list[bytes]]]:
    """The server, sending leaf and intermediate (node: 20 without the root) or the root too (node: 19)."""
    chain = [pki.intermediate] if request.param == "intermediate" else [pki.intermediate, pki.root]
    server = TlsServer(ServedIdentity.of(leaf, *chain)).start()
    try:
        yield server, [c.der for c in (leaf, *chain)]
    finally:
        server.stop()


def node_says(env: dict[str, str], port: int) -> str:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "-e", CLIENT, str(port), NAME], env=env, capture_output=True, timeout=20, check=False, text=True
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout.strip().splitlines()[-1])["code"])


def agent_says(env: dict[str, str], chain: list[bytes]) -> tuple[Verdict, int, str]:
    forget_answers()
    found = discover(env, runtimes=RuntimeOptions(python_dirs=()))
    node = next(s for s in found.stores if s.info.name == "node")
    now = datetime.now(UTC)
    (verdict,) = judge_against_stores(chain, (node,), NAME, now, None)
    return verdict.at_agent_time, verdict.verify_code, node.info.found_by


def default_store() -> str:
    """How the store node uses by default is described: its bundled roots, or OpenSSL's store for a build
    made to use that (Debian's)."""
    assert NODE is not None
    return "OpenSSL's default file" if ask_node(NODE).openssl_store_default else "bundled roots ("


def base_env(tmp_path: Path) -> dict[str, str]:
    """Nothing but node's directory on PATH, and OpenSSL's variables pointing at empty places."""
    assert NODE is not None
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir(exist_ok=True)
    return {"PATH": str(Path(NODE).parent), "SSL_CERT_DIR": str(empty_dir)}


def agree(env: dict[str, str], served: tuple[TlsServer, list[bytes]]) -> tuple[str, Verdict, str]:
    server, chain = served
    said = node_says(env, server.port)
    verdict, code, found_by = agent_says(env, chain)
    if said == "OK":
        assert verdict is Verdict.OK, (said, verdict, found_by)
    else:
        assert said in NODE_CODES, f"node said {said}"
        assert (verdict, code) != (Verdict.OK, 0) and code == NODE_CODES[said], (said, verdict, code, found_by)
    return said, verdict, found_by


def test_without_the_private_root_node_and_the_agent_refuse(
    tmp_path: Path, served: tuple[TlsServer, list[bytes]]
) -> None:
    said, _, found_by = agree(base_env(tmp_path), served)
    assert said in ("UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "SELF_SIGNED_CERT_IN_CHAIN")
    assert found_by.startswith("node v") and found_by.endswith(")") and default_store() in found_by


def test_node_extra_ca_certs_with_the_root_node_and_the_agent_accept(
    tmp_path: Path, pki: LabPKI, served: tuple[TlsServer, list[bytes]]
) -> None:
    env = base_env(tmp_path) | {"NODE_EXTRA_CA_CERTS": str(write_pem(tmp_path / "root.pem", pki.root_pem()))}
    said, _, found_by = agree(env, served)
    assert said == "OK"
    assert default_store() in found_by and f"NODE_EXTRA_CA_CERTS={tmp_path / 'root.pem'} (1)" in found_by


def test_use_openssl_ca_with_ssl_cert_file_holding_the_root_node_and_the_agent_accept(
    tmp_path: Path, pki: LabPKI, served: tuple[TlsServer, list[bytes]]
) -> None:
    root = write_pem(tmp_path / "root.pem", pki.root_pem())
    env = base_env(tmp_path) | {"NODE_OPTIONS": "--use-openssl-ca", "SSL_CERT_FILE": str(root)}
    said, _, found_by = agree(env, served)
    assert said == "OK"
    assert f"SSL_CERT_FILE={root} (1)" in found_by and "bundled roots" not in found_by


def test_use_openssl_ca_without_the_root_node_and_the_agent_refuse(
    tmp_path: Path, pki: LabPKI, served: tuple[TlsServer, list[bytes]]
) -> None:
    # The bundled roots no longer count, nor does the root in a file that only the default mode would read.
    other = write_pem(tmp_path / "other.pem", LabPKI("Other").root_pem())
    env = base_env(tmp_path) | {"NODE_OPTIONS": "--use-openssl-ca", "SSL_CERT_FILE": str(other)}
    said, _, _ = agree(env, served)
    assert said != "OK"


def test_use_openssl_ca_keeps_node_extra_ca_certs(
    tmp_path: Path, pki: LabPKI, served: tuple[TlsServer, list[bytes]]
) -> None:
    other = write_pem(tmp_path / "other.pem", LabPKI("Other").root_pem())
    root = write_pem(tmp_path / "root.pem", pki.root_pem())
    env = base_env(tmp_path) | {
        "NODE_OPTIONS": "--use-openssl-ca",
        "SSL_CERT_FILE": str(other),
        "NODE_EXTRA_CA_CERTS": str(root),
    }
    said, _, _ = agree(env, served)
    assert said == "OK"
