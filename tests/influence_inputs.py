"""AttributionContext over a tiny random Llama and token-id rows, for curvature and influence
tests that do not need a trained run (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from datablame.config import AttributionConfig, ModelConfig, ModuleSelection, ProjectionConfig
from datablame.data.corpus import Corpus, Query, Row
from datablame.features.context import AttributionContext, ModelInfo
from datablame.models.tokenize import IGNORE, Encoded


def random_rows(n: int, vocab: int = 97, seed: int = 1, min_len: int = 6, max_len: int = 16) -> Encoded:
    """n rows of random ids with a prompt part (ignored) and a completion part (loss)."""
    g = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        prompt = int(torch.randint(1, length - 2, (1,), generator=g))
        x = torch.randint(1, vocab, (length,), generator=g).tolist()
        ids.append(x)
        labels.append([IGNORE] * prompt + x[prompt:])
    return Encoded(ids, labels)


def tiny_inputs(
    model: torch.nn.Module, rows: Encoded, queries: Encoded, *, k: int | None = None,
    pattern: str = r"mlp\.(gate_proj|up_proj|down_proj)$", work_dir: Path | None = None,
    fingerprint: str | None = "tiny-test-model", batch_size: int = 4,
) -> AttributionContext:
    corpus = Corpus([Row(f"r{i}", " ".join(map(str, x)), "") for i, x in enumerate(rows.input_ids)])
    attribution = AttributionConfig(
        modules=ModuleSelection(pattern=pattern), projection=ProjectionConfig(k_in=k, k_out=k), batch_size=batch_size,
    )
    return AttributionContext(
        model=model, tokenizer=SimpleNamespace(pad_token_id=0), corpus=corpus, rows=rows,
        queries=[Query("q", "c", f"q{i}") for i in range(len(queries))], query_rows=queries,
        attribution=attribution, model_cfg=ModelConfig(kind="tiny"), work_dir=work_dir,
        model_info=ModelInfo(source="test", fingerprint=fingerprint),
    )

