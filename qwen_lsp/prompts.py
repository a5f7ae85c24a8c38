"""Prompt templates, kept as files in `prompts/` and filled with `string.Template` (`$name`), so
that braces and dollar signs in the user's code never break them."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template

_PACKAGED = Path(__file__).parent / "prompts"  # inside an installed wheel
_SOURCE = Path(__file__).parent.parent / "prompts"  # a source checkout or editable install


@cache
def template(name: str) -> Template:
    for folder in (_PACKAGED, _SOURCE):
        path = folder / name
        if path.is_file():
            return Template(path.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"prompt template {name!r} is missing from {_PACKAGED} and {_SOURCE}")


def render(name: str, **values: object) -> str:
    return template(name).substitute({k: str(v) for k, v in values.items()})
