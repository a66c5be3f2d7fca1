"""`tlsfleet diagnose FILE`: the diagnosis of a saved recording, offline."""

from __future__ import annotations

from pathlib import Path

import typer

from tlsfleet.coordinator import exit_codes


def run_diagnose(path: Path, *, fail_on: str, clock_tolerance: float, json_output: bool) -> int:
    from tlsfleet.coordinator.probe_command import ProbeArgumentError, diagnosis_options, show_observation
    from tlsfleet.coordinator.recording import RecordingError, load

    try:
        observation = load(path)
        severity, settings = diagnosis_options(observation.request, fail_on, clock_tolerance)
    except (RecordingError, ProbeArgumentError) as error:
        typer.echo(f"error: {error}", err=True)
        return exit_codes.USAGE
    return show_observation(observation, settings, fail_on=severity, json_output=json_output)
