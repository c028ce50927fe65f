"""Instructed replies: the model's own instruction-prompted replies, sampled per scenario and level, grouped so
that the offset fitting reads them like dataset scenarios; the judge filter keeps complete groups."""

import json

import numpy as np
import pytest
from tiny import char_tokenizer, tiny_lm

from steer_core.bloom import LEVELS, FeedbackExample, load_dataset
from steer_core.errors import UserError
from steer_core.fit.instructed import InstructedConfig, hit_rate, judged_at_level, sample_instructed
from steer_core.fit.offsets import _encode_scenarios


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=3, tokenizer=char_tokenizer())


def scenario(sid):
    return FeedbackExample(f"{sid}-x", sid, "maths", f"What is {sid}?", "No idea.", "apply", "unused", "train")


class RememberJudge:
    """Reads every reply as "remember" (deterministic, for the hit rate)."""

    def predict_proba(self, texts):
        return np.tile(np.eye(len(LEVELS))[0], (len(texts), 1))


def test_teacher_samples_every_level_of_every_scenario_in_groups(lm, tmp_path):
    cfg = InstructedConfig(per_level=2, max_new_tokens=6, batch=10)
    rows = sample_instructed(lm, [scenario("A01"), scenario("B02")], cfg, judge=RememberJudge(), progress=False)
    assert len(rows) == 2 * len(LEVELS) * 2
    assert {(r["scenario_id"], r["level"], r["sample"]) for r in rows} == {
        (s, lv, i) for s in ("A01", "B02") for lv in LEVELS for i in range(2)
    }
    # copies of one request sample different replies (one generator for the batch, a draw per row)
    texts = {(r["scenario_id"], r["level"]): set() for r in rows}
    for r in rows:
        texts[(r["scenario_id"], r["level"])].add(r["feedback"])
    assert any(len(t) == 2 for t in texts.values())
    assert hit_rate(rows) == pytest.approx(1 / len(LEVELS))  # only "remember" replies are read at their level
    # the dataset loader reads them, and the fitting groups them per (scenario, sample)
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_dataset(path)
    assert sorted({r.sample for r in loaded}) == [0, 1]
    groups = _encode_scenarios(lm.tokenizer, loaded, "plain", 20)
    assert len(groups) == 4 and all(len(g.replies) == len(LEVELS) for g in groups)


def test_judged_filter_keeps_only_complete_groups_of_replies_read_at_their_level():
    def row(sid, lv, i, judged):
        return {"scenario_id": sid, "level": lv, "sample": i, "judged": judged, "feedback": f"{sid}{lv}{i}"}

    rows = [row("A01", lv, i, lv) for lv in LEVELS for i in range(3)]  # all read at their level
    rows[0]["judged"] = "create"  # A01 remember sample 0 missed: remember keeps 2, so 2 groups
    rows += [row("B02", lv, 0, lv) for lv in LEVELS[:-1]] + [row("B02", "create", 0, "apply")]  # B02 loses create
    kept = judged_at_level(rows)
    assert {r["scenario_id"] for r in kept} == {"A01"}
    assert len(kept) == 2 * len(LEVELS)
    assert sorted({r["sample"] for r in kept}) == [0, 1]
    assert all(r["judged"] == r["level"] for r in kept)
    with pytest.raises(UserError, match="not judged"):
        judged_at_level([{k: v for k, v in rows[1].items() if k != "judged"}])


def test_teacher_config_refuses_greedy_and_bad_counts():
    with pytest.raises(UserError, match="temperature"):
        InstructedConfig(temperature=0)
    with pytest.raises(UserError, match="per_level"):
        InstructedConfig(per_level=0)
