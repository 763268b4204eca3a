"""The arithmetic of `datablame plan`: bytes and seconds per stage from shapes, workload and a
calibration. Pure functions of their inputs (no torch), so each figure can be checked by hand.

Notation: P parameters, e bytes per model element (4 float32, 2 bfloat16/float16), L layers,
d hidden size, I intermediate size, V vocabulary, H heads, B batch rows, T padded tokens per
row, N training rows, Q queries, D floats per stored row (sum over modules of k_out x k_in).

Memory (peak, bytes; on CPU the process RSS, so the measured runtime baseline is added):
- weights P*e; training adds gradients P*e and AdamW's two moments 2*P*e;
- activations kept for backward, per token: L*((10*d + 4*I)*e + 2*H*T*e) + 4*V*4 (the
  decoder layer's saved tensors, the attention probabilities, the float32 logits and their
  log-softmax/gradient copies); the model trains in the dtype it is loaded in; with gradient
  checkpointing L*d*e per token (each layer's input) plus one layer's share, and 4/3 the step time;
- featurize: the same activations (no weight gradients; with checkpointing as above and 3/2 the
  time, one forward replayed on top of forward + activation backward) plus, per module, the projected inputs
  and output gradients of the batch, and the shard being written: shard_rows x D x (4+4+2);
  the FAISS build holds every row in RAM: flat N*D*4, IVF-Flat N*(D*4+8), IVF-PQ N*(m+8);
- attribute: the model (and the base model, for `base_loss`), the query features, the
  [Q, N] float64 score matrix per method (+1 for the ranking), one 64 MiB float64 scoring block
  with its float32 copy (shards are read with plain reads, so RSS never holds the store) and
  curvature factors when fitted.

Store on disk: N*D*s (s = 2 for float16) + N*4 norms + N*4 row losses + 128-byte .npy headers
per file + the FAISS index (flat N*D*4, IVF-Flat N*(D*4+8) + nlist*D*4, IVF-PQ N*(m+8) + nlist*D*4)
+ row ids (~len+4 bytes each).

Seconds: process start + corpus preparation + model loads/saves (bytes over measured rates) +
tokens x measured seconds per token for training steps, featurize batches, forward passes and
decode steps + elements x measured seconds per element for store scoring and FAISS k-means.
FLOPs per token (forward 2*matmul_params + 4*L*T*d; training 3x; featurize 2x plus the
projections) scale a calibration measured on a shallower copy of the model to its full depth,
and give GPU times from a stated throughput when no GPU is at hand to calibrate on.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from datablame.errors import DatablameError

GiB = 1 << 30
MiB = 1 << 20
NPY_HEADER = 128
SCORE_BLOCK = 64 * MiB  # datablame.store.rows.BLOCK_BYTES
CUDA_CONTEXT = 600 * MiB  # CUDA context + kernels, counted in device memory before any tensor
KMEANS_ITERS = 25  # faiss' default k-means iterations
ANN_NPROBE = 4  # typical tuned nprobe (benchmarks/results/ann_attribute*.json)
ANN_CANDIDATES = 200
# what a GPU sustains when none is at hand to measure (H100/H200 SXM, bf16 dense): peak x MFU
GPU_ASSUMPTION = {"name": "H100/H200 (bf16 dense)", "peak_tflops": 989.0, "mfu": 0.35,
                  "hbm_gb_per_s": 3350.0, "note": "assumed, not measured: 35 % of the 989 TFLOP/s bf16 peak"}
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Shape:
    """What the arithmetic needs of a model (see shapes.ModelShape)."""

    params: int
    matmul_params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    modules: list[tuple[int, int, int, int]]  # per selected module: (d_in, d_out, k_in_eff (+bias), k_out_eff)

    @property
    def dim(self) -> int:
        return sum(ko * ki for _, _, ki, ko in self.modules)


@dataclass
class Workload:
    rows: int
    queries: int = 0
    train_steps: int = 0  # optimizer steps (0: no training stage)
    train_batch: int = 8
    train_tokens_per_step: float = 0.0  # mean padded tokens per optimizer step
    train_max_tokens: int = 0  # longest row (padded width of the widest batch)
    feat_batch: int = 8
    feat_tokens: int = 0  # padded tokens over all featurize batches of the rows
    query_tokens: int = 0  # padded tokens over the query batches
    completion_tokens: int = 0  # tokens greedy decoding may produce for the queries (upper bound)
    checkpoint_saves: int = 0
    tiny: bool = False  # a tiny model is built, saved as base and reloaded before training
    shard_rows: int = 4096
    store_bytes: int = 2  # bytes per stored element (float16)
    faiss: str = "flat"  # flat | ivf | ivfpq | none
    methods: int = 1
    fit_rows_tokens: int = 0  # padded tokens of the rows curvature factors are fitted on (0: none)
    id_bytes: int = 8  # mean row-id length
    checkpointing: bool = False  # model.gradient_checkpointing: training and featurizing keep only each layer's input


@dataclass
class Calibration:
    """Seconds per unit of work on the device; `source` is measured or assumed (GPU figures)."""

    device: str
    source: str
    dtype: str
    base_bytes: int  # process RSS after imports (CPU) or the CUDA context (GPU)
    startup_s: float
    prep_s: float
    train_s_per_token: float
    feat_s_per_token: float
    fwd_s_per_token: float
    decode_s_per_token: float
    load_fixed_s: float
    load_bytes_per_s: float
    save_bytes_per_s: float
    dot_elems_per_s: float  # store elements x queries scored per second (fp16 -> fp32 dot)
    flops_per_s: float  # dense FLOP/s (FAISS k-means, FLOP-scaled figures)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_bytes(text: str) -> int:
    """'16GB' / '512MiB' / '1.5g' / '2000000' -> bytes (GB = GiB = 2^30, as memory is sold)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text).lower())
    if not m:
        raise DatablameError(f"--memory-budget {text!r} is not a size", "write it as e.g. 16GB, 512MB or 1.5GiB")
    return int(float(m.group(1)) * 1024 ** "bkmgt".index(m.group(2) or "b"))


