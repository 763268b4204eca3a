"""On-disk feature store (sharded fp16, memory-mapped, hashed manifest), exact streaming
search and FAISS indexes. Build with `build_store`, read with `open_store`, query with
`exact_topk` or `build_faiss_index(...).search`."""

from datablame.store.faiss_index import (
    FaissIndex,
    build_faiss_index,
    load_faiss_index,
    recall_at_k_vs_exact,
    tune_nprobe,
)
from datablame.store.manifest import StoreInfo
from datablame.store.reader import FeatureStore, open_store
from datablame.store.search import exact_scores, exact_topk
from datablame.store.writer import append_rows, build_store

__all__ = [
    "FaissIndex",
    "FeatureStore",
    "StoreInfo",
    "append_rows",
    "build_faiss_index",
    "build_store",
    "exact_scores",
    "exact_topk",
    "load_faiss_index",
    "open_store",
    "recall_at_k_vs_exact",
    "tune_nprobe",
]
