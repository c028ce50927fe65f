"""One result line of an experiment: printed, and appended to its results file where one was given."""

from __future__ import annotations

import json


def emit(line: dict, path: str | None) -> None:
    print(json.dumps(line), flush=True)
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
