"""A corpus-trained byte-level BPE tokenizer and a small random Llama (tests, demo, benchmarks).

bos/eos and prefix stability: the tokenizer's post-processor prepends `<s>` (bos) and
never appends `</s>` (eos). Encoding `prompt` and `prompt + completion` therefore both start
with the same single bos, and the eos is appended explicitly by `encode_pairs` (as a loss
token) only where it is wanted. Pre-tokenization is GPT-2 style byte-level with
`add_prefix_space=False`, so a leading space is kept as its own byte ("Ġ") and no space is
invented at the start of a text. Token ids of `prompt` are a prefix of those of
`prompt + completion` whenever the completion starts a new pre-token (a space, newline,
letter after punctuation, ...); for the rare boundary inside a pre-token (a prompt ending
in a space, a completion gluing onto the prompt's last word) `encode_pairs` decides the
loss mask by character offsets on the joint text, so the mask stays right regardless.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from datablame.config import TinyModelConfig
from datablame.errors import DatablameError

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0..3, in this order
_BYTE_ALPHABET = 256


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, extra_tokens: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the corpus itself, so a tiny model needs no download.

    Deterministic: the same texts give the same vocabulary and merges (tokenizers' BPE
    trainer breaks count ties by the pair itself). The vocabulary may come out smaller than
    `vocab_size` when the corpus has fewer distinct merges than the budget allows.
    `extra_tokens` (e.g. the hops corpus' `<GN>`) are cut out of the texts before BPE
    training (it learns the pieces between them, as encoding splits them) and appended after the trained
    vocabulary as ordinary (not special) added tokens: always one token each, with a real
    character span (so they can carry loss), kept by `decode`. Without extra tokens the
    tokenizer is exactly what it was before the parameter existed.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    extra = [t for t in dict.fromkeys(extra_tokens) if t]
    texts = [t for t in texts if t]
    if extra:  # train on the pieces between extra tokens, as encoding will see them
        import re

        split = re.compile("|".join(re.escape(t) for t in sorted(extra, key=len, reverse=True)))
        texts = [piece for t in texts for piece in split.split(t) if piece]
    if not texts:
        raise DatablameError(
            "cannot train a tokenizer for the tiny model: no training texts",
            "check that the corpus (data.*) yields non-empty rows",
        )
    minimum = _BYTE_ALPHABET + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise DatablameError(
            f"model.tiny.vocab_size={vocab_size} is below the byte-level minimum of {minimum}",
            f"set model.tiny.vocab_size to at least {minimum} (e.g. 2048)",
        )
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # bos only: an eos here would sit at the end of `prompt` but not at the same position in
    # `prompt + completion`, breaking the prefix property the loss masks rely on.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    fast.padding_side = "right"
    if extra:
        from tokenizers import AddedToken

        fast.add_tokens([AddedToken(t, normalized=False, special=False) for t in extra])
    return fast


def build_tiny_llama(
    cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int
) -> LlamaForCausalLM:
    """A randomly initialised float32 Llama sized for the tokenizer; same seed, same weights.

    The global torch RNG is left untouched (initialisation runs in a forked RNG state), so
    building a model does not shift the randomness of whatever runs next.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.hidden_size % cfg.num_attention_heads:
        raise DatablameError(
            f"model.tiny.hidden_size={cfg.hidden_size} is not divisible by "
            f"model.tiny.num_attention_heads={cfg.num_attention_heads}",
            "choose a hidden_size that is a multiple of num_attention_heads",
        )
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise DatablameError(
            f"model.tiny.num_attention_heads={cfg.num_attention_heads} is not a multiple of "
            f"model.tiny.num_key_value_heads={cfg.num_key_value_heads}",
            "set num_key_value_heads to a divisor of num_attention_heads",
        )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model = model.float()
    model.config.dtype = torch.float32
    return model
