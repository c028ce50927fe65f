"""`python -m steer_core <command>`: the stable command-line contract (reference: docs/cli.md). Each command's
options live beside its function (judge, generate, evaluate, fit, bench, host); what they share, in common.

Errors the user can fix (a missing file, a malformed line, a bad option) print one line on stderr and exit
with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from . import bench, evaluate, fit, generate, host, judge


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m steer_core", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for commands in (judge, generate, evaluate, bench, fit, host):
        commands.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, FileNotFoundError) as exc:  # the user can fix these: one line, status 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
