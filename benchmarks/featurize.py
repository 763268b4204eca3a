"""Featurize cost: our hook featurizer vs a training step, the activation-only bound, and bergson.

One process, one random-weight Llama, the same rows (random ids, loss on the last half of
each row) for every method:

- train:   forward + backward + AdamW step, all parameters trainable (weights restored
           after each step, outside the timing);
- bound:   forward + backward with every parameter frozen and no hooks, the embedding
           output requiring grad: the floor for a featurizer that never forms weight grads;
- ours:    `GradientFeaturizer.featurize_batch` on MLP gate/up/down_proj, k_in x k_out;
- bergson: one step of bergson's projected collection (its `collect_gradients` loop body:
           pad, forward/backward with its hooks, write into its index) with
           projection_dim = k, so the feature size is the same.

Methods are interleaved within each repeat so machine noise hits them alike. Medians over
`--repeats` after `--warmup`. Then peak memory per call, a profile of each method, and
end-to-end runs (`featurize` over all rows; bergson's `collect_gradients` incl. its setup).

    .venv/bin/python benchmarks/featurize.py                 # CPU, ~5 min on 2 cores
    .venv/bin/python benchmarks/featurize.py --device cuda   # TinyLlama-1.1B shape, bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from datablame.config import ModuleSelection, ProjectionConfig  # noqa: E402
from datablame.grads.featurizer import GradientFeaturizer  # noqa: E402
from datablame.grads.modules import select_modules  # noqa: E402
from datablame.grads.projection import FactoredProjection  # noqa: E402
from datablame.models.tokenize import Encoded, pad_batch, per_row_loss  # noqa: E402

SHAPES = {
    "cpu": dict(layers=4, hidden=256, intermediate=688, heads=4, kv_heads=4, vocab=4096,
                tokens=128, dtype="float32", repeats=7, warmup=1),
    "cuda": dict(layers=22, hidden=2048, intermediate=5632, heads=32, kv_heads=4, vocab=32000,
                 tokens=512, dtype="bfloat16", repeats=10, warmup=2),
}
METHODS = ("train", "bound", "ours", "bergson")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-sizes", default="4,8,16,32")
    ap.add_argument("--k", type=int, default=16, help="k_in = k_out (bergson projection_dim)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    ap.add_argument("--no-bergson", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--out", default=None, help="default benchmarks/results/featurize_<device>.json")
    for key, val in SHAPES["cpu"].items():
        ap.add_argument("--" + key.replace("_", "-"), type=type(val), default=None,
                        help=f"default {val} (cpu) / {SHAPES['cuda'][key]} (cuda)")
    args = ap.parse_args()
    for key, val in SHAPES[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, val)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    return args


def build_model(a, device: torch.device) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
        num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
        max_position_embeddings=max(2048, a.tokens), tie_word_embeddings=False,
    )
    torch.manual_seed(a.seed)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    return model.to(getattr(torch, a.dtype)).eval()


def make_steps(model, feat, bergson, batch, indices, opt, saved):
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]

    def train():
        loss = per_row_loss(model(input_ids=ids, attention_mask=mask).logits, labels).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def bound():
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        losses = per_row_loss(model(inputs_embeds=emb, attention_mask=mask).logits, labels)
        torch.autograd.grad(losses.sum(), emb)

    def restore():
        with torch.no_grad():
            for p, s in zip(model.parameters(), saved, strict=True):
                p.copy_(s)

    steps = {  # name: (prepare, run, after) -- prepare/after are outside the timing
        "train": (lambda: C.set_mode(model, train=True, grad="all"), train, restore),
        "bound": (lambda: C.set_mode(model, train=False, grad="none"), bound, None),
        "ours": (lambda: C.set_mode(model, train=False, grad="none"), lambda: feat.featurize_batch(batch), None),
    }
    if bergson is not None:
        steps["bergson"] = (lambda: C.set_mode(model, train=False, grad="embed"),
                            lambda: bergson.step(indices), None)
    return steps


def call(step, fn) -> object:
    prepare, _run, after = step
    prepare()
    try:
        return fn()
    finally:
        if after is not None:
            after()


def matmul_peak(device, dtype, n: int = 8192, reps: int = 20) -> float:
    """Measured dense matmul FLOP/s at this dtype (CUDA roofline reference)."""
    x = torch.randn(n, n, device=device, dtype=dtype)
    y = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        x @ y
    secs = C.timed(lambda: [x @ y for _ in range(reps)], device)
    return 2 * n**3 * reps / secs


def main() -> None:
    a = parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    info = C.machine(device)
    model = build_model(a, device)
    modules = select_modules(model, ModuleSelection())
    pcfg = ProjectionConfig(k_in=a.k, k_out=a.k, kind="gaussian", seed=a.seed)
    feat = GradientFeaturizer(model, modules, FactoredProjection(pcfg))

    n_rows = 2 * max(a.batch_sizes)
    gen = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(0, a.vocab, (n_rows, a.tokens), generator=gen)
    labels = ids.clone()
    labels[:, : a.tokens // 2] = -100
    rows = Encoded(ids.tolist(), labels.tolist())
    batches = {b: {k: v.to(device) for k, v in pad_batch(rows.input_ids[:b], rows.labels[:b], 0).items()}
               for b in a.batch_sizes}

    tmp = tempfile.TemporaryDirectory(prefix="featurize_bench_")
    bergson, bergson_error = None, None
    if not a.no_bergson:
        try:
            targets = {name.removeprefix("model.") for name, _ in modules}  # relative to base_model
            bergson = C.Bergson(model, rows, targets, a.k, device, tmp.name)
            assert bergson.dim == feat.dim, (bergson.dim, feat.dim)
        except Exception as e:  # not installed, or an API change: report it, time the rest
            bergson_error = f"{type(e).__name__}: {e}"
            print("bergson skipped:", bergson_error, file=sys.stderr)

    saved = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    steps = {b: make_steps(model, feat, bergson, batches[b], list(range(b)), opt, saved) for b in a.batch_sizes}
    methods = list(steps[a.batch_sizes[0]])

    # 1. timing sweep: every repeat runs every batch size and method, so bursts of load from
    # other processes hit all of them alike; repeats where others used >= 10% of the CPU are
    # flagged, and medians use the quiet repeats when there are at least 3 of them
    total_load, rep_load = C.OtherLoad(), []
    sweep = {b: {m: {"times": [], "error": None} for m in methods} for b in a.batch_sizes}
    for rep in range(a.warmup + a.repeats):
        load = C.OtherLoad()
        for b in a.batch_sizes:
            for m in methods:
                if sweep[b][m]["error"]:
                    continue
                try:
                    run = steps[b][m][1]
                    dt = call(steps[b][m], lambda run=run: C.timed(run, device))
                except torch.OutOfMemoryError as e:
                    sweep[b][m]["error"] = f"OOM: {str(e)[:200]}"
                    model.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                    continue
                if rep >= a.warmup:
                    sweep[b][m]["times"].append(dt)
        if rep >= a.warmup:
            rep_load.append(load.share())
            print(f"repeat {len(rep_load)}/{a.repeats}: other processes {rep_load[-1]:.0%} CPU", file=sys.stderr)
    info["other_processes_cpu_share_during_sweep"] = total_load.share()
    info["other_processes_cpu_share_per_repeat"] = rep_load
    quiet = [i for i, x in enumerate(rep_load) if x < 0.1]
    basis = quiet if len(quiet) >= 3 else list(range(len(rep_load)))
    res: dict[int, dict] = {}
    for b in a.batch_sizes:
        res[b] = {}
        for m in methods:
            t = sweep[b][m]["times"]
            if len(t) < len(rep_load):
                res[b][m] = {"error": sweep[b][m]["error"]}
                continue
            med = statistics.median(t[i] for i in basis)
            res[b][m] = {"median_s": med, "median_all_repeats_s": statistics.median(t), "min_s": min(t),
                         "all_s": t, "rows_per_s": b / med}

    def rps(b, m):
        return res[b].get(m, {}).get("rows_per_s")

    best = {m: max((b for b in a.batch_sizes if rps(b, m)), key=lambda b, m=m: rps(b, m), default=None)
            for m in methods}
    bo = best["ours"]

    # 2. profiles (ours' best batch; bergson at its own best)
    profiles = {}
    if not a.no_profile:
        for m in methods:
            b = best[m] if m == "bergson" else bo
            if b is None:
                continue
            run = steps[b][m][1]
            profiles[m] = {"batch_size": b, "ops": call(steps[b][m], lambda run=run: C.top_ops(run, device))}
            if m in ("ours", "bergson") and device.type == "cpu":
                keep = ("bergson",) if m == "bergson" else ("datablame",)
                profiles[m]["python"] = call(steps[b][m], lambda run=run, keep=keep: C.top_python(run, keep))

    # 3. end to end: ours over all rows (pad, featurize, copy out); bergson incl. its setup
    e2e = {}
    if bo:
        feat.featurize(Encoded(rows.input_ids[:bo], rows.labels[:bo]), batch_size=bo)
        s = C.timed(lambda: feat.featurize(rows, batch_size=bo), device)
        e2e["ours"] = {"batch_size": bo, "rows": n_rows, "seconds": s, "rows_per_s": n_rows / s}
    if bergson is not None and best["bergson"]:
        s = bergson.end_to_end(best["bergson"])
        e2e["bergson"] = {"batch_size": best["bergson"], "rows": n_rows, "seconds": s, "rows_per_s": n_rows / s}

    # 4. peak memory, one call per method and batch size (after timing: see _common)
    exact = C.use_exact_malloc() if device.type == "cpu" else True
    for b in a.batch_sizes:
        for m in methods:
            if "error" not in res[b][m]:
                res[b][m]["peak_bytes"] = call(steps[b][m], lambda b=b, m=m: C.peak_bytes(steps[b][m][1], device))
    opt_state = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values()
                    if torch.is_tensor(t))

    # 5. ratios and roofline
    def ratio(x, y):
        return x / y if x and y else None

    ratios = {"batch_size": bo}
    if bo:
        r = res[bo]
        ratios.update({
            "featurize_cost_ratio": ratio(r["ours"]["median_s"], r["train"].get("median_s")),
            "fraction_of_bound": ratio(rps(bo, "ours"), rps(bo, "bound")),
            "fraction_of_best_bound": ratio(rps(bo, "ours"), best["bound"] and rps(best["bound"], "bound")),
            "ours_over_bergson_best": ratio(rps(bo, "ours"), best.get("bergson") and rps(best["bergson"], "bergson")),
            "ours_over_bergson_same_batch": ratio(rps(bo, "ours"), rps(bo, "bergson")),
            "peak_memory_ratio": ratio(r["ours"].get("peak_bytes"), r["train"].get("peak_bytes")),
            "peak_memory_ratio_incl_adamw_state": ratio(
                r["ours"].get("peak_bytes"), (r["train"].get("peak_bytes") or 0) + opt_state),
        })
        if "bergson" in r:
            ratios["peak_memory_ratio_vs_bergson"] = ratio(r["ours"].get("peak_bytes"), r["bergson"].get("peak_bytes"))
    n_linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    roofline = None
    if device.type == "cuda":
        peak = matmul_peak(device, getattr(torch, a.dtype))
        per_row = {"train": 6, "bound": 4, "ours": 4, "bergson": 4}
        roofline = {"matmul_peak_flops": peak, "linear_params": n_linear, "tokens": a.tokens,
                    "flops_per_row": {m: per_row[m] * n_linear * a.tokens for m in methods},
                    "fraction": {m: per_row[m] * n_linear * a.tokens * rps(best[m], m) / peak
                                 for m in methods if best[m]}}

    info["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out = {
        "benchmark": "featurize", "date": C.now(), "device": a.device, "machine": info,
        "model": {"arch": "LlamaForCausalLM (random weights)", "layers": a.layers, "hidden": a.hidden,
                  "intermediate": a.intermediate, "heads": a.heads, "kv_heads": a.kv_heads,
                  "vocab": a.vocab, "dtype": a.dtype, "attn_implementation": model.config._attn_implementation,
                  "params": sum(p.numel() for p in model.parameters()), "linear_params": n_linear},
        "rows": {"n": n_rows, "tokens": a.tokens, "loss_tokens": a.tokens - a.tokens // 2,
                 "labels": "answer-only: last half of each row", "seed": a.seed},
        "featurizer": {"modules": [n for n, _ in modules], "projection": feat.projection.describe(),
                       "feature_dim": feat.dim},
        "settings": {"batch_sizes": a.batch_sizes, "repeats": a.repeats, "warmup": a.warmup,
                     "interleaved": "repeat > batch size > method",
                     "median_over": "quiet repeats (others < 10% CPU)" if basis == quiet else "all repeats", "optimizer": "AdamW(lr=1e-4), torch defaults",
                     "memory": ("peak RSS above the RSS before the call (psutil, 1 ms sampling, glibc "
                                "mmap threshold 64 KiB, malloc_trim before)" if device.type == "cpu"
                                else "torch.cuda.max_memory_allocated above memory_allocated before"),
                     "memory_exact_malloc": exact, "adamw_state_bytes": opt_state},
        "results": {str(b): res[b] for b in a.batch_sizes},
        "best_batch_size": best, "ratios": ratios, "end_to_end": e2e, "roofline": roofline,
        "bergson": {"version": bergson.version, "settings": bergson.settings, "feature_dim": bergson.dim,
                    "entry_point": "GradientCollector + CollectorComputer (as collect_gradients)"}
        if bergson else {"error": bergson_error or "disabled (--no-bergson)"},
        "profiles": profiles, "wall_s": time.perf_counter() - t_start,
    }
    path = Path(a.out) if a.out else Path(__file__).parent / "results" / f"featurize_{a.device}.json"
    C.write_json(path, out)
    tmp.cleanup()
    print_tables(out, methods)
    print(f"\nwrote {path}")
    if info["other_processes_cpu_share_during_sweep"] > 0.1:
        print(f"warning: other processes used {info['other_processes_cpu_share_during_sweep']:.0%} of the "
              "CPU during the timings; rerun on a quiet machine", file=sys.stderr)


def print_tables(out: dict, methods: list[str]) -> None:
    rows = []
    for b, r in out["results"].items():
        med = [r[m].get("median_s") for m in methods]
        mem = [r[m].get("peak_bytes") for m in methods]
        ours, train, bound = r["ours"], r["train"], r["bound"]
        rows.append([int(b), *med, ours.get("rows_per_s"),
                     ours.get("median_s") and train.get("median_s") and ours["median_s"] / train["median_s"],
                     ours.get("rows_per_s") and bound.get("rows_per_s") and ours["rows_per_s"] / bound["rows_per_s"],
                     *(x and x / 2**20 for x in mem)])
    print(C.md_table(["B", *[f"{m} s" for m in methods], "ours rows/s", "ours/train time",
                      "ours/bound rows/s", *[f"{m} MiB" for m in methods]], rows))
    rt = out["ratios"]
    print()
    print(C.md_table(["metric", "value"], [[k, v] for k, v in rt.items()]))
    if out.get("roofline"):
        print(C.md_table(["method", "roofline fraction"], [[m, v] for m, v in out["roofline"]["fraction"].items()]))


if __name__ == "__main__":
    main()
