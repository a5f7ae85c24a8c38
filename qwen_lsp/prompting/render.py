"""Prompt templates, kept as files in `prompts/` and filled with `string.Template` (`$name`), so
that braces and dollar signs in the user's code never break them."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template

from qwen_lsp.engine.tokens import Piece, Prompt

_PACKAGED = Path(__file__).parent.parent / "prompts"  # inside an installed wheel
_SOURCE = Path(__file__).parent.parent.parent / "prompts"  # a source checkout or editable install


@cache
def template(name: str) -> Template:
    for folder in (_PACKAGED, _SOURCE):
        path = folder / name
        if path.is_file():
            return Template(path.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"prompt template {name!r} is missing from {_PACKAGED} and {_SOURCE}")


def render_prompt(name: str, **values: object) -> Prompt:
    """The template filled in, with each filled-in value kept as a user piece."""
    pattern = template(name)
    pieces: list[Piece] = []
    text = pattern.template
    last = 0
    for match in pattern.pattern.finditer(text):
        pieces.append(Piece(text[last : match.start()], user=False))
        last = match.end()
        key = match.group("named") or match.group("braced")
        if match.group("escaped") is not None:
            pieces.append(Piece(pattern.delimiter, user=False))
        elif key is not None:
            pieces.append(Piece(str(values[key]), user=True))
        else:
            raise ValueError(f"invalid placeholder in prompt template {name!r} at {match.start()}")
    pieces.append(Piece(text[last:], user=False))
    return Prompt(tuple(piece for piece in pieces if piece.text))


def render(name: str, **values: object) -> str:
    """The template filled in, as plain text (chat message contents: read as plain text whole)."""
    return render_prompt(name, **values).text
