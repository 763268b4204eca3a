"""Assemble a plan: per-stage peak memory and time, store size, query latency, and the settings
(projection size, batch size, precision, FAISS kind) that fit a memory budget.

The budget is checked against the largest stage peak on the device (CPU: process RSS; CUDA:
device memory, with the store's shard buffers, score matrices and FAISS index on the host).
Settings are tried from the configured ones down, cheapest loss of quality last: gradient
checkpointing and smaller batches first (only slower; at each batch size checkpointing is tried
before halving it), then bfloat16 (then float16 on CUDA), then IVF-PQ instead of an
index holding every row in float32, then smaller projections (32x32, 16x16, 8x8). When even the
smallest fails, one error names that smallest requirement and the stage that needs it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from datablame.config import ProjectionConfig
from datablame.errors import DatablameError
from datablame.plan.costs import (
    Calibration,
    Shape,
    Workload,
    human,
    memory,
    query_latency,
    seconds,
    store_disk_bytes,
)
from datablame.plan.shapes import ModelShape, module_feature_dims

HOST_PARTS = ("shard", "faiss", "score_matrix", "block", "fit_row_features")
STAGE_ORDER = ("train", "featurize", "factors", "scores")


def to_shape(ms: ModelShape, proj: ProjectionConfig) -> Shape:
    mods = []
    for m in ms.modules:
        ko, ki = module_feature_dims(m, proj)
        mods.append((m.d_in, m.d_out, ki, ko))
    return Shape(ms.params, ms.matmul_params, ms.layers, ms.hidden, ms.intermediate, ms.vocab, ms.heads, mods)


def device_peak(parts: dict[str, float], device: str) -> float:
    """Bytes the stage needs on the device: everything on CPU; on CUDA not the host-side parts."""
    if device == "cpu":
        return parts["total"]
    return parts["total"] - sum(parts.get(k, 0.0) for k in HOST_PARTS)


def estimate(ms: ModelShape, proj: ProjectionConfig, w: Workload, c: Calibration, dtype: str,
             tokens_per_query: float) -> dict[str, Any]:
    s = to_shape(ms, proj)
    mem, sec = memory(s, w, c, dtype), seconds(s, w, c, dtype)
    stages = {}
    for name in STAGE_ORDER:
        if name in mem or name in sec:
            parts_m, parts_s = mem.get(name, {}), sec.get(name, {})
            stages[name] = {"peak_bytes": device_peak(parts_m, c.device) if parts_m else None,
                            "seconds": parts_s.get("total"), "memory_parts": parts_m, "time_parts": parts_s}
    return {"dim": s.dim, "stages": stages, "store": store_disk_bytes(s, w),
            "query": query_latency(s, w, c, tokens_per_query)}


def _peak(est: dict[str, Any]) -> tuple[float, str]:
    name, st = max(((n, st) for n, st in est["stages"].items() if st["peak_bytes"] is not None),
                   key=lambda x: x[1]["peak_bytes"])
    return st["peak_bytes"], name


def _candidates(proj: ProjectionConfig, w: Workload, dtype: str, device: str):
    """(projection, precision, faiss, checkpointing, train batch, featurize batch) from the configured
    setting down."""
    k = min(x for x in (proj.k_in, proj.k_out, 10**9) if x is not None)
    projs = [proj] + [proj.model_copy(update={"k_in": s, "k_out": s}) for s in (32, 16, 8) if s < k]
    precs = [dtype] + [p for p in (["bfloat16", "float16"] if device == "cuda" else ["bfloat16"]) if p != dtype
                       and not (dtype != "float32" and p == "float16")]
    kinds = [w.faiss] + (["ivfpq"] if w.faiss in ("flat", "ivf") else [])
    for p in projs:
        for prec in precs:
            for kind in kinds:
                tb, fb = w.train_batch, w.feat_batch
                while True:
                    yield p, prec, kind, w.checkpointing, tb, fb
                    if not w.checkpointing:
                        yield p, prec, kind, True, tb, fb
                    if tb == 1 and fb == 1:
                        break
                    tb, fb = max(1, tb // 2), max(1, fb // 2)


def recommend(ms: ModelShape, proj: ProjectionConfig, w: Workload, c: Calibration, dtype: str, budget: int,
              tokens_per_query: float) -> dict[str, Any]:
    """The first setting (see module doc) whose largest stage peak fits `budget`, or an error
    naming the smallest requirement."""
    smallest = None
    for p, prec, kind, ck, tb, fb in _candidates(proj, w, dtype, c.device):
        steps = w.train_steps * w.train_batch // tb if w.train_steps else 0
        ww = replace(w, faiss=kind, checkpointing=ck, train_batch=tb, feat_batch=fb, train_steps=steps,
                     train_tokens_per_step=w.train_tokens_per_step * tb / max(w.train_batch, 1))
        est = estimate(ms, p, ww, c, prec, tokens_per_query)
        peak, stage = _peak(est)
        if peak <= budget:
            changed = [f"projection {p.k_in}x{p.k_out}" if p is not proj else None,
                       f"precision {prec}" if prec != dtype else None, f"FAISS {kind}" if kind != w.faiss else None,
                       "model.gradient_checkpointing true" if ck != w.checkpointing else None,
                       f"training batch {tb}" if tb != w.train_batch else None,
                       f"featurize batch {fb}" if fb != w.feat_batch else None]
            return {"fits": True, "budget_bytes": budget, "peak_bytes": peak, "peak_stage": stage,
                    "projection": {"k_in": p.k_in, "k_out": p.k_out}, "precision": prec, "faiss": kind,
                    "gradient_checkpointing": ck,
                    "train_batch": tb, "featurize_batch": fb, "changes": [x for x in changed if x] or ["none"]}
        if smallest is None or peak < smallest[0]:
            smallest = (peak, stage, p, prec, kind, ck, tb, fb)
    peak, stage, p, prec, kind, ck, tb, fb = smallest  # type: ignore[misc]
    raise DatablameError(
        f"memory budget {human(budget)} fits no setting: the smallest plan (projection {p.k_in}x{p.k_out}, {prec}, "
        f"FAISS {kind}, batch {tb}{', gradient checkpointing' if ck else ''}) still needs {human(peak)} at the {stage} stage",
        f"raise --memory-budget to at least {human(peak)}, or plan a smaller model (model.*) or fewer rows",
    )


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a plain-text table plus the store, query and recommendation lines."""
    c = plan["calibration"]
    lines = [f"plan for {plan['config']} on {c['device']} ({c['source']} calibration, {plan['dtype']}): "
             f"{plan['model']['params'] / 1e6:.2f} M parameters, {plan['workload']['rows']} rows, "
             f"{plan['workload']['queries']} queries, {plan['dim']} floats per row", ""]
    header = f"{'stage':<10} {'peak memory':>12} {'time':>10}  largest parts"
    lines += [header, "-" * len(header)]
    for name, st in plan["stages"].items():
        mem = human(st["peak_bytes"]) if st["peak_bytes"] is not None else "-"
        parts = sorted(((k, v) for k, v in st["time_parts"].items() if k != "total"), key=lambda x: -x[1])[:2]
        skip = ("total", "runtime") + (HOST_PARTS if c["device"] != "cpu" else ())
        mparts = sorted(((k, v) for k, v in st["memory_parts"].items() if k not in skip), key=lambda x: -x[1])[:2]
        what = ", ".join([f"{k} {v:.1f} s" for k, v in parts] + [f"{k} {human(v)}" for k, v in mparts])
        lines.append(f"{name:<10} {mem:>12} {st['seconds']:>9.1f}s  {what}")
    store, q = plan["store"], plan["query"]
    lines += ["", f"store on disk: {human(store['total'])} ({human(store['shards'])} features, "
                  f"{human(store['faiss'])} FAISS {plan['workload']['faiss']})",
              f"query latency (model loaded): exact {q['exact_s'] * 1000:.3g} ms, ANN {q['ann_s'] * 1000:.3g} ms "
              f"(features {q['features_s'] * 1000:.3g} ms)"]
    r = plan.get("recommendation")
    if r:
        lines.append(f"budget {human(r['budget_bytes'])}: fits with {', '.join(r['changes'])} "
                     f"(peak {human(r['peak_bytes'])} at {r['peak_stage']})")
    lines += [f"note: {n}" for n in c["notes"] + plan.get("notes", [])]
    return "\n".join(lines)
