"""`python -m tlsfleet.coordinator.cli ...`: the `tlsfleet` command."""

from .launch import main

main()
