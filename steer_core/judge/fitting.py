"""Choosing and refitting the judge: compare feature views by cross-validation across writers.

The dataset's scenarios were written in six independent batches (scenario-id prefix A..F), each by
a different writer on different subjects. Holding out one batch at a time estimates how the judge
does on feedback "written by other people in other subjects", which is what it will face; the test
split is only reported, never used to choose.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..bloom import LEVELS, FeedbackExample, writer_of
from .classifier import KINDS, BloomJudge, JudgeConfig, embed, make_vectorizer, scores

C_GRID = (0.5, 2.0, 8.0, 32.0)


def writer_group(row: FeedbackExample) -> str:
    """The writing batch of a scenario (bloom.writer_of)."""
    return writer_of(row.scenario_id)


def cross_writer_scores(rows: Sequence[FeedbackExample], cfg: JudgeConfig, emb: np.ndarray) -> dict:
    """Leave-one-writer-out accuracy and macro F1 of a judge config on rows."""
    groups = np.array([writer_group(r) for r in rows])
    y_true, y_pred = [], []
    for g in sorted(set(groups)):
        tr, te = np.where(groups != g)[0], np.where(groups == g)[0]
        judge = fit_judge([rows[i] for i in tr], cfg, embeddings=emb[tr])
        probs = judge.predict_proba([rows[i].feedback for i in te], emb[te])
        y_true += [rows[i].level for i in te]
        y_pred += [LEVELS[int(k)] for k in probs.argmax(1)]
    return scores(y_true, y_pred)


def compare_and_fit(train: Sequence[FeedbackExample], test: Sequence[FeedbackExample], progress: bool = True):
    """Select kind and C by cross-writer CV on train; return (best judge, report)."""
    emb_train = embed([r.feedback for r in train])
    emb_test = embed([r.feedback for r in test])
    candidates = []
    for kind in KINDS:
        if kind == "tfidf":
            candidates += [JudgeConfig(kind=kind, tfidf_C=c) for c in C_GRID]
        elif kind == "embed":
            candidates += [JudgeConfig(kind=kind, embed_C=c) for c in C_GRID]
        else:
            candidates += [JudgeConfig(kind=kind, tfidf_C=a, embed_C=b) for a in C_GRID for b in C_GRID]
    report = {"candidates": []}
    for cfg in tqdm(candidates, desc="cross-writer CV", disable=not progress):
        cv = cross_writer_scores(train, cfg, emb_train)
        report["candidates"].append(
            {
                "kind": cfg.kind,
                "tfidf_C": cfg.tfidf_C,
                "embed_C": cfg.embed_C,
                "cv_accuracy": cv["accuracy"],
                "cv_macro_f1": cv["macro_f1"],
            }
        )
    best_per_kind = {}
    for cfg, rec in zip(candidates, report["candidates"]):
        if cfg.kind not in best_per_kind or rec["cv_macro_f1"] > best_per_kind[cfg.kind][1]["cv_macro_f1"]:
            best_per_kind[cfg.kind] = (cfg, rec)
    report["per_kind"] = {}
    judges = {}
    for kind, (cfg, rec) in best_per_kind.items():
        judge = fit_judge(train, cfg, embeddings=emb_train)
        probs = judge.predict_proba([r.feedback for r in test], emb_test)
        test_scores = scores([r.level for r in test], [LEVELS[int(k)] for k in probs.argmax(1)])
        report["per_kind"][kind] = {
            "config": {"tfidf_C": cfg.tfidf_C, "embed_C": cfg.embed_C},
            "cv_accuracy": rec["cv_accuracy"],
            "cv_macro_f1": rec["cv_macro_f1"],
            "test": test_scores,
        }
        judges[kind] = judge
    chosen = max(best_per_kind, key=lambda k: best_per_kind[k][1]["cv_macro_f1"])
    report["chosen"] = chosen
    return judges[chosen], report


def _fit_lr(x, y: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=C, max_iter=5000)
    lr.fit(x, y)
    return lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32)


def fit_judge(rows: Sequence[FeedbackExample], cfg: JudgeConfig, embeddings: np.ndarray | None = None) -> BloomJudge:
    """Fit a judge of cfg.kind on rows; embeddings (aligned with rows) may be passed to save time."""
    texts = [r.feedback for r in rows]
    y = np.array([r.level_index for r in rows])
    vec = tw = tb = ew = eb = None
    if cfg.kind in ("tfidf", "combined"):
        vec = make_vectorizer(cfg)
        x = vec.fit_transform(texts)
        tw, tb = _fit_lr(x, y, cfg.tfidf_C)
    if cfg.kind in ("embed", "combined"):
        e = embeddings if embeddings is not None else embed(texts)
        ew, eb = _fit_lr(e, y, cfg.embed_C)
    return BloomJudge(cfg, vec, tw, tb, ew, eb)
