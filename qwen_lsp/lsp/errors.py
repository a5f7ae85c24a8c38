"""The one place engine failures become LSP errors; handlers just let them through it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pygls.exceptions import JsonRpcException

from qwen_lsp.engine.base import EngineError


class RequestFailed(JsonRpcException):
    """LSP's RequestFailed: the request was valid but could not be served (e.g. no model)."""

    CODE = -32803


@contextmanager
def engine_errors() -> Iterator[None]:
    """Answer an `EngineError` raised inside as RequestFailed, with the engine's message."""
    try:
        yield
    except EngineError as exc:
        raise RequestFailed(str(exc)) from exc
