"""Probe one target from a set of vantages, with the SNI variants asked for or suggested by what was seen.

The one path every caller takes: `tlsfleet probe`, scheduled reports, and whatever comes next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from tlsfleet.agent.model import ProbeRequest
from tlsfleet.coordinator.diagnosis import sni
from tlsfleet.coordinator.diagnosis.observation import Observation, Variant
from tlsfleet.coordinator.fanout import probe_all
from tlsfleet.coordinator.vantage import Vantage


async def observe(
    vantages: Sequence[Vantage], request: ProbeRequest, timeout_s: float, sni_variants: Sequence[str | None] = ()
) -> Observation:
    """Fan the request out, then the variants (to the vantages that answered: the others would spend the
    deadline again)."""
    outcomes = await probe_all(vantages, request, timeout_s)
    first = Observation(request=request, outcomes=outcomes)
    planned = planned_variants(request, sni_variants, first)
    if not planned:
        return first
    answered = {o.vantage.name for o in first.answered}
    live = [v for v in vantages if v.info.name in answered]
    results = await asyncio.gather(*(probe_all(live, v.request, timeout_s) for v in planned))
    return replace(first, variants=tuple(replace(v, outcomes=r) for v, r in zip(planned, results, strict=True)))


def planned_variants(request: ProbeRequest, explicit: Sequence[str | None], observation: Observation) -> list[Variant]:
    """The variants to probe: the ones asked for, plus no-SNI / with-SNI when a name mismatch hints at SNI."""
    wanted = list(explicit)
    if sni.wants_no_sni_variant(observation):
        wanted.append(None)
    if sni.wants_sni_variant(observation):
        wanted.append(request.target.host)
    variants: dict[str, Variant] = {}
    for name in wanted:
        options = request.options
        if name is None:
            if not options.send_sni:
                continue
            label, options = "no SNI", replace(options, send_sni=False, sni=None)
        else:
            if options.send_sni and (options.sni or request.target.host) == name:
                continue
            label, options = f"SNI {name}", replace(options, send_sni=True, sni=name)
        variants.setdefault(label, Variant(label=label, request=replace(request, options=options), outcomes=()))
    return list(variants.values())
