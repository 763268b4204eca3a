"""Gradient checkpointing while featurizing: peak memory and time, with vs without, in one run.

One random-weight Llama, long rows (random ids, loss on the last half), `GradientFeaturizer.
featurize_batch` on the MLP and attention projections at 32x32, the two settings interleaved
within each repeat. Peak memory is what one call adds on top of what was live before it
(CPU: process RSS polled every ms, glibc returning large blocks on free; CUDA: the allocator's
peak). The planner's activation estimate (`datablame.plan.costs.kept_bytes_per_token`) is
reported next to the measurement, and the features of both settings are compared.

    .venv/bin/python benchmarks/featurize_checkpointing.py                 # CPU, ~2 min on 2 cores
    .venv/bin/python benchmarks/featurize_checkpointing.py --device cuda   # TinyLlama-1.1B shape, bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from datablame.config import ModuleSelection, ProjectionConfig  # noqa: E402
from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules  # noqa: E402
from datablame.plan.costs import Shape, kept_bytes_per_token  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def build(args, device: torch.device) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                      max_position_embeddings=args.tokens, tie_word_embeddings=False)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def batch(args, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, args.vocab, (args.batch, args.tokens), generator=g)
    labels = ids.clone()
    labels[:, : args.tokens // 2] = -100
    return {k: v.to(device) for k, v in
            {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}.items()}


def planned_activation_bytes(model, args, e_act: int, checkpointing: bool) -> float:
    n = sum(p.numel() for p in model.parameters())
    s = Shape(n, n, args.layers, args.hidden, args.intermediate, args.vocab, args.heads, [])
    return args.batch * args.tokens * kept_bytes_per_token(s, args.tokens, e_act, checkpointing)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--intermediate", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--tokens", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    defaults = ({"layers": 22, "hidden": 2048, "intermediate": 5632, "heads": 32, "vocab": 32000, "tokens": 512,
                 "batch": 8} if gpu else
                {"layers": 8, "hidden": 256, "intermediate": 688, "heads": 4, "vocab": 2048, "tokens": 1024,
                 "batch": 4})
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not gpu:
        C.use_exact_malloc()
    model = build(args, device)
    modules = select_modules(model, ModuleSelection(preset="mlp+attention"), warn=False)
    proj = FactoredProjection(ProjectionConfig(k_in=32, k_out=32))
    b = batch(args, device)
    feat = {ck: GradientFeaturizer(model, modules, proj, checkpointing=ck) for ck in (False, True)}
    out: dict[bool, dict] = {ck: {"peak": [], "seconds": []} for ck in (False, True)}
    features = {}
    for ck in (False, True):  # warm-up, and the features compared below
        with feat[ck]._frozen():
            features[ck] = feat[ck].featurize_batch(b)[0].float().cpu()
    for r in range(args.repeats):
        for ck in (False, True) if r % 2 == 0 else (True, False):
            with feat[ck]._frozen():
                out[ck]["peak"].append(C.peak_bytes(lambda f=feat[ck]: f.featurize_batch(b), device))
                out[ck]["seconds"].append(C.timed(lambda f=feat[ck]: f.featurize_batch(b), device))
    e_act = 2 if gpu else 4
    rows = {}
    for ck in (False, True):
        name = "checkpointing" if ck else "plain"
        rows[name] = {"peak_mib": statistics.median(out[ck]["peak"]) / 2**20,
                      "seconds_per_batch": statistics.median(out[ck]["seconds"]),
                      "planned_activation_mib": planned_activation_bytes(model, args, e_act, ck) / 2**20,
                      "peaks_mib": [x / 2**20 for x in out[ck]["peak"]], "seconds": out[ck]["seconds"]}
    diff = (features[True] - features[False]).abs().max().item() / features[False].abs().max().item()
    res = {
        "what": "featurize_batch peak memory and time with vs without gradient checkpointing (issue 21, item 4)",
        "command": C.command_line(), "date": C.now(), "machine": C.machine(device),
        "shape": {k: getattr(args, k) for k in defaults}, "projection": "32x32 on MLP + attention projections",
        "dtype": "bfloat16" if gpu else "float32", "results": rows,
        "memory_ratio": rows["checkpointing"]["peak_mib"] / rows["plain"]["peak_mib"],
        "time_ratio": rows["checkpointing"]["seconds_per_batch"] / rows["plain"]["seconds_per_batch"],
        "features_max_relative_difference": diff,
    }
    path = args.out or OUT / f"featurize_checkpointing{'_gpu' if gpu else ''}.json"
    C.write_json(path, res)
    print(C.md_table(["setting", "peak MiB", "planned activations MiB", "s/batch"],
                     [[k, v["peak_mib"], v["planned_activation_mib"], v["seconds_per_batch"]] for k, v in rows.items()]))
    print(f"memory ratio {res['memory_ratio']:.2f}, time ratio {res['time_ratio']:.2f}, "
          f"features max relative difference {diff:.1e}; wrote {path}")


if __name__ == "__main__":
    main()
