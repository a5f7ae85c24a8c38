"""What the log may hold: no document text unless the user asks for DEBUG.

Our own modules log URIs, sizes and reasons, never text. pygls logs whole messages at INFO
("Sending data: ...", which carries completions and diagnostics) and the params of a failed
request with its errors; below DEBUG its chatter is dropped and its arguments hidden, except
for short identifier-like values (request ids, method names, URIs) that make a log useful.
"""

from __future__ import annotations

import logging
import re

from pygls.exceptions import JsonRpcException

HIDDEN = "<hidden: use --log-level DEBUG>"
_IDENTIFIER = re.compile(r"[\w$/.:%@+\-]{1,200}")


def _safe(value: object) -> object:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
        return value
    return HIDDEN


class LogPrivacy(logging.Filter):
    """Installed on the log handler when the level is above DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("pygls"):
            return True
        if record.levelno < logging.WARNING:
            return False
        record.args = tuple(_safe(a) for a in record.args) if isinstance(record.args, tuple) else ()
        if record.exc_info and isinstance(record.exc_info[1], JsonRpcException):
            # An error the server answered on purpose (no model, bad params): the answer says why.
            record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def protect(handler: logging.Handler, level: str) -> None:
    """Filter `handler` unless the log level is DEBUG."""
    if logging.getLevelName(level) > logging.DEBUG:
        handler.addFilter(LogPrivacy())
