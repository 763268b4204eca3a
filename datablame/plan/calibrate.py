"""Measure the device for `datablame plan`: a few seconds of real work on the configured shape.

On the chosen device, with random weights of the configured architecture (the full model when it
has at most `FULL_DEPTH_PARAMS` parameters, else copies with 1 and 2 decoder layers whose times
are extrapolated linearly to the full depth), one batch of `batch` rows x `tokens` tokens is
timed for: a training step (forward, backward, AdamW), a featurize batch (the real
`GradientFeaturizer` with the run's modules and projection), a no-grad forward and greedy decode
steps; the model is saved and loaded back (`save_model`/`load_model`, fingerprint included);
a small feature store is written and one query scored over it (`build_store`, `dot_scores`).
The process start (interpreter + imports) is read from /proc, the runtime's RSS is the
process' RSS before any of this. Without the device at hand (`--device cuda` on a CPU
machine), the GPU figures are derived from `costs.GPU_ASSUMPTION` and marked assumed.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from datablame.config import ModelConfig, ModuleSelection, ProjectionConfig
from datablame.plan.costs import (
    BYTES,
    CUDA_CONTEXT,
    GPU_ASSUMPTION,
    Calibration,
    Shape,
    flops_per_token,
)

FULL_DEPTH_PARAMS = 60_000_000
STORE_ROWS = 4096


def rss_bytes() -> int:
    """This process' resident set size now (Linux /proc; 0 elsewhere)."""
    with contextlib.suppress(OSError):  # no /proc (not Linux): 0
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def process_age_s() -> float:
    """Seconds since this process started (interpreter start + imports so far)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, min_s: float = 0.4, max_repeat: int = 20) -> float:
    """Median wall seconds of one call: one warm-up call, then calls until `min_s` has passed
    (at least 3): a single short call on a shared CPU is mostly noise."""
    fn()
    out: list[float] = []
    while len(out) < 3 or (sum(out) < min_s and len(out) < max_repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _depth_model(config: Any, layers: int, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    c = config.__class__.from_dict({**config.to_dict(), "num_hidden_layers": layers})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(c)
    return model.to(device=device, dtype=dtype)


def _measure_model(model, sel: ModuleSelection, proj: ProjectionConfig, batch: int, tokens: int,
                   device: torch.device) -> dict[str, float]:
    """Seconds for one training step, featurize batch, forward, and per decode token."""
    from datablame.grads.featurizer import GradientFeaturizer
    from datablame.grads.modules import select_modules
    from datablame.grads.projection import FactoredProjection

    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (batch, tokens), generator=gen).to(device)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : tokens // 2] = -100
    out: dict[str, float] = {}

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out["train"] = _time(step, device)
    opt.state.clear()  # free AdamW's moments before the featurize timing
    model.eval()
    feat = GradientFeaturizer(model, select_modules(model, sel, warn=False), FactoredProjection(proj), bias=sel.bias)
    b = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    with feat._frozen():
        out["featurize"] = _time(lambda: feat.featurize_batch(b), device)
    with torch.no_grad():
        out["fwd"] = _time(lambda: model(input_ids=ids, attention_mask=mask), device)
        prompt = ids[:1, : max(1, tokens // 2)]
        past = model(input_ids=prompt, use_cache=True).past_key_values
        nxt = prompt[:, -1:]
        # one greedy step with the KV cache, as datablame.features.behaviour decodes (the cache
        # is not grown, so every timed step costs the same)
        out["decode_token"] = _time(lambda: model(input_ids=nxt, past_key_values=past, use_cache=True).logits[0, -1].argmax(),
                                    device)
    return out


def _round_trip(model, tokenizer, model_cfg: ModelConfig, work: Path) -> tuple[float, float]:
    """(save seconds, load seconds) of the model through `save_model` / `load_model`."""
    from datablame.models.loading import load_model, save_model

    t0 = time.perf_counter()
    save_model(model, tokenizer, work / "calibration-model")
    save_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_model(model_cfg.model_copy(update={"adapter": None}), path_override=str(work / "calibration-model"))
    return save_s, time.perf_counter() - t0


def _store_rates(dim: int, work: Path) -> tuple[float, float]:
    """(bytes written per second, elements scored per second) on a small real feature store."""
    import numpy as np

    from datablame.store import build_store, open_store
    from datablame.store.rows import StoreRows, dot_scores

    rows = max(256, min(STORE_ROWS, (32 << 20) // max(dim * 4, 1)))
    rng = np.random.default_rng(0)
    data = rng.standard_normal((rows, dim), dtype=np.float32)
    t0 = time.perf_counter()
    info = build_store(work / "calibration-store", n_rows=rows, row_ids=[str(i) for i in range(rows)],
                       identity={"model_fingerprint": "plan", "data_fingerprint": "plan"},
                       featurize=lambda a, b: data[a:b], dim=dim, shard_size=rows, progress=False)
    write_s = time.perf_counter() - t0
    store_rows = StoreRows(open_store(info.path))
    q = torch.from_numpy(data[:1].copy())
    dot_s = _time(lambda: dot_scores(q, store_rows, normalize=True), torch.device("cpu"))
    return info.nbytes / write_s, rows * dim / dot_s


def _flops_rate(device: torch.device, dtype: torch.dtype) -> float:
    n = 1024 if device.type == "cpu" else 4096
    a = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _time(lambda: a @ a, device)


def measure(
    shape: Shape, hf_config: Any, model_cfg: ModelConfig, sel: ModuleSelection, proj: ProjectionConfig, tokenizer: Any,
    *, device: str, dtype: str, batch: int, tokens: int, base_bytes: int, startup_s: float, prep_s: float,
) -> Calibration:
    """Calibrate on `device` (cpu, or cuda when present) at `batch` x `tokens` per batch."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the save/load round trip would draw bars on stderr
    try:
        return _measure(shape, hf_config, model_cfg, sel, proj, tokenizer, device=device, dtype=dtype, batch=batch,
                        tokens=tokens, base_bytes=base_bytes, startup_s=startup_s, prep_s=prep_s)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _measure(
    shape: Shape, hf_config: Any, model_cfg: ModelConfig, sel: ModuleSelection, proj: ProjectionConfig, tokenizer: Any,
    *, device: str, dtype: str, batch: int, tokens: int, base_bytes: int, startup_s: float, prep_s: float,
) -> Calibration:
    dev = torch.device(device)
    tdtype = getattr(torch, dtype)
    notes: list[str] = []
    per_tok = batch * tokens
    with tempfile.TemporaryDirectory(prefix="datablame-plan-") as tmp:
        work = Path(tmp)
        if shape.params <= FULL_DEPTH_PARAMS:
            model = _depth_model(hf_config, shape.layers, dev, tdtype)
            t = _measure_model(model, sel, proj, batch, tokens, dev)
            notes.append(f"timed the full model ({shape.layers} layers) at {batch} rows x {tokens} tokens")
        else:
            m1 = _depth_model(hf_config, 1, dev, tdtype)
            t1 = _measure_model(m1, sel, proj, batch, tokens, dev)
            del m1
            model = _depth_model(hf_config, 2, dev, tdtype)
            t2 = _measure_model(model, sel, proj, batch, tokens, dev)
            t = {k: t1[k] + (shape.layers - 1) * max(t2[k] - t1[k], 0.0) for k in t1}
            notes.append(f"timed 1- and 2-layer copies at {batch} rows x {tokens} tokens, extrapolated to "
                         f"{shape.layers} layers")
        cal_params = sum(p.numel() for p in model.parameters())
        save_s, load_s = _round_trip(model, tokenizer, model_cfg, work) if tokenizer is not None else (1.0, 1.0)
        del model
        save_rate, dot_rate = _store_rates(shape.dim, work)
    e = BYTES[dtype]
    return Calibration(
        device=dev.type, source="measured", dtype=dtype, base_bytes=base_bytes if dev.type == "cpu" else CUDA_CONTEXT,
        startup_s=startup_s, prep_s=prep_s, train_s_per_token=t["train"] / per_tok,
        feat_s_per_token=t["featurize"] / per_tok, fwd_s_per_token=t["fwd"] / per_tok,
        decode_s_per_token=t["decode_token"], load_fixed_s=0.0, load_bytes_per_s=cal_params * e / max(load_s, 1e-6),
        save_bytes_per_s=min(save_rate, cal_params * e / max(save_s, 1e-6)), dot_elems_per_s=dot_rate,
        flops_per_s=_flops_rate(dev, tdtype if dev.type == "cuda" else torch.float32), notes=notes,
    )


