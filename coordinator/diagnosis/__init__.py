"""Diagnosis: probe outcomes in, ranked findings out. Pure: no sockets, no clocks, no globals."""

from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Evidence, Finding, Severity
from tlsfleet.coordinator.diagnosis.observation import DiagnosisSettings, Observation, Variant

__all__ = ["Cause", "DiagnosisSettings", "Evidence", "Finding", "Observation", "Severity", "Variant", "diagnose"]
