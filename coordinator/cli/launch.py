"""Console entry point `tlsfleet`: the start-up cache of dataclasses' generated code first, then the CLI."""

from __future__ import annotations


def main() -> None:
    """Run the `tlsfleet` command line (coordinator/cli/app.py) with dataclass_code installed before the
    imports that define dataclasses, and its new entries saved as the process ends."""
    from . import dataclass_code

    dataclass_code.install()
    try:
        from .app import main as run

        run()
    finally:
        dataclass_code.save()
