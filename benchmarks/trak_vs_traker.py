"""Our `trak` vs the `traker` library (TRAKer) on the same small planted run.

The run is the method tests' planted-facts fixture (2-layer tiny Llama, 55 rows, 3
queries, 8 checkpoints). Settings:

1. exact: one module (layer 1 down_proj, 4608 weights), no projection on either side
   (ours: identity projection; traker: NoOpProjector). Compares the formulation only.
   Last checkpoint, and the 8-checkpoint ensemble.
2. projected: the default modules (6 MLP layers, 27648 weights). traker projects the full
   gradient densely (BasicProjector, proj_dim 1024 / 4096); ours projects per module
   (32x32 each = 6144 dims) or not at all. Every score matrix is also compared with the
   exact reference (ours, identity projection), to show where a disagreement comes from.
   Damping 0.01 / 0.1 / 1 (relative, the same rule on both sides).

Spearman over the whole [queries x rows] matrix and the mean per-query Spearman; wall time
and peak RSS of each traker run (datablame.bench.measure, as in `datablame bench`).

    .venv/bin/python benchmarks/trak_vs_traker.py            # ~3-6 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import command_line, now  # noqa: E402
from pipeline_config import small_config  # noqa: E402

from datablame import api  # noqa: E402
from datablame.bench.measure import measure  # noqa: E402
from datablame.bench.peers.traker import run_traker  # noqa: E402
from datablame.features.context import SharedFeatures  # noqa: E402
from datablame.methods import get_method  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "trak_vs_traker.json"


def with_features(inputs, *, one_module: bool, k: int | None):
    a = inputs.attribution
    update = {"projection": a.projection.model_copy(update={"k_in": k, "k_out": k})}
    if one_module:
        update["modules"] = a.modules.model_copy(update={"pattern": r"mlp\.down_proj$", "layers": "1"})
    inputs.attribution = a.model_copy(update=update)
    inputs.shared = SharedFeatures()
    return inputs


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    return {"spearman": float(spearmanr(a.ravel(), b.ravel())[0]),
            "spearman_per_query": float(np.mean([spearmanr(x, y)[0] for x, y in zip(a, b, strict=True)]))}


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    out = {"created": now(), "command": command_line(),
           "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(),
                       "torch": torch.__version__, "load_avg_start": os.getloadavg()}, "settings": []}
    with tempfile.TemporaryDirectory(prefix="trak-vs-traker-") as tmp:
        # the method tests' planted run, trained for 6 epochs as their `planted_run` fixture
        cfg = small_config(Path(tmp) / "run", training={"num_train_epochs": 6}, attribution={"method": "trak"})
        api.train(cfg)

        def fresh(one_module, k):
            return with_features(api.prepare_inputs(cfg)[0], one_module=one_module, k=k)

        for ckpts in ["last", "all"]:
            inputs = fresh(True, None)
            ours = measure(lambda i=inputs, c=ckpts: get_method("trak", checkpoints=c).score(i))
            peer = run_traker(inputs, checkpoints=ckpts, proj_dim=None)
            out["settings"].append({
                "name": f"exact one module, checkpoints={ckpts}", "dims": 4608, "damping": 0.01,
                "traker_s": peer.seconds, "traker_peak_bytes": peer.peak_bytes,
                "ours_s": ours.seconds, "ours_peak_bytes": ours.peak_bytes,
                "ours_vs_traker": agreement(ours.value, peer.scores), "error": peer.error,
            })
            print(out["settings"][-1], flush=True)
        for damping in [0.01, 0.1, 1.0]:
            reference = get_method("trak", checkpoints="last", damping=damping).score(fresh(False, None))
            ours_proj = get_method("trak", checkpoints="last", damping=damping).score(fresh(False, 32))
            for proj_dim in [1024, 4096]:
                inputs = fresh(False, 32)
                peer = run_traker(inputs, checkpoints="last", proj_dim=proj_dim, damping=damping)
                out["settings"].append({
                    "name": f"projected, 6 modules, last checkpoint, traker proj_dim={proj_dim}",
                    "damping": damping, "traker_s": peer.seconds, "traker_peak_bytes": peer.peak_bytes,
                    "ours_32x32_vs_traker": agreement(ours_proj, peer.scores),
                    "ours_exact_vs_traker": agreement(reference, peer.scores),
                    "ours_32x32_vs_ours_exact": agreement(ours_proj, reference),
                    "error": peer.error,
                })
                print(out["settings"][-1], flush=True)
    out["machine"]["load_avg_end"] = os.getloadavg()  # timings under other load are not comparable
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
