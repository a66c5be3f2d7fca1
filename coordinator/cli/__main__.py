"""`python -m tlsfleet.coordinator.cli ...`: the `tlsfleet` command."""

from .app import main

main()
