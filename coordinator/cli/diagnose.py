"""`tlsfleet diagnose FILE`: the diagnosis of a saved recording, offline."""

from __future__ import annotations

from pathlib import Path


def run_diagnose(path: Path, *, fail_on: str, clock_tolerance: float, json_output: bool, notes: bool = False) -> int:
    from ..recording import load
    from .probe import diagnosis_options, show_observation

    observation = load(path)
    severity, settings = diagnosis_options(observation.request, fail_on, clock_tolerance)
    return show_observation(observation, settings, fail_on=severity, json_output=json_output, notes=notes)
