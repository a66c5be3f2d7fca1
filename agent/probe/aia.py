"""Fetch a missing intermediate from the AIA caIssuers URL, as browsers do and most code does not.

Only when the agent is configured to (`--fetch-aia`): it makes the agent fetch a URL that a server's
certificate names, so the fetch is held to what a probe is held to, and less:

- plain http only (the URLs are http by convention), one small HTTP/1.1 GET on asyncio streams: no worker
  thread is held, whatever the server does;
- the destination address, after resolution, is checked by the agent's probe policy;
- a redirect is followed once, and only to the same host and port (a new path on the same server); any
  other redirect is refused, since it would let a server point the agent at another host or port;
- one deadline for the whole fetch (waiting for a slot, resolving, connecting, headers and body): the
  caller's time left, at most FETCH_TIMEOUT_S;
- at most MAX_ISSUER_BYTES of body, enforced while reading, and MAX_HEADER_BYTES of headers;
- at most MAX_CONCURRENT_FETCHES fetches at once per event loop, so probes and Describe are never starved.

Every refusal and timeout is told in `AiaFetch.error`, in words.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import SplitResult, urljoin, urlsplit

from cryptography import x509

from ..model import AiaFetch, Failure, Verdict
from ..trust.certinfo import DER, CertificateParseError, parse_der, summarize
from ..trust.stores import LoadedStore
from ..trust.verify import verify_chain
from .policy import ProbePolicy
from .resolve import Resolver

MAX_ISSUER_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
FETCH_TIMEOUT_S = 3.0  # the cap on one whole fetch
MAX_CONCURRENT_FETCHES = 4
MAX_FETCH_ADDRESSES = 4  # addresses of the URL's host tried, in resolver order
_READ_SIZE = 16 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# The verdicts a missing intermediate produces; only these are worth a fetch.
MISSING_ISSUER = frozenset({Verdict.UNKNOWN_ISSUER, Verdict.LEAF_ONLY_UNVERIFIABLE})

_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.BoundedSemaphore] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Download:
    body: bytes = b""
    error: str = ""
    redirect: str = ""  # the Location of a redirect, resolved against the URL


@dataclass
class _Progress:
    """How far a fetch got, for the words of a timeout."""

    stage: str = "waiting for a fetch slot"
    received: int = 0


def aia_url(chain: Sequence[bytes]) -> str | None:
    """The first http caIssuers URL of the last served certificate, if any."""
    try:
        last = summarize(chain[-1])
    except CertificateParseError:
        return None
    return next((url for url in last.aia_ca_issuers if urlsplit(url).scheme == "http"), None)


async def fetch_and_judge(
    chain: Sequence[bytes],
    store: LoadedStore,
    expected_name: str,
    at: datetime,
    *,
    resolver: Resolver,
    policy: ProbePolicy | None,
    seconds_left: float | None = None,
) -> AiaFetch | None:
    """Fetch the issuer named by the last served certificate and judge the completed chain against `store`.
    `policy` None checks no address (the machine the CLI runs on); `seconds_left` is the caller's time left."""
    url = aia_url(chain)
    if url is None:
        return None
    timeout = FETCH_TIMEOUT_S if seconds_left is None else min(FETCH_TIMEOUT_S, seconds_left)
    if timeout <= 0:
        return AiaFetch(url=url, fetched=False, error=f"{url} not fetched: no time left before the probe's deadline")
    download = await _download(url, resolver, policy, timeout)
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


def _fetch_slots() -> asyncio.BoundedSemaphore:
    # A semaphore belongs to one event loop; the CLI may run several loops one after another.
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.BoundedSemaphore(MAX_CONCURRENT_FETCHES)
    return slots


async def _download(url: str, resolver: Resolver, policy: ProbePolicy | None, timeout: float) -> _Download:
    progress = _Progress(stage=f"waiting for a fetch slot ({MAX_CONCURRENT_FETCHES} AIA fetches run at once)")
    try:
        async with asyncio.timeout(timeout), _fetch_slots():
            download = await _get(url, resolver, policy, timeout, progress)
            if not download.redirect:
                return download
            why = _redirect_refusal(url, download.redirect)
            if why:
                return _Download(error=f"{url} redirects to {download.redirect}: {why}; not followed")
            followed = await _get(download.redirect, resolver, policy, timeout, progress)
            if followed.redirect:
                return _Download(error=f"{url} redirects more than once (then to {followed.redirect}); not followed")
            return followed
    except TimeoutError:
        return _Download(
            error=(
                f"{url} not fetched: the fetch's deadline of {timeout:.1f} s (connect, headers and body together) "
                f"passed while {progress.stage}, {progress.received} bytes received"
            )
        )


def _redirect_refusal(url: str, location: str) -> str:
    """Why a redirect is not followed; '' when it stays on the same host and port over http."""
    here, there = urlsplit(url), urlsplit(location)
    if there.scheme != "http":
        return f"{there.scheme or 'no'} scheme, only http is fetched"
    try:
        same = (there.hostname or "") == (here.hostname or "") and (there.port or 80) == (here.port or 80)
    except ValueError:
        return "its port is not a number"
    return "" if same else "another host or port"


