"""Console entry point `tlsfleet`: the start-up caches (dataclasses' generated code, regular expressions'
compiled code) first, then the CLI."""

from __future__ import annotations

import sys

# Commands that run until stopped: their start-up is paid once, and the cache's entries for every other
# command's classes (about a megabyte once many commands have run) would stay resident for nothing.
_LONG_RUNNING = (("agent", "serve"), ("coordinator", "serve"))


def main() -> None:
    """Run the `tlsfleet` command line (coordinator/cli/app.py) with dataclass_code and pattern_code installed
    before the imports that define dataclasses and compile patterns, and their new entries saved as the
    process ends."""
    words = tuple(a for a in sys.argv[1:] if not a.startswith("-"))[:2]
    if words in _LONG_RUNNING:
        from .app import main as run

        run()
        return
    from . import dataclass_code, pattern_code

    dataclass_code.install()
    pattern_code.install()
    try:
        from .app import main as run

        run()
    finally:
        dataclass_code.save()
        pattern_code.save()
