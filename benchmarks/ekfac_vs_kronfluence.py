"""Our EKFAC influence vs kronfluence's on the same trained model, rows and queries.

The run is the method tests' planted-facts fixture (2-layer tiny Llama, hidden 48,
intermediate 96, 55 rows, 3 queries), modules MLP gate/up/down_proj of both layers (seed 000's
choice), empirical Fisher, kronfluence's damping heuristic (0.1 x mean Λ per module) on
both sides. Settings:

1. exact: identity projection (ours) vs kronfluence EKFAC: the same maths, expect ≈ 1;
2. projected: ours with the default 32 x 32 projection (and 16 x 16) vs kronfluence: what the
   projection costs in agreement; also K-FAC (ours vs kronfluence `kfac`).

Spearman over the whole [queries x rows] score matrix, mean per-query Spearman, Pearson,
the planted-row gap (how far planted rows score above the rest, in score std), and wall
time + peak RSS of fit+score for each side (fresh factors, no reuse).

    .venv/bin/python benchmarks/ekfac_vs_kronfluence.py        # ~2-4 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import command_line, now  # noqa: E402
from pipeline_config import small_config  # noqa: E402
from planted_gap import planted_gap  # noqa: E402

from datablame import __version__, api  # noqa: E402
from datablame.bench.measure import measure  # noqa: E402
from datablame.config import ProjectionConfig  # noqa: E402
from datablame.methods import run_method  # noqa: E402
from datablame.utils.io import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ekfac_vs_kronfluence.json"


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tmp = Path(tempfile.mkdtemp(prefix="ekfac-vs-kron-"))
    # the method tests' planted run, trained for 6 epochs as their `planted_run` fixture
    cfg = small_config(tmp / "run", training={"num_train_epochs": 6}, attribution={"method": "ekfac"})
    api.train(cfg)
    truth = api.load_corpus(cfg)[2]

    def run(name: str, k: int | None, **opts):
        inputs = api.prepare_inputs(cfg)[0]
        inputs.work_dir = None  # fresh factors: time the whole fit
        inputs.attribution = inputs.attribution.model_copy(update={"projection": ProjectionConfig(k_in=k, k_out=k)})

        got = measure(lambda: run_method(inputs, name, opts).scores)
        return got.value, {"seconds": got.seconds, "peak_rss_mb": None if got.peak_bytes is None else got.peak_bytes / 2**20,
                           "planted_gap": planted_gap(got.value, inputs, truth)}

    ref, ref_info = run("kronfluence", None)
    ref_kfac, ref_kfac_info = run("kronfluence", None, strategy="kfac")
    rows = []
    for label, name, k, reference in [
        ("ekfac, identity projection", "ekfac", None, ref),
        ("ekfac, 32x32 projection (default)", "ekfac", 32, ref),
        ("ekfac, 16x16 projection", "ekfac", 16, ref),
        ("kfac, identity projection (vs kronfluence kfac)", "kfac", None, ref_kfac),
        ("kfac, 32x32 projection (vs kronfluence kfac)", "kfac", 32, ref_kfac),
    ]:
        scores, info = run(name, k)
        per_query = [spearmanr(scores[i], reference[i])[0] for i in range(len(scores))]
        rows.append({
            "setting": label, "method": name, "k": k,
            "spearman": float(spearmanr(scores.ravel(), reference.ravel())[0]),
            "spearman_per_query_mean": float(np.mean(per_query)),
            "pearson": float(pearsonr(scores.ravel(), reference.ravel())[0]),
            "max_rel_diff": float(np.abs(scores - reference).max() / np.abs(reference).max()),
            **info,
        })
        print(f"{label:52s} Spearman {rows[-1]['spearman']:.6f}  {info['seconds']:.1f} s", flush=True)
    out = {
        "what": "ours vs kronfluence 1.0.1 on the planted-facts fixture run (55 rows x 3 queries)",
        "model": "tiny Llama, 2 layers, hidden 48, intermediate 96; modules mlp gate/up/down_proj (6, 27648 weights)",
        "settings": {"fisher": "empirical on both sides", "damping": "0.1 x mean lambda per module (both)"},
        "kronfluence_ekfac": ref_info, "kronfluence_kfac": ref_kfac_info,
        "rows": rows,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "datablame": __version__},
        "date": now(),
        "command": command_line(),
    }
    atomic_write_json(RESULTS, out)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"kronfluence ekfac {ref_info['seconds']:.1f} s -> {RESULTS}")


if __name__ == "__main__":
    main()
