"""The retrieval cascade: metadata filter -> embedding search -> BM25 -> gradient re-rank."""

from datablame.features.text_index import (
    BM25Index,
    EmbeddingIndex,
    TextIndices,
    build_text_indices,
    load_text_indices,
    text_index_dir,
)
from datablame.retrieval.cascade import (
    CascadeResult,
    QueryCascade,
    StageReport,
    run_cascade,
    run_cascade_for_inputs,
)
from datablame.retrieval.filter import MetadataFilter, compile_filter
from datablame.retrieval.rerank import GradientReranker, Reranker

__all__ = [
    "BM25Index", "CascadeResult", "EmbeddingIndex", "GradientReranker", "MetadataFilter", "QueryCascade",
    "Reranker", "StageReport", "TextIndices", "build_text_indices", "compile_filter", "load_text_indices",
    "run_cascade", "run_cascade_for_inputs", "text_index_dir",
]
