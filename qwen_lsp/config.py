"""Every server setting in one place: its default, its documentation, and what changing it does.

This class is the one source of truth: VS Code's `package.json`, the Neovim plugin's defaults
table and its help file are generated from it (`python scripts/editor_settings.py --write`), and
tests/test_settings.py fails when they drift.

Settings come from `initializationOptions` and later `workspace/didChangeConfiguration`
(either flat or under a `qwen` key, names in snake_case or camelCase); unknown keys are ignored
and wrong types fall back to the default, so a typo in an editor's config never stops the server.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

log = logging.getLogger(__name__)


def setting(
    default: Any,
    doc: str,
    *,
    rebuilds_engine: bool = False,
    user_only: bool = False,
    choices: tuple[object, ...] = (),
    minimum: int | None = None,
) -> Any:
    """A settings field. `doc` is what editors show the user. `rebuilds_engine`: a change loads the
    model or reconnects (the engine is built from it). `user_only`: it decides which file is loaded
    or where the user's code and API key are sent, so an editor must not take it from a
    workspace's own config (a cloned repository). `choices`: anything else falls back to the
    default. `minimum`: the least value editors offer."""
    metadata = {"doc": doc, "rebuilds_engine": rebuilds_engine, "user_only": user_only, "choices": choices}
    return attrs.field(default=default, metadata={**metadata, "minimum": minimum})


@attrs.define(frozen=True)
class Settings:
    model: str = setting(
        "",
        "Path of a GGUF model. Empty: the `QWEN_LSP_MODEL` environment variable, then the bundled model.",
        rebuilds_engine=True,
        user_only=True,
    )
    # 4096 keeps the KV cache near 50 MB.
    n_ctx: int = setting(4096, "Context window of the local model, in tokens.", rebuilds_engine=True, minimum=256)
    n_threads: int = setting(0, "Threads for the local model; 0 means one per core.", rebuilds_engine=True, minimum=0)
    # The API key, if the server needs one, comes only from the QWEN_LSP_API_KEY environment variable.
    backend: str = setting(
        "local",
        "Where the model runs. `local`: inside the server (llama.cpp), the fastest on one machine. "
        "`openai`: an OpenAI-compatible HTTP server (llama-server, vLLM, Ollama) at `endpoint`; "
        "its API key comes from the `QWEN_LSP_API_KEY` environment variable.",
        rebuilds_engine=True,
        user_only=True,
        choices=("local", "openai"),
    )
    endpoint: str = setting(
        "",
        "Base URL of the OpenAI-compatible server, ending in /v1 (backend `openai`). "
        "Empty: llama-server's default, http://127.0.0.1:8080/v1.",
        rebuilds_engine=True,
        user_only=True,
    )
    model_name: str = setting(
        "",
        "Model to ask the OpenAI-compatible server for (backend `openai`). Empty: the first one it lists.",
        rebuilds_engine=True,
        user_only=True,
    )
    enable_completion: bool = setting(True, "Show completions (ghost text) while typing.")
    # Generation runs ~30 ms a token on 2 cores.
    completion_max_tokens: int = setting(48, "Most tokens a completion may generate (about 30 ms each on 2 cores).", minimum=1)
    # llama.vim's t_max_predict_ms is 1000.
    completion_max_ms: int = setting(
        1000,
        "Most time a completion may spend generating after its first token (milliseconds; 0: no limit). "
        "A block cut short keeps its complete lines.",
        minimum=0,
    )
    # The prompt is read at ~200 tokens/s when cold (2 cores).
    completion_context_tokens: int = setting(
        1024, "Prompt budget for the code around the cursor, in tokens (read at about 200 a second when cold).", minimum=64
    )
    # llama.vim's t_max_prompt_ms idea: at a new place a whole window takes 2-3 s to read here.
    completion_cold_prompt_ms: int = setting(
        1000,
        "Most time a completion may spend reading what the cache does not hold of its prompt (milliseconds; 0: no "
        "limit). Beyond it the suggestion comes from a smaller window (completionColdContextTokens), and the full one "
        "is read in the background for the next.",
        minimum=0,
    )
    # On 30 cold stdlib places, 512 kept the full window's quality (exact first line 0.30 against
    # 0.33) at half its tokens; 256 lost a third of it (0.20).
    completion_cold_context_tokens: int = setting(
        512, "Prompt budget for the code around the cursor when the full prompt would take too long to read.", minimum=64
    )
    # 12 MB per 1,000 tokens: 64 MB keeps ~5,300 tokens, about ten places' prompts. With 96 MB
    # full, the server's RSS was 827 MB (20 cold places, model loaded); the target is 800.
    prompt_cache_mb: int = setting(
        64,
        "Memory for evaluated prompts kept for the places and files you return to (MB; about 12 per 1,000 tokens).",
        rebuilds_engine=True,
        minimum=0,
    )
    # Read once per file, then kept in the KV cache (bench/project_completion.py measures it).
    # On 60 lines of rich and click, read in full, no context answered best (exact first line
    # 0.183), 256 tokens next (0.150), 512 worst (0.133): the 0.5B model gains from the sections
    # only where the missing text is a project name, and the first used names fit in 256.
    project_context_tokens: int = setting(
        256,
        "Most tokens of the rest of the workspace a completion reads ahead of the file: signatures of the "
        "names the file imports from other workspace files, then recently seen code of other open files "
        "(0: none). Read once per file, then kept in the model's cache.",
        minimum=0,
    )
    debounce_ms: int = setting(0, "Wait this long after a keystroke before using the model (milliseconds).", minimum=0)
    explain_language: str = setting(
        "",
        "Language of explanations: a BCP-47 tag (`zh-cn`, `ja`, `de`) or a locale (`zh_CN.UTF-8`). "
        "Empty: the editor's display language (`initialize`'s `locale`), else English. Code and names stay as written.",
    )
    explain_max_tokens: int = setting(400, "Most tokens an explanation may generate.", minimum=1)
    fix_max_tokens: int = setting(400, "Most tokens a fix may generate.", minimum=1)


attrs.resolve_types(Settings)

# Settings the engine is built from: changing one replaces the engine.
ENGINE_SETTINGS: tuple[str, ...] = tuple(f.name for f in attrs.fields(Settings) if f.metadata["rebuilds_engine"])


def _problem(field: attrs.Attribute[Any], value: Any) -> str | None:
    """Why `value` cannot be this setting, or None when it can."""
    kind = field.type
    assert isinstance(kind, type)
    # bool is an int in Python; a setting typed int must not accept true/false, and vice versa.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        return f"not a {kind.__name__}"
    if field.metadata["choices"] and value not in field.metadata["choices"]:
        return f"not one of {field.metadata['choices']}"
    if field.metadata["minimum"] is not None and value < field.metadata["minimum"]:
        return f"less than {field.metadata['minimum']}"
    return None


def parse_settings(raw: Any, base: Settings | None = None) -> Settings:
    """Merge `raw` (a dict from the client, possibly nested under "qwen") into `base`."""
    base = base or Settings()
    if not isinstance(raw, dict):
        return base
    if isinstance(raw.get("qwen"), dict):
        raw = raw["qwen"]
    values = attrs.asdict(base)
    for field in attrs.fields(Settings):
        for key in dict.fromkeys((field.name, camel_case(field.name))):
            if key not in raw:
                continue
            if problem := _problem(field, raw[key]):
                log.warning("ignoring setting %s=%r: %s", key, raw[key], problem)
            else:
                values[field.name] = raw[key]
    return Settings(**values)


def camel_case(name: str) -> str:
    """The name editors use for a setting: `n_ctx` → `nCtx`."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