async def _get(
    url: str, resolver: Resolver, policy: ProbePolicy | None, timeout: float, progress: _Progress
) -> _Download:
    parts = urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError:
        return _Download(error=f"{url}: its port is not a number")
    host = parts.hostname
    if parts.scheme != "http" or not host:
        return _Download(error=f"{url} is not an http URL with a host; only those are fetched")
    progress.stage = f"resolving {host}"
    resolution = await resolver(host, port, timeout, MAX_FETCH_ADDRESSES)
    if resolution.failure is not Failure.NONE:
        return _Download(error=f"cannot fetch {url}: {resolution.error or resolution.failure}")
    denied: list[str] = []
    failed: list[str] = []
    for address in resolution.addresses:
        if policy is not None:
            decision = policy.decide(address, port, host)
            if not decision.allowed:
                denied.append(f"{address} {decision.message}")
                continue
        progress.stage = f"connecting to {address} port {port}"
        try:
            reader, writer = await asyncio.open_connection(address, port, limit=MAX_HEADER_BYTES)
        except OSError as error:
            failed.append(f"{address}: {error.strerror or error}")
            continue
        try:
            return await _exchange(url, parts, port, reader, writer, progress)
        finally:
            writer.close()
    if failed:
        return _Download(error=f"cannot fetch {url}: {'; '.join(failed + denied)}")
    return _Download(error=f"{url} not fetched: {'; '.join(denied)}")


async def _exchange(
    url: str,
    parts: SplitResult,
    port: int,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    progress: _Progress,
) -> _Download:
    host = parts.netloc.rpartition("@")[2]  # as the URL names it, with the port when it names one
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tlsfleet-agent\r\n"
        "Accept: application/pkix-cert, */*\r\nConnection: close\r\n\r\n"
    )
    try:
        writer.write(request.encode("ascii", "replace"))
        await writer.drain()
        progress.stage = "waiting for the headers"
        head = await reader.readuntil(b"\r\n\r\n")
        progress.received += len(head)
        status, headers = _parse_head(head)
        if status is None:
            return _Download(error=f"{url} did not answer HTTP/1.x")
        if status in _REDIRECTS:
            location = headers.get("location", "")
            if not location:
                return _Download(error=f"HTTP {status} from {url} without a Location")
            return _Download(redirect=urljoin(url, location))
        if status != 200:
            return _Download(error=f"HTTP {status} from {url}")
        progress.stage = "reading the body"
        return await _body(url, reader, headers, progress)
    except asyncio.LimitOverrunError:
        return _Download(error=f"{url} sent more than {MAX_HEADER_BYTES // 1024} KiB of headers")
    except asyncio.IncompleteReadError:
        return _Download(error=f"{url}: the server closed the connection before the headers ended")
    except OSError as error:
        return _Download(error=f"cannot fetch {url}: {error.strerror or error}")


def _parse_head(head: bytes) -> tuple[int | None, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1.") or not status_line[1].isdigit():
        return None, {}
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(status_line[1]), headers


async def _body(url: str, reader: asyncio.StreamReader, headers: dict[str, str], progress: _Progress) -> _Download:
    too_large = _Download(error=f"{url} serves more than {MAX_ISSUER_BYTES // 1024} KiB; not a certificate")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _chunked(url, reader, progress, too_large)
    length_text = headers.get("content-length")
    if length_text is None:  # the body ends with the connection
        body = await _read_up_to(reader, MAX_ISSUER_BYTES + 1, progress)
        return too_large if len(body) > MAX_ISSUER_BYTES else _Download(body=body)
    if not length_text.isdigit():
        return _Download(error=f"{url} sent Content-Length {length_text[:32]!r}, not a number")
    length = int(length_text)
    if length > MAX_ISSUER_BYTES:
        return too_large
    body = await _read_up_to(reader, length, progress)
    if len(body) < length:
        return _Download(error=f"{url}: the server closed the connection after {len(body)} of {length} bytes")
    return _Download(body=body)


async def _read_up_to(reader: asyncio.StreamReader, limit: int, progress: _Progress) -> bytes:
    body = bytearray()
    while len(body) < limit:
        chunk = await reader.read(min(_READ_SIZE, limit - len(body)))
        if not chunk:
            break
        body += chunk
        progress.received += len(chunk)
    return bytes(body)


async def _chunked(url: str, reader: asyncio.StreamReader, progress: _Progress, too_large: _Download) -> _Download:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return _Download(error=f"{url} sent a malformed chunked body")
        if size == 0:
            return _Download(body=bytes(body))
        if len(body) + size > MAX_ISSUER_BYTES:
            return too_large
        body += (await reader.readexactly(size + 2))[:-2]
        progress.received += size


def _as_der(body: bytes) -> bytes:
    """caIssuers URLs serve DER by the RFC; some serve PEM."""
    if body.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(body).public_bytes(DER)
    return body
