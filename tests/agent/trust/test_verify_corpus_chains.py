"""Chain inputs a path-validation corpus carries, judged as the real `openssl verify` judges them: long served
chains (OpenSSL builds among every certificate the handshake hands over), store certificates whose extensions
`cryptography` refuses, and a lone leaf whose issuer the store holds by name only.

Goes with the verify.py change that raises MAX_CHAIN_CERTS, reads DuplicateExtension as a malformed extension,
and names the store or served certificate of the issuer's name that OpenSSL passed over.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust import libcrypto
from tlsfleet.agent.trust.verify import ChainJudgement, clear_caches, verify_chain

from .chains import NOW, Cert, issue, loaded_store, openssl_cli, openssl_skip_reason, openssl_verify
from .test_verify_corpus_extensions import SAN, UNKNOWN, unknown_extension, with_repeated

pytestmark = pytest.mark.skipif(openssl_cli() is None, reason=openssl_skip_reason())


def _both(tmp: Path, leaf: Cert, untrusted: tuple[Cert, ...], roots: tuple[Cert, ...]) -> tuple[int, ChainJudgement]:
    cli = openssl_verify(tmp, leaf, untrusted, roots, "svc.test", NOW, libcrypto.security_level())
    clear_caches()
    j = verify_chain((leaf.der, *(u.der for u in untrusted)), loaded_store(roots), "svc.test", NOW)
    assert j.code == cli.code, f"{cli.command}: openssl {cli.code}, tlsfleet {j.code} ({j.detail})"
    return cli.code, j


def test_issuer_served_after_twenty_others(tmp_path: Path) -> None:
    # A server configured with a bundle: the issuing intermediate comes after unrelated CA certificates.
    root = issue("Corp Root", ca=True)
    inter = issue("Corp Inter", root, ca=True)
    others = tuple(issue(f"Bundled CA {i}", issue(f"Bundled Root {i}", ca=True), ca=True) for i in range(20))
    code, j = _both(tmp_path, issue("svc.test", inter), (*others, inter), (root,))
    assert code == 0 and j.verdict is Verdict.OK


def test_hundred_intermediates_up_to_an_untrusted_root(tmp_path: Path) -> None:
    # x509-limbo's pathological chain: ICA #0 (self-signed) <- ICA #1 <- ... <- ICA #99 <- leaf.
    chain = [issue("Pathological CA #0", ca=True)]
    for i in range(1, 100):
        chain.append(issue(f"Pathological CA #{i}", chain[-1], ca=True))
    leaf = issue("svc.test", chain[-1])
    code, _ = _both(tmp_path, leaf, tuple(reversed(chain)), (issue("Corp Root", ca=True),))
    assert code == 19


def test_lone_leaf_from_a_root_made_again_under_its_name(tmp_path: Path) -> None:
    old, new = issue("Corp Root", ca=True), issue("Corp Root", ca=True)
    code, j = _both(tmp_path, issue("svc.test", old), (), (new,))
    assert code == 20
    assert j.verdict is Verdict.UNKNOWN_ISSUER  # no intermediate would help
    assert "the store holds 'CN=Corp Root'" in j.detail and "under another key" in j.detail


def test_store_intermediate_with_repeated_extension(tmp_path: Path) -> None:
    root = issue("Corp Root", ca=True)
    inter = with_repeated(issue("Corp Inter", root, ca=True), root.key, UNKNOWN, extra=unknown_extension())  # type: ignore[arg-type]
    code, _ = _both(tmp_path, issue("svc.test", inter), (), (inter,))
    assert code == 2


def test_leaf_with_repeated_san_names_the_served_issuer(tmp_path: Path) -> None:
    root = issue("Corp Root", ca=True)
    inter = issue("Corp Inter", root, ca=True)
    leaf = with_repeated(issue("svc.test", inter), inter.key, SAN)  # type: ignore[arg-type]
    code, j = _both(tmp_path, leaf, (inter,), (root,))
    assert code == 20
    detail = j.detail
    assert "the served chain holds 'CN=Corp Inter'" in detail and "more than one 2.5.29.17 extension" in detail
    assert "neither served" not in detail
