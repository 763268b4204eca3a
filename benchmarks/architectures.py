"""Gradient features and EKFAC across Hugging Face architectures, full model and LoRA.

For tiny random models built from configs (`datablame.models.tiny_archs`: GPT-2, GPT-NeoX,
OPT, Qwen2, Gemma, Phi3, OLMo-2, Phi), full model (modules: the architecture's MLP +
attention preset) and a LoRA adapter on the attention projections (modules: LoRA A/B):

1. autograd: max relative error of the identity-projection features vs torch.autograd
   per-row gradients over weights and biases (8 rows);
2. EKFAC vs kronfluence 1.0.1: Spearman over the [queries x rows] influence matrix, ours with
   identity and with the default 32 x 32 projection, modules the default MLP preset (full) or
   LoRA A/B, empirical Fisher and kronfluence's damping heuristic on both sides, biases in.

Then kronfluence's GPT-2 WikiText example setting on a tiny GPT-2 trained here: character
rows cut from this repository's README (WikiText-style English, every token in the loss),
EKFAC on `mlp.c_fc` / `mlp.c_proj` of every layer (their example's module choice, Conv1D).

    .venv/bin/python benchmarks/architectures.py        # ~5-8 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _common import command_line, now  # noqa: E402
from influence_inputs import random_rows, tiny_inputs  # noqa: E402

from datablame import __version__  # noqa: E402
from datablame.config import ModuleSelection  # noqa: E402
from datablame.grads.autograd_check import max_relative_error  # noqa: E402
from datablame.grads.modules import select_modules  # noqa: E402
from datablame.methods import get_method  # noqa: E402
from datablame.models.tiny_archs import tiny_model, with_lora  # noqa: E402
from datablame.models.tokenize import Encoded  # noqa: E402
from datablame.utils.io import atomic_write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "architectures.json"
ARCHS = ("gpt2", "gpt_neox", "opt", "qwen2", "gemma", "phi3", "olmo2", "phi")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a.ravel(), b.ravel())[0])


def _agreement(model, rows: Encoded, queries: Encoded, sel: ModuleSelection) -> dict:
    def inputs(k):
        inp = tiny_inputs(model, rows, queries, k=k, pattern=None, batch_size=8)
        inp.attribution = inp.attribution.model_copy(update={"modules": sel})
        return inp

    t = time.perf_counter()
    kron = get_method("kronfluence").score(inputs(None))
    t_kron = time.perf_counter() - t
    t = time.perf_counter()
    ours = get_method("ekfac").score(inputs(None))
    t_ours = time.perf_counter() - t
    proj = get_method("ekfac").score(inputs(32))
    return {"spearman_identity": _spearman(ours, kron), "spearman_default_projection": _spearman(proj, kron),
            "ekfac_seconds": t_ours, "kronfluence_seconds": t_kron,
            "modules": [n for n, _ in select_modules(model, sel, warn=False)]}


def one(arch: str, lora: bool) -> dict:
    t0 = time.perf_counter()
    model = tiny_model(arch)
    model = with_lora(model, arch) if lora else model
    full_sel = ModuleSelection(lora_only=True) if lora else ModuleSelection(preset="mlp+attention")
    modules = select_modules(model, full_sel, warn=False)
    err = max_relative_error(model, modules, random_rows(8, seed=3))
    n_bias = sum(getattr(m, "bias", None) is not None for _, m in modules)
    agree = _agreement(model, random_rows(32, seed=11), random_rows(4, seed=12),
                       ModuleSelection(lora_only=True) if lora else ModuleSelection())
    out = {"architecture": arch, "training": "lora" if lora else "full",
           "autograd_modules": len(modules), "autograd_biased_modules": n_bias,
           "autograd_max_rel_error": err, **agree, "seconds": time.perf_counter() - t0}
    print(f"{arch:9s} {out['training']:4s} autograd {err:.1e}  spearman {agree['spearman_identity']:.6f} "
          f"(32x32: {agree['spearman_default_projection']:.4f})  {out['seconds']:.1f} s", flush=True)
    return out


def _readme_rows(n_train: int, n_query: int, length: int = 48) -> tuple[Encoded, Encoded]:
    """Character rows (ids 3..96) cut from README.md, every token in the loss."""
    text = " ".join((ROOT / "README.md").read_text().split())
    ids = [3 + (ord(c) - 32) % 94 if 32 <= ord(c) < 127 else 3 for c in text]
    chunks = [ids[i : i + length] for i in range(0, len(ids) - length, length)][: n_train + n_query]
    rows = [list(c) for c in chunks]
    return Encoded(rows[:n_train], [list(c) for c in rows[:n_train]]), Encoded(rows[n_train:], [list(c) for c in rows[n_train:]])


def wikitext_gpt2(steps: int = 150) -> dict:
    """kronfluence's GPT-2 WikiText setting (modules mlp.c_fc, mlp.c_proj) on a tiny GPT-2 trained here."""
    from datablame.models.tokenize import pad_batch, per_row_loss

    t0 = time.perf_counter()
    rows, queries = _readme_rows(64, 6)
    model = tiny_model("gpt2", bias_scale=0.0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(rows), (16,), generator=gen).tolist()
        b = pad_batch([rows.input_ids[i] for i in idx], [rows.labels[i] for i in idx], 0)
        loss = per_row_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    model.eval()
    train_s = time.perf_counter() - t0
    sel = ModuleSelection(pattern=r"mlp\.(c_fc|c_proj)$")
    agree = _agreement(model, rows, queries, sel)
    out = {"setting": "kronfluence examples/wikitext (GPT-2, EKFAC on mlp.c_fc + mlp.c_proj of every layer)",
           "model": "tiny GPT-2 (2 layers, n_embd 32, n_inner 64, char vocab 97) trained here",
           "data": "48-character rows of README.md text, all tokens in the loss; 64 train rows, 6 queries",
           "train_steps": steps, "train_loss_first": losses[0], "train_loss_last": float(np.mean(losses[-10:])),
           "train_seconds": train_s, **agree, "seconds": time.perf_counter() - t0}
    print(f"GPT-2 WikiText-style: loss {losses[0]:.2f} -> {out['train_loss_last']:.2f}; EKFAC vs kronfluence "
          f"Spearman {agree['spearman_identity']:.6f} (32x32: {agree['spearman_default_projection']:.4f})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="*", default=list(ARCHS))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("datablame").setLevel(logging.ERROR)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    results = [one(a, lora) for a in args.archs for lora in (False, True)]
    wiki = wikitext_gpt2()
    out = {
        "what": "hooked per-row gradients vs autograd, and our EKFAC vs kronfluence 1.0.1, per architecture",
        "models": "tiny random models from configs (datablame.models.tiny_archs): 2 layers, hidden 32, MLP 64, "
                  "vocab 97, biases drawn at N(0, 0.1); LoRA r=4 on the attention projections, B random",
        "settings": {"autograd": "identity projection, modules: MLP + attention preset (full) or LoRA A/B, "
                                 "weights and biases, 8 random rows",
                     "agreement": "32 random rows x 4 queries; modules: MLP preset (full) or LoRA A/B; empirical "
                                  "Fisher and damping 0.1 x mean lambda per module on both sides; biases included"},
        "rows": results,
        "wikitext_gpt2": wiki,
        "seconds": time.perf_counter() - t0,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "datablame": __version__},
        "date": now(),
        "command": command_line(),
    }
    atomic_write_json(RESULTS, out)
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
