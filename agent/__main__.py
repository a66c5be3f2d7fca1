"""`python -m tlsfleet.agent serve ...`: the agent's own entry point."""

from . import startup_collection

startup_collection.pause()  # before the command line's imports; the agent resumes collection once it serves
from .cli import main  # noqa: E402

main()
