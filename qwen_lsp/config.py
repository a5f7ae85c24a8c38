"""Every setting in one place, with its default and why.

Settings come from `initializationOptions` and later `workspace/didChangeConfiguration`
(either flat or under a `qwen` key); unknown keys are ignored and wrong types fall back to the
default, so a typo in an editor's config never stops the server.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

log = logging.getLogger(__name__)


@attrs.define(frozen=True)
class Settings:
    # Path to a GGUF model; empty means --model, QWEN_LSP_MODEL, then the bundled pack.
    model: str = ""
    # Context window of the in-process model, in tokens. 4096 keeps the KV cache near 50 MB.
    n_ctx: int = 4096
    # Threads for llama.cpp; 0 means one per core.
    n_threads: int = 0
    # Where the model runs: "local" (in-process, the fastest on one machine) or "openai" (a
    # server speaking the OpenAI-compatible API: llama-server, vLLM, Ollama). The API key, if the
    # server needs one, comes only from the QWEN_LSP_API_KEY environment variable.
    backend: str = "local"
    # The remote server's base URL, ending in /v1; empty means llama-server's default address.
    endpoint: str = ""
    # The model to ask the remote server for; empty means the first one it lists.
    model_name: str = ""
    # Completion suggestions on or off.
    enable_completion: bool = True
    # Most tokens a completion may generate. Generation runs ~30 ms a token on 2 cores.
    completion_max_tokens: int = 48
    # Most time a completion may spend generating, after its first token (milliseconds; 0: no
    # limit). A block cut short keeps its complete lines. llama.vim's t_max_predict_ms is 1000.
    completion_max_ms: int = 1000
    # Prompt budget for completion context, in tokens: ~100 tokens/s when cold.
    completion_context_tokens: int = 1024
    # Wait this long after a keystroke before starting the model (milliseconds).
    debounce_ms: int = 0
    # Most tokens an explanation may generate.
    explain_max_tokens: int = 400
    # Most tokens a fix may generate.
    fix_max_tokens: int = 400


attrs.resolve_types(Settings)

# Settings with a closed set of values; anything else falls back to the default.
CHOICES: dict[str, tuple[object, ...]] = {"backend": ("local", "openai")}


def _fits(value: Any, kind: type) -> bool:
    # bool is an int in Python; a setting typed int must not accept true/false, and vice versa.
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def parse_settings(raw: Any, base: Settings | None = None) -> Settings:
    """Merge `raw` (a dict from the client, possibly nested under "qwen") into `base`."""
    base = base or Settings()
    if not isinstance(raw, dict):
        return base
    if isinstance(raw.get("qwen"), dict):
        raw = raw["qwen"]
    values = attrs.asdict(base)
    for field in attrs.fields(Settings):
        for key in (field.name, _camel(field.name)):
            if key not in raw:
                continue
            if not _fits(raw[key], field.type):
                log.warning("ignoring setting %s=%r: not a %s", key, raw[key], field.type.__name__)
            elif raw[key] not in CHOICES.get(field.name, (raw[key],)):
                log.warning("ignoring setting %s=%r: not one of %s", key, raw[key], CHOICES[field.name])
            else:
                values[field.name] = raw[key]
    return Settings(**values)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
