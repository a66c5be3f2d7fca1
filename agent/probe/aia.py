"""Fetch a missing intermediate from the AIA caIssuers URL, as browsers do and most code does not.

Only when the agent is configured to (`--fetch-aia`): it makes the agent fetch a URL that a server's
certificate names. Plain http (the URLs are http by convention), bounded in time and size.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from cryptography import x509

from ..model import AiaFetch, Verdict
from ..trust.certinfo import CertificateParseError, parse_der, summarize
from ..trust.stores import LoadedStore
from ..trust.verify import verify_chain

MAX_ISSUER_BYTES = 64 * 1024
FETCH_TIMEOUT_S = 3.0
# The verdicts a missing intermediate produces; only these are worth a fetch.
MISSING_ISSUER = frozenset({Verdict.UNKNOWN_ISSUER, Verdict.LEAF_ONLY_UNVERIFIABLE})


@dataclass(frozen=True)
class _Download:
    body: bytes = b""
    error: str = ""


def aia_url(chain: Sequence[bytes]) -> str | None:
    """The first http caIssuers URL of the last served certificate, if any."""
    try:
        last = summarize(chain[-1])
    except CertificateParseError:
        return None
    return next((url for url in last.aia_ca_issuers if urlsplit(url).scheme == "http"), None)


async def fetch_and_judge(
    chain: Sequence[bytes], store: LoadedStore, expected_name: str, at: datetime, timeout: float = FETCH_TIMEOUT_S
) -> AiaFetch | None:
    """Fetch the issuer named by the last served certificate and judge the completed chain against `store`."""
    url = aia_url(chain)
    if url is None:
        return None
    download = await asyncio.to_thread(_download, url, timeout)
    if download.error:
        return AiaFetch(url=url, fetched=False, error=download.error)
    try:
        issuer_der = _as_der(download.body)
        issuer = parse_der(issuer_der)
    except (ValueError, CertificateParseError) as error:
        return AiaFetch(url=url, fetched=True, error=f"the URL did not serve a certificate: {error}")
    if issuer.subject != parse_der(chain[-1]).issuer:
        return AiaFetch(
            url=url,
            fetched=True,
            certificate=issuer_der,
            error=f"the URL served {issuer.subject.rfc4514_string()!r}, not the issuer of the last certificate",
        )
    judgement = verify_chain((*chain, issuer_der), store, expected_name, at)
    return AiaFetch(
        url=url,
        fetched=True,
        certificate=issuer_der,
        completes_chain=judgement.verdict is Verdict.OK,
        verdict=judgement.verdict,
    )


def _download(url: str, timeout: float) -> _Download:
    request = urllib.request.Request(url, headers={"User-Agent": "tlsfleet-agent"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(MAX_ISSUER_BYTES + 1)
    except urllib.error.HTTPError as error:
        return _Download(error=f"HTTP {error.code} from {url}")
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        return _Download(error=f"cannot fetch {url}: {reason}")
    if len(body) > MAX_ISSUER_BYTES:
        return _Download(error=f"{url} served more than {MAX_ISSUER_BYTES // 1024} KiB; not a certificate")
    return _Download(body=body)


def _as_der(body: bytes) -> bytes:
    """caIssuers URLs serve DER by the RFC; some serve PEM."""
    if body.lstrip().startswith(b"-----BEGIN"):
        from cryptography.hazmat.primitives.serialization import Encoding

        return x509.load_pem_x509_certificate(body).public_bytes(Encoding.DER)
    return body
