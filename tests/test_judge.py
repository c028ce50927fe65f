"""The shipped judge: accuracy on the held-out split, probabilities, persistence, refitting."""

import numpy as np
import pytest

from steer_core.bloom import LEVELS
from steer_core.judge.classifier import BloomJudge, JudgeConfig, default_judge, scores
from steer_core.judge.fitting import fit_judge


@pytest.fixture(scope="module")
def judge():
    return default_judge()


def test_judge_is_accurate_on_test_split(judge, dataset):
    test = [r for r in dataset if r.split == "test"]
    preds = [v["pred"] for v in judge.judge([r.feedback for r in test])]
    s = scores([r.level for r in test], preds)
    assert s["accuracy"] >= 0.85, s
    assert s["macro_f1"] >= 0.85, s


def test_probabilities_cover_all_levels(judge):
    out = judge.judge(["Name the four chambers of the heart and label them on the diagram.", ""])
    for v in out:
        assert list(v["probs"]) == list(LEVELS)
        assert abs(sum(v["probs"].values()) - 1) < 1e-3
        assert v["pred"] == max(v["probs"], key=v["probs"].get)
    assert judge.predict_proba([]).shape == (0, 6)


def test_tfidf_judge_round_trips_and_beats_chance(tmp_path, dataset):
    train = [r for r in dataset if r.split == "train"]
    test = [r for r in dataset if r.split == "test"]
    j = fit_judge(train, JudgeConfig(kind="tfidf", tfidf_C=4.0))
    j.save(tmp_path)
    j2 = BloomJudge.load(tmp_path)
    texts = [r.feedback for r in test]
    np.testing.assert_allclose(j.predict_proba(texts), j2.predict_proba(texts), atol=1e-6)
    acc = np.mean([LEVELS[i] == r.level for i, r in zip(j2.predict_proba(texts).argmax(1), test)])
    assert acc > 0.5  # chance is 1/6


def test_load_reports_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="fit-judge"):
        BloomJudge.load(tmp_path)
