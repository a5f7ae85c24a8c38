"""Qwen2.5's special tokens, and prompts that keep the user's text apart from them.

One source of truth for the special tokens: the local engine stops generation at all of them
(the Instruct GGUF names only <|im_end|> as end of sequence), and none may be read as a token in
the user's text, locally or by a remote server.
"""

from __future__ import annotations

import attrs

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


@attrs.frozen
class Piece:
    text: str
    user: bool  # the user's code: special-token spellings in it are plain text


@attrs.frozen
class Prompt:
    """A raw prompt as template pieces and user pieces, so a backend reads special tokens such
    as `<|im_end|>` or `<|fim_middle|>` only in the template's own text, never in the user's."""

    pieces: tuple[Piece, ...]

    @classmethod
    def template(cls, text: str) -> Prompt:
        """A prompt that is template text throughout (special tokens are read everywhere)."""
        return cls((Piece(text, user=False),))

    @property
    def text(self) -> str:
        return "".join(piece.text for piece in self.pieces)

    def defused(self) -> str:
        """The text with the user's pieces defused, for servers that read special tokens
        anywhere in what they are sent."""
        return "".join(defuse(piece.text) if piece.user else piece.text for piece in self.pieces)


def defuse(text: str) -> str:
    """`text` with each special token's spelling broken by a zero-width space. For backends that
    read special tokens anywhere in the text they are sent (llama-server, vLLM and Ollama all
    do), so a file holding "<|im_end|>" cannot end a turn or move a FIM prompt's cursor."""
    for token in SPECIAL_TOKENS:
        if token in text:
            text = text.replace(token, token[:2] + _ZERO_WIDTH_SPACE + token[2:])
    return text


_DEFUSED = tuple(token[:2] + _ZERO_WIDTH_SPACE + token[2:] for token in SPECIAL_TOKENS)


class Refuser:
    """Undoes `defuse` in a streamed answer: a remote model copies the user's defused spellings
    ("<|" + zero-width space + "im_end|>"), and the zero-width space must not reach the user's
    code. Only those exact spellings change; a tail that may start one waits for the next piece."""

    def __init__(self) -> None:
        self.pending = ""

    def feed(self, piece: str) -> str:
        text = self.pending + piece
        for defused, token in zip(_DEFUSED, SPECIAL_TOKENS, strict=True):
            text = text.replace(defused, token)
        keep = _defused_start(text)
        self.pending = text[keep:]
        return text[:keep]

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text


def _defused_start(text: str) -> int:
    """Where a tail of `text` that could begin a defused spelling starts (len(text) if none)."""
    for start in range(max(0, len(text) - len(max(_DEFUSED, key=len)) + 1), len(text)):
        if any(d.startswith(text[start:]) for d in _DEFUSED):
            return start
    return len(text)
