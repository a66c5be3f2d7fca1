"""`python -m tlsfleet.agent serve ...`: the agent's own entry point."""

from .cli import main

main()
