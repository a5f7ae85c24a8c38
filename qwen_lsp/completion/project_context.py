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

from cachetools import LRUCache

from qwen_lsp.completion.layout import CHARS_PER_TOKEN
from qwen_lsp.engine.tokens import Prompt
from qwen_lsp.prompting.render import render_prompt
from qwen_lsp.syntax.project import Project, RecentChunks, import_lines, path_of_uri, used_names


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
        sections += chunks.for_window(current, window, left, shown={name for name, _ in sections})
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


class ProjectContext:
    """The project as one session's completions see it: the workspace index, the ring of recent
    chunks, and per document the sections chosen for its prompt.

    A document's sections are chosen again only when its import lines change, a module they
    show changes (saved, or edited in an open buffer), another module has been parsed, or the
    ring changes, never on an ordinary keystroke: they lead the prompt, and a change there costs the whole prompt's
    evaluation again.
    """

    def __init__(self, folders: list[Path] | None = None) -> None:
        self.project = Project(folders or [])
        self.recent = RecentChunks()
        self._chosen: LRUCache[str, tuple[object, list[tuple[str, str]]]] = LRUCache(maxsize=64)
        # Per document, its import lines at one version: reading them splits the whole text.
        self._imports: LRUCache[str, tuple[int, str]] = LRUCache(maxsize=64)

    def set_folders(self, folders: list[Path]) -> None:
        self.project = Project(folders)
        self._chosen.clear()

    def prompt(self, uri: str, text: str, version: int, budget_tokens: int, fim: Prompt) -> Prompt:
        """`fim` behind the project's sections for this document at `version` (`fim` alone
        without any)."""
        path = path_of_uri(uri)
        if path is None or budget_tokens <= 0:
            return fim
        imports = self._imports.get(uri)
        if imports is None or imports[0] != version:
            imports = self._imports[uri] = (version, import_lines(text))
        # `parses`: modules read since (by the warm-up of didOpen, or a request's cold budget)
        # may complete sections chosen before them; an unchanged module leaves them as they were.
        key = (imports[1], self.project.generation, self.project.parses, self.recent.generation, budget_tokens)
        chosen = self._chosen.get(uri)
        if chosen is None or chosen[0] != key:
            chosen = (key, sections_for(self.project, text, path, budget_tokens, chunks=self.recent))
            self._chosen[uri] = chosen
        return repo_prompt(repo_name(self.project, path), self.project.relative(path), chosen[1], fim)

    def describe(self) -> dict[str, object]:
        """For `qwen/status`: the workspace folders and the files parsed so far (never a scan)."""
        return {"folders": [str(folder) for folder in self.project.folders], "parses": self.project.parses}

    def opened(self, uri: str, text: str) -> None:
        self.project.update_open_buffer(uri, text)
        self._gather(uri, text, 0)

    def edited(self, uri: str, text: str) -> None:
        self.project.update_open_buffer(uri, text)
        path = path_of_uri(uri)
        if path is not None:
            self.recent.forget(self.project.relative(path))

    def saved(self, uri: str, text: str | None) -> None:
        path = path_of_uri(uri)
        if path is not None:
            self.project.invalidate(path)
        if text is not None:
            self._gather(uri, text, 0)

    def closed(self, uri: str, text: str | None) -> None:
        self.project.close_buffer(uri)
        self._chosen.pop(uri, None)
        self._imports.pop(uri, None)
        if text is not None:
            self._gather(uri, text, 0)

    def files_changed(self, uris: list[str]) -> None:
        for uri in uris:
            path = path_of_uri(uri)
            if path is not None:
                self.project.invalidate(path)

    def warm(self, uri: str, text: str) -> None:
        """Parse what the document imports (blocking: run it in a worker thread)."""
        path = path_of_uri(uri)
        if path is not None:
            self.project.warm(text, path)

    def _gather(self, uri: str, text: str, line: int) -> None:
        """Keep a chunk of a file of the workspace (files from elsewhere are not the project, and
        their chunks would lead every other file's prompt)."""
        path = path_of_uri(uri)
        if path is not None and path.suffix == ".py" and self._in_workspace(path):
            self.recent.gather(self.project.relative(path), text, line)

    def _in_workspace(self, path: Path) -> bool:
        resolved = path.resolve()
        return any(resolved.is_relative_to(folder) for folder in self.project.folders)
