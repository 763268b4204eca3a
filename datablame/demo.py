"""`datablame demo`: the whole product on the embedded default, in minutes on 2 CPU cores.

Planted-facts corpus -> tiny Llama trained from scratch -> gradient-cosine attribution of
the planted-fact queries -> table, report and recall@10 against the ground truth.
"""

from __future__ import annotations

from datablame.config import RunConfig, parse_config


def demo_config(output_dir: str = "runs/demo", overwrite: bool = False) -> RunConfig:
    return parse_config(
        {
            "name": "demo",
            "seed": 0,
            "data": {"source": "planted", "planted": {"seed": 0}},
            "model": {
                "kind": "tiny",
                "max_length": 128,
                "tiny": {"hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 4,
                         "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1024},
            },
            "training": {
                # from scratch, so a much larger learning rate than seed 000's fine-tune
                "num_train_epochs": 15,
                "per_device_train_batch_size": 16,
                "learning_rate": 2e-3,
                "weight_decay": 0.01,
                "lr_scheduler_type": "cosine",
                "warmup_ratio": 0.05,
                "save_steps": 400,
                "logging_steps": 100,
                "seed": 0,
            },
            "attribution": {
                "method": "grad_cosine",
                "modules": {"pattern": r"mlp\.(gate_proj|up_proj|down_proj)$"},
                "top_k": 10,
                "batch_size": 16,
            },
            "output": {"dir": output_dir, "overwrite": overwrite},
        },
        source="<demo>",
    )