def human(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def act_bytes_per_token(s: Shape, t: int, e_act: int) -> float:
    """Activations kept for backward per token: decoder layers, attention probabilities, logits."""
    return s.layers * ((10 * s.hidden + 4 * s.intermediate) * e_act + 2 * s.heads * t * e_act) + 4 * s.vocab * 4


def flops_per_token(s: Shape, t: int, kind: str) -> float:
    """Forward 2*matmul + attention 4*L*T*d; train 3x forward; featurize 2x forward + projections."""
    fwd = 2 * s.matmul_params + 4 * s.layers * t * s.hidden
    if kind == "fwd":
        return fwd
    if kind == "train":
        return 3 * fwd
    proj = sum(2 * (di * (ki - 1) + do * ko + ki * ko) for di, do, ki, ko in s.modules)
    return 2 * fwd + proj


def store_disk_bytes(s: Shape, w: Workload, *, nlist: int | None = None, m_pq: int | None = None) -> dict[str, int]:
    """Bytes on disk of `<run>/store`: shards, norms, row losses, ids and the FAISS index."""
    n, d = w.rows, s.dim
    shards = max(1, math.ceil(n / w.shard_rows))
    nl = nlist or default_nlist(n)
    m = m_pq or pq_m(d)
    faiss = {"none": 0, "flat": n * d * 4 + 45,
             "ivf": n * (d * 4 + 8) + nl * d * 4,
             "ivfpq": n * (m + 8) + nl * d * 4 + 256 * d * 4}[w.faiss]
    out = {"shards": n * d * w.store_bytes + shards * NPY_HEADER, "norms": n * 4 + shards * NPY_HEADER,
           "row_losses": n * 4 + shards * NPY_HEADER, "row_ids": n * (w.id_bytes + 4), "faiss": faiss}
    out["total"] = sum(out.values())
    return out


def default_nlist(n: int) -> int:
    """datablame.store.manifest.default_nlist: ~4*sqrt(N), at least 39 rows per list."""
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


def pq_m(dim: int) -> int:
    """datablame.store.faiss_index._default_m: largest divisor of dim with >= 4 dims each (<= 64)."""
    return max(d for d in range(1, min(64, max(1, dim // 4)) + 1) if dim % d == 0)


def faiss_ram_bytes(s: Shape, w: Workload) -> int:
    n, d = w.rows, s.dim
    nl = default_nlist(n)
    train = min(n, max(40 * nl, 1000)) * d * 4
    return {"none": 0, "flat": n * d * 4, "ivf": n * (d * 4 + 8) + train,
            "ivfpq": n * (pq_m(d) + 8) + train}[w.faiss]


def _e(dtype: str) -> int:
    return BYTES[dtype]


def kept_bytes_per_token(s: Shape, t: int, e_act: int, checkpointing: bool) -> float:
    """Activation bytes per token kept for backward; with checkpointing each layer's input is kept
    and one layer's activations are recomputed at a time (the logits' copies stay)."""
    per_token = act_bytes_per_token(s, t, e_act)
    if not checkpointing:
        return per_token
    head = 4 * s.vocab * 4
    return s.layers * s.hidden * e_act + (per_token - head) / s.layers + head


def memory(s: Shape, w: Workload, c: Calibration, dtype: str) -> dict[str, dict[str, float]]:
    """Peak bytes per stage, split into parts (each part's bytes, and 'total' with the baseline).
    The model trains in the dtype it is loaded in (AdamW's moments too)."""
    e = et = e_act = _e(dtype)
    w_bytes = s.params * e
    out: dict[str, dict[str, float]] = {}
    if w.train_steps:
        t = w.train_max_tokens
        per_token = kept_bytes_per_token(s, t, e_act, w.checkpointing)
        out["train"] = {"weights": s.params * et, "grads": s.params * et, "adamw": 2 * s.params * et,
                        "activations": w.train_batch * t * per_token}
    t = w.train_max_tokens or 1
    acts = w.feat_batch * t * kept_bytes_per_token(s, t, e_act, w.checkpointing)
    per_mod = w.feat_batch * t * sum((ki + do) * 4 for di, do, ki, ko in s.modules) + w.feat_batch * s.dim * 4
    shard = min(w.shard_rows, w.rows) * s.dim * (4 + 4 + 2)
    out["featurize"] = {"weights": w_bytes, "activations": acts + per_mod, "shard": shard,
                        "faiss": max(0.0, faiss_ram_bytes(s, w) - (acts + per_mod + shard))}
    store = store_disk_bytes(s, w)["shards"]
    scores = w.queries * w.rows * 8 * (w.methods + 1)
    q_acts = min(w.feat_batch, max(w.queries, 1)) * t * kept_bytes_per_token(s, t, e_act, w.checkpointing)
    out["scores"] = {"weights": w_bytes * (2 if w.tiny else 1), "activations": q_acts, "score_matrix": scores,
                     "block": min(SCORE_BLOCK, w.rows * s.dim * 8) + min(SCORE_BLOCK // 2, store * 2)}
    if w.fit_rows_tokens:
        factors = sum(3 * (ki * ki + ko * ko) * 4 + ki * ko * 4 for di, do, ki, ko in s.modules)
        out["factors"] = {"weights": w_bytes, "activations": acts + per_mod, "factors": factors,
                          "fit_row_features": (w.fit_rows_tokens / max(t, 1)) * s.dim * 4}
    for parts in out.values():
        parts["runtime"] = c.base_bytes
        parts["total"] = sum(parts.values())
    return out


def seconds(s: Shape, w: Workload, c: Calibration, dtype: str) -> dict[str, dict[str, float]]:
    """Wall seconds per stage (the stage's command, process start included), split into parts."""
    e = et = _e(dtype)
    load = c.load_fixed_s + s.params * e / c.load_bytes_per_s
    fixed = {"startup": c.startup_s, "prepare": c.prep_s}
    out: dict[str, dict[str, float]] = {}
    if w.train_steps:
        saves = s.params * et * (2 if w.tiny else 1) + w.checkpoint_saves * 4 * s.params * et
        out["train"] = {**fixed, "load": load * (3 if w.tiny else 2), "save": saves / c.save_bytes_per_s,
                        # checkpointing recomputes the forward in backward: 4 passes instead of 3
                        "steps": w.train_steps * w.train_tokens_per_step * c.train_s_per_token
                        * (4 / 3 if w.checkpointing else 1)}
    disk = store_disk_bytes(s, w)
    n, d = w.rows, s.dim
    if w.faiss == "flat":
        # the float32 copy written to disk, and recall@10 of 100 sampled rows (one matmul)
        faiss = 2 * 100 * n * d / c.flops_per_s + n * d * 4 / c.save_bytes_per_s
    elif w.faiss in ("ivf", "ivfpq"):
        nl = default_nlist(n)
        n_train = min(n, max(40 * nl, 1000))
        faiss = (2 * d * nl * (KMEANS_ITERS * n_train + n)) / c.flops_per_s + disk["faiss"] / c.save_bytes_per_s
    else:
        faiss = 0.0
    # checkpointing replays each layer's forward once in backward: forward + backward + forward
    feat_s = c.feat_s_per_token * (3 / 2 if w.checkpointing else 1)
    out["featurize"] = {**fixed, "load": load, "featurize": w.feat_tokens * feat_s,
                        "write": (disk["total"] - disk["faiss"]) / c.save_bytes_per_s, "faiss": faiss}
    if w.fit_rows_tokens:
        out["factors"] = {"featurize": 1.2 * w.fit_rows_tokens * feat_s}
    loads = 2 if w.tiny else 1
    out["scores"] = {**fixed, "load": load * loads, "query_features": w.query_tokens * feat_s,
                     "scoring": w.methods * w.queries * n * d / c.dot_elems_per_s,
                     "behaviour": loads * w.query_tokens * c.fwd_s_per_token + w.completion_tokens * c.decode_s_per_token}
    if w.fit_rows_tokens:  # factors are fitted inside `datablame attribute`: its own row, and part of scores
        out["scores"]["factors"] = out["factors"]["featurize"]
    for parts in out.values():
        parts["total"] = sum(parts.values())
    return out


def query_latency(s: Shape, w: Workload, c: Calibration, tokens_per_query: float) -> dict[str, float]:
    """Seconds for one query once the model is loaded: its features + exact or ANN search."""
    n, d = w.rows, s.dim
    feat = tokens_per_query * c.feat_s_per_token * (3 / 2 if w.checkpointing else 1)
    nl = default_nlist(n)
    ann = (nl * d + n * d * min(ANN_NPROBE, nl) / nl + ANN_CANDIDATES * d) / c.dot_elems_per_s
    return {"features_s": feat, "exact_s": feat + n * d / c.dot_elems_per_s, "ann_s": feat + ann}
