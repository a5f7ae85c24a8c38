"""The fake engine served on TCP as `qwen-lsp serve --tcp` serves the model: each connection a
session of its own, one at a time. `python -m tests.fake_engine_tcp HOST:PORT` (the soak's
reconnects use it)."""

from __future__ import annotations

import sys

from tests.fake_engine import FakeEngine


def main(argv: list[str]) -> int:
    from qwen_lsp.cli import configure_logging
    from qwen_lsp.lsp import transport
    from qwen_lsp.lsp.server import create_server

    configure_logging("WARNING", None)
    host, _, port = argv[0].rpartition(":")
    return transport.serve_tcp(lambda: create_server(lambda settings: FakeEngine()), host, int(port))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
