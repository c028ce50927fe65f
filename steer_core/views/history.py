"""This browser's last runs: each entry is a run's report (without its bulky charts) and its link, kept in the
user's own browser (nothing is stored on the server); a click on one restores it (views.reports)."""

from __future__ import annotations

HISTORY_SIZE = 20
BULKY = ("figures", "attention_html")  # left out of the browser's history (about 35 KB a run): the link
# and the downloaded report have them


def history_entry(record: dict, query: str) -> dict:
    """One line of the browser's history: when, which view, which level, the question's first words, and the
    report itself, so that a click restores it."""
    question = record["inputs"]["question"]
    words = " ".join(question.split()[:8]) + (" ..." if len(question.split()) > 8 else "")
    return {
        "time": record.get("created", ""),
        "view": record.get("view", "compare"),
        "level": record["inputs"].get("level") or "every level",
        "question": words,
        "query": query,
        "report": {k: v for k, v in record.items() if k not in BULKY},
    }


def add_to_history(history, entry: dict) -> list[dict]:
    """The newest run first, the same run (the same link) once, at most HISTORY_SIZE."""
    history = [h for h in (history or []) if isinstance(h, dict) and h.get("query") != entry["query"]]
    return [entry, *history][:HISTORY_SIZE]


def history_rows(history) -> list[list[str]]:
    return [[h["time"][:16].replace("T", " "), h["view"], h["level"], h["question"]] for h in history or []]
