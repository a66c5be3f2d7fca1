"""`GET /probe?target=HOST:PORT&agents=SELECTOR[&starttls=PROTOCOL]`: one probe through the service's fleet,
answered as Prometheus metrics, the way blackbox_exporter answers its /probe.

The same road as `tlsfleet probe --agents`: the target checked by `build_request`, the vantages chosen by
`select_vantages` (inventory agents dialled, dial-in agents over their streams, names that match nothing
refused; the dialled ones held between requests by `HeldAgents`), `observe` holding the pipeline's probe
slots, then `diagnose`. The reply holds that probe's series only, rendered from a registry of its own. Off
unless `[probe_endpoint]` is configured: the HTTP listener has no authentication, so anyone who reaches it
could make the agents dial targets within their policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ...agent.errors import UsageError
from ...agent.logs import get_logger
from ..diagnosis.engine import diagnose
from ..fleet.held_agents import HeldAgents
from ..fleet.probe_slots import ProbeSlots
from ..fleet.vantage import Vantage
from ..observation import DiagnosisSettings, Observation
from ..outcomes import VantageState
from ..probing import build_request, observe
from .config import ProbeEndpointConfig
from .metrics import CERT_EXPIRY, DROPPED_NAME, PROBE_SPECS, TEXT, HttpReply, HttpRequest, Snapshot, probe_series

if TYPE_CHECKING:  # the link registry's wire code loads only where a service runs an agent link
    from ..fleet.link_registry import LinkRegistry

log = get_logger("tlsfleet.coordinator")

PARAMETERS = ("target", "agents", "starttls")
SCRAPE_TIMEOUT_HEADER = "x-prometheus-scrape-timeout-seconds"
# Left of Prometheus's scrape timeout for the reply to reach it before it gives up.
SCRAPE_MARGIN_S = 0.5
MIN_BUDGET_S = 0.5
AGENT_UP_NAME = "tlsfleet_agent_up"


class ProbeRefused(UsageError):
    """A /probe request that cannot be served as asked; answered 400 with this one line."""


class _SlotsBusy(Exception):
    """The deadline passed while the probe waited for probe slots; answered 503."""


async def probe_disabled(_request: HttpRequest) -> HttpReply:
    """/probe when `[probe_endpoint]` is not configured: 404, saying how to turn it on and why it is off."""
    return HttpReply(
        404,
        TEXT,
        b"/probe is off: add [probe_endpoint] to the coordinator's config to serve it (the HTTP listener has no "
        b"authentication, so it lets anyone who reaches it make agents dial targets within their policy)\n",
    )


class ProbeEndpoint:
    def __init__(
        self,
        config: ProbeEndpointConfig,
        *,
        inventory: Path | None,
        slots: ProbeSlots,
        link_registry: LinkRegistry | None = None,
    ) -> None:
        self._config = config
        # A request's channels may be retired by the next one's inventory edit: they stay open as long as
        # the longest request may run.
        self._agents = HeldAgents(inventory, retire_after_s=config.max_timeout_s)
        self._slots = slots
        self._link_registry = link_registry  # the agents that dial in, when the service has an agent link
        self._running = 0

    async def answer(self, request: HttpRequest) -> HttpReply:
        """One /probe request: 200 with the probe's metrics, 400 naming what is wrong, 503 when busy."""
        if self._running >= self._config.max_concurrent:
            return HttpReply(
                503,
                TEXT,
                f"busy: {self._running} /probe requests are running; at most {self._config.max_concurrent} at once "
                "([probe_endpoint] max_concurrent)\n".encode(),
            )
        self._running += 1
        started = time.perf_counter()
        try:
            reply = await self._probe(request)
        except UsageError as error:
            reply = HttpReply(400, TEXT, (_one_line(str(error)) + "\n").encode())
        except _SlotsBusy as busy:
            reply = HttpReply(503, TEXT, f"{busy}\n".encode())
        except Exception:
            log.exception("probe_endpoint_failed", query=str(request.query)[:300])
            reply = HttpReply(500, TEXT, b"the probe failed; the service log says why\n")
        finally:
            self._running -= 1
        log.info(
            "probe_endpoint",
            target=_first(request, "target")[:300],
            agents=_first(request, "agents")[:300],
            status=reply.status,
            duration_s=round(time.perf_counter() - started, 3),
        )
        return reply

    async def _probe(self, request: HttpRequest) -> HttpReply:
        from ..fleet.choose import select_vantages

        unknown = sorted(set(request.query) - set(PARAMETERS))
        if unknown:
            raise ProbeRefused(f"unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(PARAMETERS)}")
        for name, values in request.query.items():
            if len(values) > 1:
                raise ProbeRefused(f"{name} is given {len(values)} times; give it once")
        target = _first(request, "target")
        if not target:
            raise ProbeRefused("target is missing; accepted: /probe?target=HOST:PORT[&agents=SELECTOR]")
        budget = self.budget(request.headers.get(SCRAPE_TIMEOUT_HEADER))
        # A variant (with or without SNI) may follow the first fan-out when what it saw hints at SNI: half each.
        probe_timeout = budget / 2
        at = datetime.now(UTC)
        probe = build_request(
            target, now_ns=time.time_ns(), timeout=probe_timeout, starttls=_first(request, "starttls") or None
        )
        linked: Sequence[tuple[Vantage, bool]] = ()
        if self._link_registry is not None:
            from ..fleet.linked_vantage import linked_candidates

            linked = linked_candidates(self._link_registry)
        fleet = select_vantages(
            inventory_path=None,
            selector_text=_first(request, "agents") or None,
            include_local=True,
            linked=linked,
            names_must_exist=True,
            held=self._agents,
        )
        try:
            # Waiting for probe slots counts against the same deadline: Prometheus waits no longer. Each
            # fan-out fits in its half, so only that wait can overrun it.
            async with asyncio.timeout(budget):
                observation = await observe(fleet.vantages, probe, probe_timeout, slots=self._slots)
        except TimeoutError:
            raise _SlotsBusy(
                f"the probe did not finish within its deadline of {budget:g} s: the service's probe slots "
                f"([coordinator] max_probes_in_flight, {self._slots.capacity}) stayed busy"
            ) from None
        finally:
            await asyncio.gather(*(v.close() for v in fleet.vantages), return_exceptions=True)
        findings = diagnose(observation, DiagnosisSettings.for_request(probe))
        series, dropped = probe_series(observation.target, observation, findings, at)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ProbeCollector(series, observation, dropped))
        return HttpReply(200, CONTENT_TYPE_LATEST, generate_latest(registry))

    async def close(self) -> None:
        """Close the channels held to the inventory's agents."""
        await self._agents.close()

    def budget(self, header: str | None) -> float:
        """The probe's whole deadline: Prometheus's scrape timeout less a margin, at most max_timeout."""
        cap = self._config.max_timeout_s
        if header is None:
            return cap
        try:
            offered = float(header)
        except ValueError:
            raise ProbeRefused(f"{SCRAPE_TIMEOUT_HEADER} {header[:40]!r} is not a number of seconds") from None
        if not offered > 0:
            raise ProbeRefused(f"{SCRAPE_TIMEOUT_HEADER} {header[:40]!r} is not accepted; a number above 0")
        return max(MIN_BUDGET_S, min(cap, offered - SCRAPE_MARGIN_S))


class _ProbeCollector(Collector):
    def __init__(self, series: Snapshot, observation: Observation, dropped: int) -> None:
        self._series = series
        self._observation = observation
        self._dropped = dropped

    def collect(self) -> Iterable[Metric]:
        for spec in PROBE_SPECS:
            family = GaugeMetricFamily(spec.name, spec.help, labels=spec.probe_labels)
            for labels, value in sorted(self._series[spec.name].items()):
                family.add_metric(labels, value)
            yield family
        up = GaugeMetricFamily(AGENT_UP_NAME, "1 when the agent answered this probe, else 0.", labels=("agent",))
        for outcome in self._observation.outcomes:
            up.add_metric((outcome.vantage.name,), 1.0 if outcome.state is VantageState.OK else 0.0)
        yield up
        dropped = CounterMetricFamily(
            DROPPED_NAME, "Series not exported because their metric reached its cap.", labels=("metric",)
        )
        dropped.add_metric((CERT_EXPIRY.name,), float(self._dropped))
        yield dropped


def _first(request: HttpRequest, name: str) -> str:
    values = request.query.get(name)
    return values[0].strip() if values else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())[:1000]
