"""Instructed replies: the model's own replies when the prompt names the level, as fitting data for steering
(the model as a teacher in distillation terms; "instructed" here, since the app's user is the teacher).

Told the level, the adapted model writes it far more often than steering makes it (instruction
prompting is the strongest method we measure), and its replies are in-distribution text that we can
sample as often as we like. Fitting offsets on them asks steering of the plain prompt to do what the
instruction does. Each scenario gets `per_level` sampled replies at every level; sample i of every
level forms one contrast group, so the fitting code treats a group like a dataset scenario.

The judge's reading of every reply is kept (`judged`, `judged_prob`), so that a filter can keep only
replies read at their level (rejection sampling) and a report can say how often the instructed model hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..bloom import LEVELS, FeedbackExample, scenarios
from ..errors import UserError
from ..generation import MAX_BATCH


@dataclass(frozen=True)
class InstructedConfig:
    """How the instructed replies are sampled; stored with them."""

    per_level: int = 3
    temperature: float = 0.8
    max_new_tokens: int = 64
    seed: int = 0
    batch: int = MAX_BATCH  # rows per generation batch

    def __post_init__(self):
        if not 1 <= self.per_level <= 20:
            raise UserError(f"per_level must be from 1 to 20, got {self.per_level!r}")
        if not self.temperature > 0:
            raise UserError("instructed replies are sampled: temperature must be > 0")
        if self.max_new_tokens < 2 or self.batch < 1:
            raise UserError("max_new_tokens must be >= 2 and batch >= 1")


def sample_instructed(
    lm, rows: Sequence[FeedbackExample], cfg: InstructedConfig | None = None, judge=None, progress: bool = True
) -> list[dict]:
    """Rows in the dataset's format (plus `sample`, `judged`, `judged_prob`): for every scenario of
    `rows`, cfg.per_level replies at each level under the instruction prompt."""
    from ..generation import Request, generate_batch  # the model's stack, only when sampling

    cfg = cfg or InstructedConfig()
    scs = scenarios(rows)
    if not scs:
        raise UserError("no scenarios to sample instructed replies for")
    todo = [(sc, lv, i) for sc in scs for lv in LEVELS for i in range(cfg.per_level)]
    out: list[dict] = []
    bar = tqdm(total=len(todo), desc="instructed replies", disable=not progress)
    for b, start in enumerate(range(0, len(todo), cfg.batch)):
        chunk = todo[start : start + cfg.batch]
        reqs = [
            Request(sc.question, sc.student_answer, "instruction", lv, scenario_id=sc.scenario_id)
            for sc, lv, _ in chunk
        ]
        # each row samples its own reply from one seeded generator: copies of a request differ
        outs = generate_batch(
            lm, reqs, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed + b
        )
        for (sc, lv, i), o in zip(chunk, outs):
            out.append(
                {
                    "id": f"{sc.scenario_id}-{lv}-t{i}",
                    "scenario_id": sc.scenario_id,
                    "subject": sc.subject,
                    "question": sc.question,
                    "student_answer": sc.student_answer,
                    "level": lv,
                    "feedback": o.text if o.text.strip() else "(empty)",
                    "split": sc.split,
                    "sample": i,
                }
            )
        bar.update(len(chunk))
    bar.close()
    if judge is not None:
        probs = judge.predict_proba([r["feedback"] for r in out])
        for r, p in zip(out, probs):
            r["judged"] = LEVELS[int(p.argmax())]
            r["judged_prob"] = round(float(p[LEVELS.index(r["level"])]), 4)
    return out


def sample_own(
    lm, rows: Sequence[FeedbackExample], cfg: InstructedConfig | None = None, progress: bool = True
) -> list[dict]:
    """The model's own replies to the plain prompt (no level named), cfg.per_level of them per scenario of
    `rows`, sampled like the instructed ones: the other side of RePS's preference pairs (its "original" replies)."""
    from ..generation import Request, generate_batch

    cfg = cfg or InstructedConfig()
    scs = scenarios(rows)
    if not scs:
        raise UserError("no scenarios to sample replies for")
    todo = [(sc, i) for sc in scs for i in range(cfg.per_level)]
    out: list[dict] = []
    bar = tqdm(total=len(todo), desc="own replies", disable=not progress)
    for b, start in enumerate(range(0, len(todo), cfg.batch)):
        chunk = todo[start : start + cfg.batch]
        reqs = [Request(sc.question, sc.student_answer, "none", scenario_id=sc.scenario_id) for sc, _ in chunk]
        outs = generate_batch(
            lm, reqs, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed + 1000 + b
        )
        for (sc, i), o in zip(chunk, outs):
            out.append(
                {"scenario_id": sc.scenario_id, "sample": i, "feedback": o.text if o.text.strip() else "(empty)"}
            )
        bar.update(len(chunk))
    bar.close()
    return out


def judged_at_level(rows: Sequence[dict]) -> list[dict]:
    """Rejection sampling: only the replies the judge reads at their own level, regrouped so that
    each scenario's kept replies form as many complete groups (one reply of every level) as it can."""
    if any("judged" not in r for r in rows):
        raise UserError("these instructed replies were not judged; sample them with a judge to filter them")
    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["judged"] == r["level"]:
            by.setdefault((r["scenario_id"], r["level"]), []).append(r)
    out = []
    for sid in dict.fromkeys(r["scenario_id"] for r in rows):
        groups = min(len(by.get((sid, lv), [])) for lv in LEVELS)
        for lv in LEVELS:
            for i, r in enumerate(by.get((sid, lv), [])[:groups]):
                out.append({**r, "sample": i})
    return out


def hit_rate(rows: Sequence[dict]) -> float:
    """Share of the instructed replies the judge reads at their own level."""
    judged = [r for r in rows if "judged" in r]
    return sum(r["judged"] == r["level"] for r in judged) / max(1, len(judged))
