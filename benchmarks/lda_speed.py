"""Amplified sampling throughput vs plain sampling of the after-model, in one process.

Two random-weight Llamas of the same shape (the before- and after-model), one tokenizer,
the same prompts, samples and decoding settings for every variant:

- plain:     `sample_token_ids(after, None, ...)`: the after-model alone, one KV-cached
             single-token forward per step (what alpha = 0 costs in a scan);
- amplified: `sample_token_ids(after, before, ..., alpha=1)`: both models, each with its KV
             cache, logits = after + alpha * (after - before);
- hf:        `after.generate(do_sample=True)` with the same settings, for reference.

Variants are interleaved within each repeat so machine noise hits them alike; medians over
`--repeats` after one warm-up. Throughput = generated tokens (all rows, up to the end token)
per second. The goal: amplified costs at most 2.2x plain (two forwards per step instead of one,
plus the logit arithmetic). Writes benchmarks/results/lda_speed.json.

    nice -n 10 .venv/bin/python benchmarks/lda_speed.py                   # CPU, small, ~1 min
    .venv/bin/python benchmarks/lda_speed.py --device cuda --layers 16 --hidden 1024
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from datablame.config import TinyModelConfig  # noqa: E402
from datablame.diff.sampling import SamplingSettings, sample_token_ids  # noqa: E402
from datablame.models.tiny import build_tiny_llama, train_tokenizer  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "lda_speed.json"
GOAL = 2.2


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8, help="samples per prompt")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=OUT)
    return ap.parse_args()


def main() -> None:
    a = parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    words = ("river forest volcano desert ocean glacier mountain valley city harbour ship train "
             "question answer tell about describe fact small large old new").split()
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(40)) for i in range(200)]
    tok = train_tokenizer(texts, a.vocab)
    heads = max(4, a.hidden // 64)
    cfg = TinyModelConfig(hidden_size=a.hidden, intermediate_size=a.hidden * 8 // 3 // 2 * 2, num_hidden_layers=a.layers,
                          num_attention_heads=heads, num_key_value_heads=heads, vocab_size=a.vocab,
                          max_position_embeddings=512)
    after = build_tiny_llama(cfg, tok, 1).to(device).eval()
    before = build_tiny_llama(cfg, tok, 2).to(device).eval()
    prompts = [f"Question: tell me about the {words[i % len(words)]} and the {words[(i + 3) % len(words)]}.\nAnswer:"
               for i in range(a.prompts)]
    s = SamplingSettings(temperature=1.0, top_p=0.95, max_new_tokens=a.new_tokens, batch_size=a.prompts * a.samples)
    seeds = list(range(a.prompts))

    def ours(before_model, alpha):
        out = sample_token_ids(after, before_model, tok, prompts, alpha=alpha, n_samples=a.samples, seeds=seeds,
                               settings=s)
        return sum(len(x) for per in out for x in per)

    def hf():
        side = tok.padding_side
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="pt", padding=True).to(device)
        tok.padding_side = side
        with torch.no_grad():
            g = after.generate(**enc, do_sample=True, temperature=1.0, top_p=0.95, top_k=None,
                               max_new_tokens=a.new_tokens, num_return_sequences=a.samples,
                               pad_token_id=tok.pad_token_id)
        return int(g[:, enc["input_ids"].shape[1]:].numel())

    variants = {"plain": lambda: ours(None, 0.0), "amplified": lambda: ours(before, 1.0), "hf": hf}
    times: dict[str, list[float]] = {k: [] for k in variants}
    tokens: dict[str, int] = {}
    for rep in range(a.repeats + 1):  # the first pass warms up
        for name, fn in variants.items():
            C.sync(device)
            t0 = time.perf_counter()
            n = fn()
            C.sync(device)
            if rep:
                times[name].append(time.perf_counter() - t0)
                tokens[name] = n
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: tokens[k] / med[k] for k in med}
    ratio = med["amplified"] / med["plain"] * tokens["plain"] / tokens["amplified"]  # seconds per token
    result = {
        "what": "amplified sampling (two KV-cached models) vs plain sampling of the after-model: tokens/s",
        "command": C.command_line(), "when": C.now(), "machine": C.machine(device),
        "shape": {"layers": a.layers, "hidden": a.hidden, "vocab": len(tok), "prompts": a.prompts,
                  "samples_per_prompt": a.samples, "rows": a.prompts * a.samples, "new_tokens": a.new_tokens},
        "seconds_median": med, "seconds_all": times, "tokens": tokens, "tokens_per_second": tps,
        "cost_ratio_amplified_vs_plain": ratio, "cost_ratio_amplified_vs_hf": med["amplified"] / med["hf"]
        * tokens["hf"] / tokens["amplified"],
        "ratio_unit": "seconds per generated token, amplified / plain (1 = free, 2 = two models' forwards)",
        "goal": f"<= {GOAL}", "meets_goal": ratio <= GOAL,
    }
    C.write_json(a.out, result)
    print(C.md_table(["variant", "median s", "tokens", "tokens/s"],
                     [[k, med[k], tokens[k], tps[k]] for k in med]))
    print(f"amplified / plain cost per token: {ratio:.2f}x (goal <= {GOAL}) -> {a.out}")


if __name__ == "__main__":
    main()
