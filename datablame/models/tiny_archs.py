"""Tiny random causal LMs of several Hugging Face architectures, built from configs (no
download), for the architecture test matrix and `benchmarks/architectures.py`.

Each has 2 decoder layers, hidden size 32, MLP width 64 and a 97-token vocabulary (token 0 is
padding), the architecture's own module names, biases and weight tying as its config defaults
give them: GPT-2 (Conv1D, biases, tied lm_head), GPT-NeoX (biases), OPT (biases, MLP on
flattened [batch*tokens, d]), Qwen2 (q/k/v biases), Gemma (tied), Phi3 (fused gate_up_proj),
OLMo-2, Phi (biases), Falcon. `LORA_TARGETS` are the attention projections LoRA wraps.
"""

from __future__ import annotations

import torch

VOCAB = 97
_COMMON = {"vocab_size": VOCAB, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def _configs() -> dict:
    import transformers as tf

    att = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
           "max_position_embeddings": 64}
    return {
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64, **_COMMON,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        "gpt_neox": lambda: tf.GPTNeoXConfig(**att, **_COMMON, tie_word_embeddings=False),
        "opt": lambda: tf.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                                    max_position_embeddings=64, word_embed_proj_dim=32, dropout=0.0, **_COMMON),
        "qwen2": lambda: tf.Qwen2Config(**att, num_key_value_heads=2, **_COMMON, tie_word_embeddings=False),
        "gemma": lambda: tf.GemmaConfig(**att, num_key_value_heads=2, head_dim=8, **_COMMON),
        "phi3": lambda: tf.Phi3Config(**att, num_key_value_heads=2, **_COMMON, tie_word_embeddings=False),
        "olmo2": lambda: tf.Olmo2Config(**att, num_key_value_heads=2, **_COMMON, tie_word_embeddings=False),
        "phi": lambda: tf.PhiConfig(**att, **_COMMON, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0),
        "falcon": lambda: tf.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, **_COMMON,
                                          bias=True, new_decoder_architecture=False, multi_query=False),
    }


ARCHITECTURES = ("gpt2", "gpt_neox", "opt", "qwen2", "gemma", "phi3", "olmo2", "phi", "falcon")
LORA_TARGETS = {
    "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"], "opt": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"], "phi3": ["qkv_proj"], "olmo2": ["q_proj", "v_proj"], "phi": ["q_proj", "v_proj"],
    "falcon": ["query_key_value"],
}


def tiny_model(arch: str, seed: int = 0, bias_scale: float = 0.1) -> torch.nn.Module:
    """A random tiny `arch` causal LM in eval mode (float32). Biases, zero at init in most
    architectures, are drawn at `bias_scale` so their gradients are exercised non-trivially."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_configs()[arch]()).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, bias_scale)
    return model


def with_lora(model: torch.nn.Module, arch: str, seed: int = 0, r: int = 4) -> torch.nn.Module:
    """`model` with a LoRA adapter on its attention projections; B is drawn at random (peft
    starts it at zero, where A's gradient vanishes) so both matrices have real gradients."""
    from peft import LoraConfig, get_peft_model

    from datablame.models.layers import is_conv1d

    conv = any(is_conv1d(m) for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in LORA_TARGETS[arch])
    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=LORA_TARGETS[arch],
                     fan_in_fan_out=conv, task_type="CAUSAL_LM")
    out = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return out.eval()
