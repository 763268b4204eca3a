"""Retrieval cascade vs exhaustive gradient scoring on a 5,312-row planted corpus (CPU).

    .venv/bin/python benchmarks/cascade.py            # ~5-10 min on 2 shared cores
    .venv/bin/python benchmarks/cascade.py --help

Trains (once, cached in --run) a 2-layer tiny Llama on a planted-facts corpus of 400
entities x 12 background rows + 64 facts x (4 plants + 4 decoys) = 5,312 rows, 64 queries.
Then, in one process:

- exhaustive: featurize every row and query (no store) and take the gradient cosine of all
  rows -- the reference ranking; its top-10 per query is what the cascade should keep;
- the cascade at several stage sizes (embedding_k -> bm25_k -> re-rank of the survivors,
  final top-10), each with a fresh `GradientReranker` (row features shared between the
  queries of one run, none between runs); one configuration adds a metadata filter that
  keeps every row, to time the filter stage;
- single-query cold latency: the default cascade for one query with a fresh reranker,
  vs the exhaustive cost of one query (all rows featurized).

Reported per configuration and stage: candidates in/out, seconds, and recall of the
exhaustive gradient top-10 (the fraction of it that survives the stage); plus the planted
ground truth recall@10 of the cascade, exhaustive gradient cosine, BM25 alone and
embedding cosine alone. Text index build time (MiniLM over all rows, bm25s) is reported
separately: it is paid once per corpus (`datablame index`), not per query. The 2 cores are
shared with other jobs, so the JSON records the load average and other processes' CPU share.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/query.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import OtherLoad, machine, now, write_json  # noqa: E402
from pipeline_config import small_config  # noqa: E402

from datablame import api  # noqa: E402
from datablame.config import RetrievalConfig  # noqa: E402
from datablame.features.gradients import gradient_features
from datablame.features.text_index import query_texts  # noqa: E402
from datablame.methods import get_method  # noqa: E402
from datablame.metrics import recall_at_k  # noqa: E402
from datablame.models.tokenize import Encoded  # noqa: E402
from datablame.retrieval import GradientReranker, build_text_indices, run_cascade, text_index_dir  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
K = 10
CONFIGS = [  # (label, embedding_k, bm25_k, filter)
    ("default 2000/500", 2000, 500, None),
    ("1000/200", 1000, 200, None),
    ("500/100", 500, 100, None),
    ("embedding only 500", 500, None, None),
    ("bm25 only 200", None, 200, None),
    ("filter + 1000/200", 1000, 200, "kind in ['background', 'plant', 'decoy']"),
]


def bench_config(run: str, epochs: float):
    """The tests' `small_config` scaled up: 5,312 rows, a hidden-64 Llama, no checkpoints."""
    return small_config(
        run, name="bench-cascade",
        data={"planted": {"n_entities": 400, "n_facts": 64, "plants_per_fact": 4, "decoys_per_fact": 4,
                          "background_per_entity": 12}},
        model={"tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024}},
        training={"num_train_epochs": epochs, "per_device_train_batch_size": 32, "save_steps": 100000},
        attribution={"top_k": K, "batch_size": 16},
    )


def truth_recall(scores: np.ndarray, inputs, truth) -> float:
    idx = inputs.corpus.index_of()
    vals = [recall_at_k(scores[qi], [idx[r] for r in truth[q.query_id]], K) for qi, q in enumerate(inputs.queries)]
    return float(np.mean(vals))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/bench-cascade")
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--single-queries", type=int, default=3, help="cold single-query cascades to time")
    ap.add_argument("--out", default=str(RESULTS / "cascade_cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    load = OtherLoad()
    info = machine(torch.device("cpu"))
    cfg = bench_config(args.run, args.epochs)

    t = time.perf_counter()
    api.train(cfg)
    train_s = time.perf_counter() - t
    inputs, truth = api.prepare_inputs(cfg, use_store=False)
    n, nq = len(inputs.corpus), len(inputs.queries)
    print(f"corpus {n} rows, {nq} queries; train/load {train_s:.1f}s", flush=True)

    t = time.perf_counter()
    indices = build_text_indices(inputs.corpus, text_index_dir(inputs.run_dir), progress=True)
    text_index = {"wall_s": time.perf_counter() - t, "build_seconds": indices.manifest["build_seconds"],
                  "path": str(indices.path)}
    print(f"text indices: {text_index}", flush=True)

    # exhaustive gradient cosine: featurize every row and query, score all
    t = time.perf_counter()
    g = gradient_features(inputs)
    full = get_method("grad_cosine").score(inputs)
    exhaustive_s = time.perf_counter() - t
    print(f"exhaustive gradient cosine: {exhaustive_s:.1f}s ({g.rows.shape[1]} dims)", flush=True)
    bm25_scores = get_method("bm25").score(inputs)
    emb_scores = get_method("embedding_cosine").score(inputs)
    quality = {"exhaustive_grad_cosine": truth_recall(full, inputs, truth),
               "bm25_alone": truth_recall(bm25_scores, inputs, truth),
               "embedding_cosine_alone": truth_recall(emb_scores, inputs, truth)}
    print(f"planted recall@{K}: {quality}", flush=True)

    configs = []
    for label, ek, bk, flt in CONFIGS:
        fresh, _ = api.prepare_inputs(cfg, use_store=False)
        rerank = GradientReranker(fresh)
        rc = RetrievalConfig(enabled=True, filter=flt, embedding_k=ek, bm25_k=bk)
        res = run_cascade(fresh.corpus, fresh.queries, rc, indices, rerank, final_k=K, reference_scores=full,
                          progress=False)
        entry = {
            "label": label, "retrieval": res.config, "cascade_s": res.seconds,
            "cascade_s_per_query": res.seconds / nq, "rows_featurized": rerank.rows_featurized,
            "speedup_vs_exhaustive": exhaustive_s / res.seconds,
            "stages": res.stage_summary(),
            "final_recall_of_exhaustive_top10": res.stage_summary()[-1]["recall"],
            "planted_recall_at_10": truth_recall(res.score_matrix(), fresh, truth),
        }
        configs.append(entry)
        print(f"{label}: {res.seconds:.1f}s, featurized {rerank.rows_featurized} rows, "
              + ", ".join(f"{s['stage']} {s['seconds_total']:.2f}s recall {s['recall']:.3f}" for s in entry["stages"])
              + f"; planted recall@{K} {entry['planted_recall_at_10']:.3f}", flush=True)

    # one query, nothing cached: default cascade vs featurizing every row for it
    single = []
    rc = RetrievalConfig(enabled=True)
    for qi in range(min(args.single_queries, nq)):
        fresh, _ = api.prepare_inputs(cfg, use_store=False)
        fresh.queries = [fresh.queries[qi]]
        fresh.query_rows = Encoded(fresh.query_rows.input_ids[qi : qi + 1], fresh.query_rows.labels[qi : qi + 1])
        rerank = GradientReranker(fresh)
        res = run_cascade(fresh.corpus, fresh.queries, rc, indices, rerank, final_k=K, reference_scores=full[qi : qi + 1],
                          progress=False)
        single.append({"query_id": fresh.queries[0].query_id, "cascade_s": res.seconds,
                       "rows_featurized": rerank.rows_featurized,
                       "stages": [s.to_dict() for s in res.queries[0].stages]})
        print(f"single query {qi}: {res.seconds:.2f}s", flush=True)
    exhaustive_one = None
    if single:  # the exhaustive cost of one query: every row featurized, then one cosine row
        fresh, _ = api.prepare_inputs(cfg, use_store=False)
        fresh.queries = fresh.queries[:1]
        fresh.query_rows = Encoded(fresh.query_rows.input_ids[:1], fresh.query_rows.labels[:1])
        t = time.perf_counter()
        get_method("grad_cosine").score(fresh)
        exhaustive_one = time.perf_counter() - t
        print(f"exhaustive, one query: {exhaustive_one:.1f}s", flush=True)

    out = {
        "benchmark": "retrieval cascade vs exhaustive gradient cosine",
        "date": now(), "machine": info, "other_processes_cpu_share": load.share(),
        "loadavg_end": list(os.getloadavg()),
        "command": "python benchmarks/cascade.py " + " ".join(sys.argv[1:]),
        "corpus": {"rows": n, "queries": nq, "planted": cfg.data.planted.model_dump()},
        "model": cfg.model.tiny.model_dump(), "epochs": args.epochs, "train_or_load_s": train_s,
        "gradient": {"modules": inputs.shared.grad_modules, "dim": int(g.rows.shape[1]),
                     "projection": cfg.attribution.projection.model_dump()},
        "text_index": text_index,
        "exhaustive": {"seconds": exhaustive_s, "seconds_per_query_amortized": exhaustive_s / nq,
                       "note": "featurizes all rows + queries (no feature store), then cosine over all rows"},
        "planted_recall_at_10": quality,
        "configs": configs,
        "single_query_cold": {"exhaustive_s_one_query": exhaustive_one, "runs": single,
                              "median_cascade_s": float(np.median([s["cascade_s"] for s in single])) if single else None},
        "query_text_example": query_texts(inputs.queries[:1])[0],
    }
    write_json(Path(args.out), out)
    plot(out, Path(args.out).with_suffix(".png"))
    print(f"wrote {args.out}")


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    order = ["filter", "embedding", "bm25", "rerank"]
    for c in out["configs"]:
        a.plot([order.index(s["stage"]) for s in c["stages"]], [s["recall"] for s in c["stages"]], marker="o",
               label=c["label"])
    a.set_xticks(range(len(order)), order)
    a.set_ylabel("recall of exhaustive gradient top-10")
    a.set_ylim(0, 1.05)
    a.legend(fontsize=7)
    a.set_title("what survives each stage")
    labels = [c["label"] for c in out["configs"]] + ["exhaustive"]
    secs = [c["cascade_s"] for c in out["configs"]] + [out["exhaustive"]["seconds"]]
    b.barh(labels, secs, color=["C0"] * len(out["configs"]) + ["C3"])
    b.set_xlabel(f"seconds for {out['corpus']['queries']} queries over {out['corpus']['rows']} rows (CPU)")
    b.set_title("cascade vs exhaustive gradient scoring")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
