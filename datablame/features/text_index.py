"""Lexical (BM25) and semantic (sentence-embedding) indices over the rows' text.

Shared by the `bm25` / `embedding_cosine` baselines and the retrieval cascade; not a method.
A row's text is `Row.text` (prompt + completion, exactly what the model was trained on); a
query's text is its prompt + completion.

- `BM25Index`: bm25s (Lucene BM25, k1=1.5, b=0.75). Tokens: lower-cased runs of >= 2 word
  characters (bm25s' default pattern), English stop words removed (bm25s' "en" list), no
  stemmer -- so "mapped" and "map" are different terms. Scores are >= 0; a query sharing no
  term with a row scores it 0. Deterministic (no randomness; ties break toward the lower row).
- `EmbeddingIndex`: unit-norm all-MiniLM-L6-v2 vectors in a FAISS IndexFlatIP (exact inner
  product = cosine in [-1, 1]); search can be restricted to candidate rows (IDSelectorBatch).

`build_text_indices(corpus, out_dir)` writes both under a directory (normally
`<run>/index/text`, see `text_index_dir`) with `manifest.json` recording the corpus
fingerprint; `load_text_indices(out_dir, corpus)` refuses indices built from other rows.
Everything is written into a temporary directory and renamed into place, so an interrupted
build never leaves half an index behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datablame.data.corpus import Corpus, Query
from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.layout import RunLayout
from datablame.models.embedder import DEFAULT_EMBEDDING_MODEL, embed
from datablame.utils.io import atomic_write_json, make_temp_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"  # written last into a text-index folder: marks a complete build
BM25_TOKENIZER = {"lower": True, "token_pattern": r"(?u)\b\w\w+\b", "stopwords": "en", "stemmer": None}
_REBUILD = "rebuild them: `datablame index --config <run.yaml>` (or build_text_indices(corpus, out_dir))"


def text_index_dir(run_dir: str | Path) -> Path:
    """Where a run keeps its text indices."""
    return RunLayout(run_dir).text_index_dir


def has_text_indices(out_dir: str | Path) -> bool:
    """Whether a complete build of text indices is saved at `out_dir`."""
    return (Path(out_dir) / MANIFEST).is_file()


def saved_manifest(out_dir: str | Path | None) -> dict | None:
    """The manifest of the text indices saved at `out_dir`; None when there are none."""
    if out_dir is None or not has_text_indices(out_dir):
        return None
    return json.loads((Path(out_dir) / MANIFEST).read_text("utf-8"))


def row_texts(corpus: Corpus) -> list[str]:
    return [r.text for r in corpus]


def query_texts(queries: Sequence[Query]) -> list[str]:
    """prompt + completion of each query (the completion must be known by now)."""
    out = []
    for q in queries:
        if q.completion is None:
            raise DatablameError(
                f"query {q.query_id or q.prompt[:40]!r} has no completion, so its text is unknown",
                "give the completion, or prepare the queries first (api.prepare_inputs generates it)",
            )
        out.append(q.prompt + q.completion)
    return out


def topk_desc(scores: np.ndarray, k: int, candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row indices) of the k highest scores, best first; ties break toward the lower
    row index, so the order is deterministic and equals a stable sort restricted to the top.

    `candidates` (row indices) restricts the choice to those rows; `scores` is then indexed
    by row (the full score vector), not by candidate position.
    """
    scores = np.asarray(scores)
    rows = np.arange(len(scores)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    s = scores[rows]
    k = max(0, min(int(k), len(rows)))
    if k == 0:
        return s[:0], rows[:0]
    if k < len(rows):
        kth = np.partition(-s, k - 1)[k - 1]
        keep = np.flatnonzero(-s <= kth)  # everything tied with the k-th is kept, then cut
        rows, s = rows[keep], s[keep]
    order = np.lexsort((rows, -s))[:k]
    return s[order], rows[order]


def tokenize_bm25(texts: Sequence[str]) -> list[list[str]]:
    """The BM25 tokens of each text (see the module docstring)."""
    import bm25s

    if len(texts) == 0:
        return []
    return bm25s.tokenize(
        list(texts), lower=True, stopwords="en", stemmer=None, return_ids=False, show_progress=False,
    )


class BM25Index:
    """A bm25s index over the rows, addressed by row position."""

    def __init__(self, model: Any, n_rows: int, params: dict[str, Any]) -> None:
        self.model, self.n_rows, self.params = model, n_rows, params

    @classmethod
    def build(cls, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> BM25Index:
        import bm25s

        if len(texts) == 0:
            raise DatablameError("cannot build a BM25 index over an empty corpus", "check data.path and the cleaning report")
        model = bm25s.BM25(k1=k1, b=b, method="lucene")
        model.index(tokenize_bm25(texts), show_progress=False)
        return cls(model, len(texts), {"k1": k1, "b": b, "method": "lucene", "tokenizer": BM25_TOKENIZER})

    def save(self, path: str | Path) -> None:
        self.model.save(str(path), show_progress=False)

    @classmethod
    def load(cls, path: str | Path, n_rows: int, params: dict[str, Any]) -> BM25Index:
        import bm25s

        model = bm25s.BM25.load(str(path), load_corpus=False, mmap=False, show_progress=False)
        return cls(model, n_rows, params)

    def scores(self, query_texts: Sequence[str]) -> np.ndarray:
        """BM25 score of every row for each query: float32 [Q, n_rows]."""
        out = np.zeros((len(query_texts), self.n_rows), dtype=np.float32)
        for qi, tokens in enumerate(tokenize_bm25(query_texts)):
            known = self.model.get_tokens_ids(tokens)
            if known:  # a query without any indexed term scores every row 0
                out[qi] = self.model.get_scores_from_ids(known)
        return out

    def search(self, query_texts: Sequence[str], k: int, candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) per query, optionally among `candidates` only."""
        res = [topk_desc(s, k, candidates) for s in self.scores(query_texts)]
        return np.stack([r[0] for r in res]), np.stack([r[1] for r in res])


class EmbeddingIndex:
    """Unit-norm sentence embeddings of the rows in an exact FAISS inner-product index."""

    def __init__(self, index: Any, model: str) -> None:
        self.index = index  # datablame.store.faiss_index.FaissIndex (flat, metric "dot")
        self.model = model

    @property
    def n_rows(self) -> int:
        return self.index.n_rows

    @property
    def dim(self) -> int:
        return self.index.dim

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, model: str) -> EmbeddingIndex:
        import faiss

        from datablame.store.faiss_index import FaissIndex

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        info = {"embedding_model": model, "normalized": True}
        return cls(FaissIndex(flat, kind="flat", metric="dot", dim=vectors.shape[1], n_rows=len(vectors), info=info), model)

    @classmethod
    def build(cls, texts: Sequence[str], *, model: str = DEFAULT_EMBEDDING_MODEL, batch_size: int = 64,
              progress: bool = False) -> EmbeddingIndex:
        if len(texts) == 0:
            raise DatablameError("cannot build an embedding index over an empty corpus", "check data.path and the cleaning report")
        return cls.from_vectors(embed(texts, model=model, batch_size=batch_size, progress=progress), model)

    def save(self, path: str | Path) -> None:
        self.index.save(path)

    @classmethod
    def load(cls, path: str | Path, model: str) -> EmbeddingIndex:
        from datablame.store.faiss_index import load_faiss_index

        return cls(load_faiss_index(path), model)

    def embed_queries(self, query_texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return embed(query_texts, model=self.model, batch_size=batch_size)

    def vectors(self) -> np.ndarray:
        return self.index.index.reconstruct_n(0, self.n_rows)

    def scores(self, query_vectors: np.ndarray) -> np.ndarray:
        """Cosine of every row with each query: float32 [Q, n_rows]."""
        return np.asarray(query_vectors, dtype=np.float32) @ self.vectors().T

    def search(self, query_vectors: np.ndarray, k: int, candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (cosines, rows) per query, optionally among `candidates` only (exact search)."""
        import faiss

        q = np.ascontiguousarray(query_vectors, dtype=np.float32)
        n = self.n_rows if candidates is None else len(candidates)
        k = min(int(k), n)
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if candidates is None:
            s, i = self.index.index.search(q, k)
        else:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(candidates, dtype=np.int64))
            s, i = self.index.index.search(q, k, params=faiss.SearchParameters(sel=sel))
        return s.astype(np.float32), i.astype(np.int64)


@dataclass
class TextIndices:
    """The text indices of one corpus (either may be absent) and their manifest."""

    data_fingerprint: str
    n_rows: int
    bm25: BM25Index | None = None
    embedding: EmbeddingIndex | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def check_corpus(self, corpus: Corpus) -> None:
        fp = corpus.fingerprint()
        if fp != self.data_fingerprint or len(corpus) != self.n_rows:
            where = f" at {self.path}" if self.path else ""
            raise DatablameError(
                f"text indices{where} were built from another corpus ({self.n_rows} rows, data fingerprint "
                f"{self.data_fingerprint[:12]}) than this one ({len(corpus)} rows, {fp[:12]})",
                _REBUILD,
            )


def _manifest(corpus_fp: str, n_rows: int, bm25: BM25Index | None, emb: EmbeddingIndex | None,
              seconds: dict[str, float]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "data_fingerprint": corpus_fp,
        "n_rows": n_rows,
        "bm25": None if bm25 is None else {"dir": "bm25", **bm25.params},
        "embedding": None if emb is None else {"file": "embeddings.faiss", "model": emb.model, "dim": emb.dim},
        "build_seconds": seconds,
    }


def _matches(manifest: dict[str, Any], fp: str, bm25: bool, embedding: bool, model: str) -> bool:
    return (
        manifest.get("format_version") == FORMAT_VERSION and manifest.get("data_fingerprint") == fp
        and (not bm25 or manifest.get("bm25") is not None)
        and (not embedding or (manifest.get("embedding") or {}).get("model") == model)
    )


def build_text_indices(
    corpus: Corpus,
    out_dir: str | Path | None = None,
    *,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    bm25: bool = True,
    embedding: bool = True,
    batch_size: int = 64,
    progress: bool = True,
    reuse: bool = True,
) -> TextIndices:
    """Build the BM25 and/or embedding index of `corpus`; with `out_dir`, save them there.

    With `reuse`, indices already at `out_dir` for the same corpus (and embedding model) are
    loaded instead of rebuilt. The directory is replaced atomically (temp dir + rename).
    """
    fp = corpus.fingerprint()
    if out_dir is not None and reuse and (manifest := saved_manifest(out_dir)) is not None:
        if _matches(manifest, fp, bm25, embedding, embedding_model):
            log.info("reusing text indices at %s", out_dir)
            return load_text_indices(out_dir, corpus, bm25=bm25, embedding=embedding)
        why = ("the data changed since they were built" if manifest.get("data_fingerprint") != fp
               else "they were built with another format or embedding model")
        log.info("rebuilding the text indices at %s: %s", out_dir, why)
    texts = row_texts(corpus)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    bm = BM25Index.build(texts) if bm25 else None
    seconds["bm25"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = EmbeddingIndex.build(texts, model=embedding_model, batch_size=batch_size, progress=progress) if embedding else None
    seconds["embedding"] = time.perf_counter() - t0
    manifest = _manifest(fp, len(corpus), bm, emb, seconds)
    out = TextIndices(fp, len(corpus), bm, emb, manifest)
    if out_dir is not None:
        out.path = _save(out, Path(out_dir))
    return out


def _save(idx: TextIndices, out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir.parent, prefix=f".{out_dir.name}.tmp-")
    try:
        if idx.bm25 is not None:
            idx.bm25.save(tmp / "bm25")
        if idx.embedding is not None:
            idx.embedding.save(tmp / "embeddings.faiss")
        atomic_write_json(tmp / MANIFEST, idx.manifest)  # written last: marks a complete build
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return out_dir


def load_text_indices(
    out_dir: str | Path, corpus: Corpus | None = None, *, bm25: bool = True, embedding: bool = True,
) -> TextIndices:
    """Load the indices saved at `out_dir`; with `corpus`, refuse ones built from other rows."""
    out_dir = Path(out_dir)
    mpath = out_dir / MANIFEST
    if not mpath.is_file():
        raise DatablameError(f"no text indices at {out_dir} ({MANIFEST} missing)", _REBUILD)
    manifest = json.loads(mpath.read_text("utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatablameError(f"text indices at {out_dir} have format {manifest.get('format_version')}, "
                             f"this datablame reads {FORMAT_VERSION}", _REBUILD)
    out = TextIndices(manifest["data_fingerprint"], int(manifest["n_rows"]), manifest=manifest, path=out_dir)
    if corpus is not None:
        out.check_corpus(corpus)
    for want, key in ((bm25, "bm25"), (embedding, "embedding")):
        if want and manifest.get(key) is None:
            raise DatablameError(f"the text indices at {out_dir} have no {key} index", _REBUILD)
    if bm25:
        params = {k: v for k, v in manifest["bm25"].items() if k != "dir"}
        out.bm25 = BM25Index.load(out_dir / manifest["bm25"]["dir"], out.n_rows, params)
    if embedding:
        e = manifest["embedding"]
        out.embedding = EmbeddingIndex.load(out_dir / e["file"], e["model"])
        if out.embedding.n_rows != out.n_rows:
            raise DatablameError(f"the embedding index at {out_dir} covers {out.embedding.n_rows} rows, "
                                 f"its manifest {out.n_rows}", _REBUILD)
    return out


def _run_indices(ctx: AttributionContext, *, bm25: bool, embedding: bool, model: str) -> TextIndices | None:
    """The run's saved indices when they match this corpus; None when absent or stale."""
    if ctx.run_dir is None:
        return None
    path = text_index_dir(ctx.run_dir)
    manifest = saved_manifest(path)
    if manifest is None:
        return None
    if not _matches(manifest, ctx.corpus.fingerprint(), bm25, embedding, model):
        log.warning("text indices at %s do not match this corpus or model; building them in memory "
                    "(rerun `datablame index` to refresh them)", path)
        return None
    return load_text_indices(path, ctx.corpus, bm25=bm25, embedding=embedding)


def bm25_index_for(ctx: AttributionContext, *, k1: float = 1.5, b: float = 0.75) -> BM25Index:
    """The BM25 index of `ctx.corpus` (AttributionContext): the run's saved one when it
    matches (and has these parameters), else built in memory; kept in `ctx.shared.bm25`."""
    key = (k1, b)
    if key not in ctx.shared.bm25:
        idx = None
        if (k1, b) == (1.5, 0.75):
            saved = _run_indices(ctx, bm25=True, embedding=False, model="")
            idx = saved.bm25 if saved is not None else None
        ctx.shared.bm25[key] = idx or BM25Index.build(row_texts(ctx.corpus), k1=k1, b=b)
    return ctx.shared.bm25[key]


def embedding_index_for(ctx: AttributionContext, *, model: str = DEFAULT_EMBEDDING_MODEL, batch_size: int = 64) -> EmbeddingIndex:
    """The embedding index of `ctx.corpus`, like `bm25_index_for`."""
    if model not in ctx.shared.embeddings:
        saved = _run_indices(ctx, bm25=False, embedding=True, model=model)
        ctx.shared.embeddings[model] = saved.embedding if saved is not None else EmbeddingIndex.build(
            row_texts(ctx.corpus), model=model, batch_size=batch_size, progress=len(ctx.corpus) > 2000)
    return ctx.shared.embeddings[model]
