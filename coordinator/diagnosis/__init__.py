"""Diagnosis: probe outcomes in, ranked findings out. Pure: no sockets, no clocks, no globals.

`engine.diagnose` runs every rule module; `model` holds the findings, `observation` the input.
"""
