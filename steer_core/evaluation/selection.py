"""How a shipped strength is chosen, and how much fluency a shipped setting may cost: the rule every
default follows, declared once.

- The rule: among the settings measured on validation (writers D-F of the train split), the most
  accurate whose perplexity is within VALIDATION_MARGIN of unsteered's; a margin under BUDGET, so
  that the test split stays within the budget.
- The guard: on a handful of test scenarios, every shipped steering method at strength 1 keeps the
  median perplexity ratio under GUARD (tests/test_fluency_guard.py), so a broken vector or a wrong
  scale fails CI instead of reaching users.
"""

from __future__ import annotations

from collections.abc import Sequence

VALIDATION_MARGIN = 1.4  # the rule: within 1.4x unsteered perplexity on validation
BUDGET = 1.5  # what a shipped setting may cost on test
GUARD = 2.0  # CI's bound at strength 1, on a handful of test scenarios (median perplexity ratio)


def within(summary_row: dict, margin: float = VALIDATION_MARGIN) -> bool:
    ratio = summary_row.get("ppl_ratio")
    return ratio is not None and ratio == ratio and ratio <= margin


def choose(summary: Sequence[dict], method: str, margin: float = VALIDATION_MARGIN) -> dict | None:
    """The rule's pick among a summary's overall rows (level "ALL") of one method: the most accurate
    within the margin (ties: the lower perplexity). None when no setting is within it."""
    rows = [s for s in summary if s["method"] == method and s["level"] == "ALL" and within(s, margin)]
    return max(rows, key=lambda s: (s["accuracy"], -s["ppl_ratio"]), default=None)
