"""Model backends behind one small interface (`base.Engine`)."""

from __future__ import annotations

import os

from qwen_lsp.config import Settings
from qwen_lsp.engine.base import Engine


def make_engine(settings: Settings, cli_model: str | None = None) -> Engine:
    """The backend the settings ask for: the in-process model, or an OpenAI-compatible server."""
    if settings.backend == "openai":
        from qwen_lsp.engine.remote import API_KEY_ENV, RemoteEngine, RemoteSettings

        remote = RemoteSettings(
            endpoint=settings.endpoint or RemoteSettings.endpoint,
            model_name=settings.model_name,
            api_key=os.environ.get(API_KEY_ENV) or None,
        )
        return RemoteEngine(remote)

    from qwen_lsp.engine.local import LocalEngine, LocalSettings
    from qwen_lsp.engine.model_pack import model_signature, resolve_model

    local = LocalSettings(n_ctx=settings.n_ctx, n_threads=settings.n_threads or None, prompt_cache_mb=settings.prompt_cache_mb)
    return LocalEngine(
        local,
        lambda progress: resolve_model(cli_model, settings.model, progress),
        lambda: model_signature(cli_model, settings.model),
    )