def assumed_gpu(shape: Shape, *, dtype: str, tokens: int, startup_s: float, prep_s: float,
                host: Calibration | None = None) -> Calibration:
    """GPU figures from `GPU_ASSUMPTION` (no GPU here to measure): FLOPs / (peak x MFU)."""
    g = GPU_ASSUMPTION
    rate = g["peak_tflops"] * 1e12 * g["mfu"]
    bw = g["hbm_gb_per_s"] * 1e9
    e = BYTES[dtype]
    return Calibration(
        device="cuda", source="assumed", dtype=dtype, base_bytes=CUDA_CONTEXT, startup_s=startup_s, prep_s=prep_s,
        train_s_per_token=flops_per_token(shape, tokens, "train") / rate,
        feat_s_per_token=flops_per_token(shape, tokens, "featurize") / rate,
        fwd_s_per_token=flops_per_token(shape, tokens, "fwd") / rate,
        decode_s_per_token=shape.params * e / bw, load_fixed_s=2.0, load_bytes_per_s=2e9,
        save_bytes_per_s=host.save_bytes_per_s if host else 1e9, dot_elems_per_s=bw / 2, flops_per_s=rate,
        notes=[f"no CUDA device here: GPU throughput {g['note']} ({g['name']}), HBM {g['hbm_gb_per_s']:.0f} GB/s"],
    )
