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


# Every special token of Qwen2.5. The Instruct GGUF names only <|im_end|> as end of sequence, so
# the local engine stops on all of them; and none may be read as a token in the user's text.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
_ZERO_WIDTH_SPACE = "\u200b"


class Prompt(str):
    """A rendered template that remembers where the filled-in values lie (`user_spans`).

    The values are the user's code: a backend must read special tokens such as `<|im_end|>` or
    `<|fim_middle|>` only in the template's own text, never in theirs. Any string operation on a
    Prompt gives a plain str without spans, which backends treat as template text throughout.
    """

    user_spans: tuple[tuple[int, int], ...] = ()


def render(name: str, **values: object) -> Prompt:
    pattern = template(name)
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    last = 0
    text = pattern.template
    for match in pattern.pattern.finditer(text):
        pieces.append(text[last : match.start()])
        length += match.start() - last
        last = match.end()
        key = match.group("named") or match.group("braced")
        if match.group("escaped") is not None:
            piece = pattern.delimiter
        elif key is not None:
            piece = str(values[key])
            spans.append((length, length + len(piece)))
        else:
            raise ValueError(f"invalid placeholder in prompt template {name!r} at {match.start()}")
        pieces.append(piece)
        length += len(piece)
    pieces.append(text[last:])
    prompt = Prompt("".join(pieces))
    prompt.user_spans = tuple(spans)
    return prompt


def defuse(text: str) -> str:
    """`text` with each special token's spelling broken by a zero-width space. For backends that
    read special tokens anywhere in the text they are sent (llama-server, vLLM and Ollama all
    do), so a file holding "<|im_end|>" cannot end a turn or move a FIM prompt's cursor."""
    for token in SPECIAL_TOKENS:
        if token in text:
            text = text.replace(token, token[:2] + _ZERO_WIDTH_SPACE + token[2:])
    return text


def defuse_user_text(prompt: str) -> str:
    """The prompt with the values filled into its template defused (a plain str: all of it)."""
    spans = getattr(prompt, "user_spans", None)
    if spans is None:
        return defuse(prompt)
    pieces, done = [], 0
    for start, end in spans:
        pieces += [prompt[done:start], defuse(prompt[start:end])]
        done = end
    return "".join([*pieces, prompt[done:]])
