"""What a completion sees of the rest of the project, in Qwen's repository-level FIM format:

    <|repo_name|>{workspace}
    <|file_sep|>{imported module}      definitions of the names this file imports and uses
    {signatures}
    <|file_sep|>{other open file}      recently seen chunks (oldest first)
    {chunk}
    <|file_sep|>{this file}
    <|fim_prefix|>... (the file's own window, see layout.py)

Laid out for the KV cache: the repository line never changes, the definitions change only when
the file first uses another imported name (they are chosen from the whole file's identifiers, in
import order, so every position in the file shares them), the chunks only when another file is
opened or saved; the window, which moves with the cursor, comes last.
"""

from __future__ import annotations

from pathlib import Path

from qwen_lsp.completion.layout import CHARS_PER_TOKEN
from qwen_lsp.engine.tokens import Prompt
from qwen_lsp.prompting.render import render_prompt
from qwen_lsp.syntax.project import Project, RecentChunks, used_names


def sections_for(
    project: Project,
    text: str,
    path: Path,
    budget_tokens: int,
    *,
    chunks: RecentChunks | None = None,
    window: str = "",
) -> list[tuple[str, str]]:
    """(path, content) sections within `budget_tokens`: the imported definitions the file uses
    first, then recent chunks of other files in what is left."""
    budget = budget_tokens * CHARS_PER_TOKEN
    sections = project.context_for(text, path, used_names(text), budget)
    if chunks is not None:
        left = budget - sum(len(name) + len(content) + 16 for name, content in sections)
        current = project.relative(path)
        sections += chunks.for_window(current, window, left)
    return sections


def repo_prompt(repo: str, current_path: str, sections: list[tuple[str, str]], fim: Prompt) -> Prompt:
    """`fim` (the file's own FIM prompt) behind the project's sections; `fim` alone when there
    are none, so a file that imports nothing from the project is prompted as before."""
    if not sections:
        return fim
    parts = [render_prompt("fim_repo.txt", repo=repo)]
    parts += [render_prompt("fim_repo_file.txt", path=path, content=content) for path, content in sections]
    parts.append(render_prompt("fim_repo_current.txt", path=current_path))
    return Prompt(tuple(piece for part in (*parts, fim) for piece in part.pieces))


def repo_name(project: Project, path: Path) -> str:
    """The workspace folder holding `path` (its name is the repository's)."""
    resolved = path.resolve()
    for folder in project.folders:
        if resolved.is_relative_to(folder):
            return folder.name
    return resolved.parent.name
