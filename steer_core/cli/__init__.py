"""`python -m steer_core <command>`: the stable command-line contract (reference: docs/cli.md)."""

from .commands import main

__all__ = ["main"]
