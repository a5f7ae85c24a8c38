"""The workspace as the model should see it: definitions of the names a file imports from the
project, and a ring of recently seen chunks of other files.

Nothing here scans the workspace. A document's import statements (read with tree-sitter from its
import lines alone, so typing elsewhere costs nothing) name the modules to look at; each module is
parsed on first use and its top-level definitions rendered once, cached per path until its
(mtime, size) changes, `invalidate` is called (didSave, didChangeWatchedFiles) or an open buffer's
text replaces it. `warm`, run off the event loop when a document is opened, parses what the
document imports; a request itself parses at most a few modules within a time budget and leaves
the rest for the next one, so a keystroke never waits for the disk.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from tree_sitter import Node, Parser

from qwen_lsp.syntax.documents import tree_sitter_language

# Files larger than this are generated or vendored code: never parsed.
MAX_FILE_BYTES = 1_000_000
# Cold parsing per request: at most this many modules, within this time.
MAX_PARSES_PER_REQUEST = 8
PARSE_BUDGET_MS = 50.0
# Warming a document's imports when it is opened (off the event loop): at most this many modules.
MAX_PARSES_WARMING = 64
# A function's (a method's) body of at most this many lines is shown whole, a longer one as `...`.
SHORT_BODY_LINES = 3
SHORT_METHOD_LINES = 1
# A constant's statement longer than this is cut to its first line.
SHORT_CONSTANT_LINES = 3
# A definition longer than the budget left is cut at a line if at least this much is left.
MIN_CUT_CHARS = 300
_CUT_MARK = "    ..."
# `__init__` re-exports followed this deep (`from .a import X` in a package, then in `a`, ...).
MAX_REEXPORT_DEPTH = 3

_IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+\S+[ \t]+import\b|import[ \t]+\S)", re.MULTILINE)
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_CONSTANT = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class Binding:
    """One name an import statement binds: `from {dots}{module} import {name} as {local}`, or
    `import {module} as {local}` (name None)."""

    level: int  # leading dots of a relative import
    module: str  # dotted, possibly empty (`from . import x`)
    name: str | None  # None: the module itself is bound
    local: str  # the name the importing file uses


@dataclass
class _Budget:
    """What one request may still spend on parsing files it has not seen, and its parser (one
    per thread: a request on the event loop, a warm-up in a worker)."""

    parser: Parser
    deadline: float
    parses: int = MAX_PARSES_PER_REQUEST

    def allows(self) -> bool:
        return self.parses > 0 and time.perf_counter() < self.deadline


@dataclass(frozen=True)
class Definition:
    """A top-level definition rendered for the model: what is always shown (a function or a
    constant whole; a class's line, docstring and attributes) and a class's methods by name."""

    head: str
    methods: tuple[tuple[str, str], ...] = ()

    def render(self, used: Collection[str] = (), whole: bool = True) -> str:
        """All of it in file order; or (not `whole`) what a file using `used` needs of it: the
        constructor and the methods it calls."""
        needed = [text for name, text in self.methods if whole or name == "__init__" or name in used]
        return "\n".join([self.head, *needed])

    def ranked(self, used: Collection[str]) -> str:
        """All of it, what a file using `used` needs first: cut at the budget, it keeps that."""
        rest = [text for name, text in self.methods if name != "__init__" and name not in used]
        return "\n".join([self.render(used, whole=False), *rest])


@dataclass
class Module:
    """A parsed workspace file: its rendered top-level definitions and its own imports."""

    path: Path
    key: object  # (mtime_ns, size) of the file, or ("buffer", n) for an open buffer's text
    definitions: dict[str, Definition] = field(default_factory=dict)  # by name, file order
    imports: dict[str, Binding] = field(default_factory=dict)  # local name → binding (re-exports)


# -- reading imports and definitions ------------------------------------------------------------------
def _parser() -> Parser | None:
    language = tree_sitter_language("python")
    return Parser(language) if language is not None else None


def import_lines(text: str) -> str:
    """The document's import statements (at any indentation, dedented, one a line), with their
    parenthesised or backslash continuations: what decides the document's imports, cheaply."""
    lines = text.split("\n")
    return "\n".join(" ".join(line.strip().rstrip("\\") for line in lines[first:last]) for first, last in _import_spans(text))


def _import_spans(text: str) -> list[tuple[int, int]]:
    """[first, last) line numbers of each import statement."""
    lines = text.split("\n")
    spans: list[tuple[int, int]] = []
    number, counted = 0, 0
    for match in _IMPORT_LINE.finditer(text):
        number += text.count("\n", counted, match.start())  # from the previous match on
        counted = match.start()
        last = number
        depth = lines[last].count("(") - lines[last].count(")")
        while (depth > 0 or lines[last].rstrip().endswith("\\")) and last + 1 < len(lines):
            last += 1
            depth += lines[last].count("(") - lines[last].count(")")
        spans.append((number, last + 1))
    return spans


def read_bindings(root: Node) -> list[Binding]:
    """The bindings of the import statements under `root`, in statement order."""
    bindings: list[Binding] = []
    for node in _walk_imports(root):
        if node.type == "import_statement":
            for item in node.children_by_field_name("name"):
                dotted, alias = _dotted_and_alias(item)
                bindings.append(Binding(0, dotted, None, alias or dotted.split(".")[0]))
        elif node.type == "import_from_statement":
            level, module = _from_module(node.child_by_field_name("module_name"))
            for item in node.children_by_field_name("name"):
                dotted, alias = _dotted_and_alias(item)
                bindings.append(Binding(level, module, dotted, alias or dotted))
    return bindings


def _walk_imports(root: Node) -> list[Node]:
    """Import statements outside functions and classes, in order (a loop: no recursion limit)."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type in ("import_statement", "import_from_statement"):
            found.append(node)
        elif node.type not in ("function_definition", "class_definition"):
            stack.extend(reversed(node.children))
    return found


def _dotted_and_alias(item: Node) -> tuple[str, str | None]:
    if item.type == "aliased_import":
        name, alias = item.child_by_field_name("name"), item.child_by_field_name("alias")
        return _text(name), _text(alias) if alias is not None else None
    return _text(item), None


def _from_module(node: Node | None) -> tuple[int, str]:
    if node is None:
        return 0, ""
    if node.type == "relative_import":
        dots = next((c for c in node.children if c.type == "import_prefix"), None)
        dotted = next((c for c in node.children if c.type == "dotted_name"), None)
        return len(_text(dots)) if dots is not None else 1, _text(dotted) if dotted is not None else ""
    return 0, _text(node)


def read_definitions(data: bytes, root: Node) -> dict[str, Definition]:
    """Top-level classes, functions and constants, each rendered for the model, in file order."""
    definitions: dict[str, Definition] = {}
    for child in root.children:
        definition = _unwrap(child)
        name_node = definition.child_by_field_name("name")
        if definition.type == "class_definition" and name_node is not None:
            definitions[_text(name_node)] = _render_class(data, child)
        elif definition.type == "function_definition" and name_node is not None:
            definitions[_text(name_node)] = Definition(_render_function(data, child))
        elif child.type == "expression_statement":
            name = _assigned_name(child)
            if name is not None and (_CONSTANT.match(name) or _is_type_alias(child)):
                definitions[name] = Definition(_render_constant(data, child))
    return definitions


def _unwrap(node: Node) -> Node:
    if node.type == "decorated_definition":
        return node.child_by_field_name("definition") or node
    return node


def _assigned_name(statement: Node) -> str | None:
    assignment = statement.children[0] if statement.children else None
    if assignment is None or assignment.type != "assignment":
        return None
    left = assignment.child_by_field_name("left")
    return _text(left) if left is not None and left.type == "identifier" else None


def _is_type_alias(statement: Node) -> bool:
    """`Name = Union[...]`-style aliases: a capitalised name bound to a type expression."""
    right = statement.children[0].child_by_field_name("right")
    name = _assigned_name(statement) or ""
    return name[:1].isupper() and right is not None and right.type in ("subscript", "binary_operator")


def _render_function(data: bytes, node: Node, indent: str = "") -> str:
    """The signature (with decorators) and the body if short; a function's docstring's first
    line (a method's costs more tokens than it tells beside its class's other signatures)."""
    definition = _unwrap(node)
    body = definition.child_by_field_name("body")
    if body is None:
        return indent + _slice(data, node).strip()
    # The slice starts at the decorators, so only its first line lacks the file's indentation.
    head = indent + _slice(data, node, end=definition.start_byte) + _one_line(_slice(data, definition, end=body.start_byte).rstrip())
    body_text = _slice(data, body)
    if body_text.count("\n") < (SHORT_METHOD_LINES if indent else SHORT_BODY_LINES):
        same_line = body.start_point.row == definition.child_by_field_name("name").start_point.row  # type: ignore[union-attr]
        return head + (" " if same_line else "\n" + indent + "    ") + body_text.strip()
    docstring = _docstring(data, body) if not indent else ""
    return head + ("\n" + indent + "    " + docstring if docstring else "") + " ..."


def _one_line(signature: str) -> str:
    """A signature written over several lines (one parameter a line), on one: the same words
    in fewer tokens. One with a comment inside stays as it is."""
    if "\n" not in signature or "#" in signature:
        return signature
    signature = re.sub(r"\(\s*\n\s*", "(", signature)
    signature = re.sub(r",?\s*\n\s*([)\]])", r"\1", signature)
    return re.sub(r"\s*\n\s*", " ", signature)


def _render_class(data: bytes, node: Node) -> Definition:
    """The class line, its docstring's first line and class attributes; its methods' signatures."""
    definition = _unwrap(node)
    body = definition.child_by_field_name("body")
    head = _slice(data, node, end=body.start_byte if body else definition.end_byte).rstrip()
    if body is None:
        return Definition(head)
    lines = [head]
    methods: list[tuple[str, str]] = []
    docstring = _docstring(data, body)
    if docstring:
        lines.append("    " + docstring)
    for member in body.children:
        inner = _unwrap(member)
        if inner.type == "function_definition" and _public_method(inner):
            methods.append((_text(inner.child_by_field_name("name")), _render_function(data, member, "    ")))
        elif member.type == "expression_statement" and member.children and member.children[0].type == "assignment":
            lines.append("    " + _first_lines(_slice(data, member), 1))
    if len(lines) == 1 and not methods:
        lines[0] += " ..."
    return Definition("\n".join(lines), tuple(methods))


def _public_method(method: Node) -> bool:
    """What callers use: public methods, the constructor and `__call__` (other dunders and
    private helpers cost tokens and are called by the language, or only from inside)."""
    name = _text(method.child_by_field_name("name"))
    return not name.startswith("_") or name in ("__init__", "__call__")


def _render_constant(data: bytes, node: Node) -> str:
    return _first_lines(_slice(data, node), SHORT_CONSTANT_LINES)


def _docstring(data: bytes, body: Node) -> str:
    first = body.children[0] if body.children else None
    if first is None or first.type != "expression_statement" or first.children[0].type != "string":
        return ""
    text = _slice(data, first).strip().lstrip("rRbBuU")
    quote = text[:3] if text[:3] in ('"""', "'''") else text[:1]
    line = text.removeprefix(quote).removesuffix(quote).strip().split("\n")[0].strip()
    return f"{quote}{line}{quote}" if line else ""


def _cut(text: str, budget_chars: int) -> str:
    """`text`'s first whole lines within `budget_chars`, marked as cut; empty if not even its
    first line and the mark fit."""
    lines = text.split("\n")
    kept: list[str] = []
    size = len(_CUT_MARK)
    for line in lines:
        if size + len(line) + 1 > budget_chars:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join([*kept, _CUT_MARK]) if kept else ""


def _within(text: str, room: int) -> str:
    """`text` if it fits `room` characters, else cut at a line if enough room is left."""
    if len(text) <= room:
        return text
    return _cut(text, room) if room >= MIN_CUT_CHARS else ""


def _first_lines(text: str, count: int) -> str:
    lines = text.strip().split("\n")
    return "\n".join(lines) if len(lines) <= count else lines[0] + " ..."


def _slice(data: bytes, node: Node, end: int | None = None) -> str:
    return data[node.start_byte : node.end_byte if end is None else end].decode("utf-8", "replace")


def _text(node: Node | None) -> str:
    return (node.text or b"").decode("utf-8", "replace") if node is not None else ""


# -- the project ----------------------------------------------------------------------------------------
def path_of_uri(uri: str) -> Path | None:
    """The local path of a `file:` URI (None for other schemes). Decoded here rather than with
    urllib, which the package keeps to the remote backend (tests/test_reliability.py)."""
    if not uri.startswith("file:"):
        return None
    rest = uri[len("file:") :]
    if rest.startswith("//"):
        rest = rest[2:]
        rest = rest[rest.find("/") :] if "/" in rest else "/"  # drop the authority (localhost)
    raw = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), rest.encode("utf-8"))
    return Path(raw.decode("utf-8", "surrogateescape"))


class Project:
    """A lazily parsed view of the workspace folders' Python modules (see the module docstring)."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = [folder.resolve() for folder in folders]
        self._modules: dict[Path, Module] = {}
        self._buffers: dict[Path, tuple[int, str]] = {}  # open buffers: (edit count, text)
        self._edits = 0
        self._imports: dict[str, list[Binding]] = {}  # import lines → bindings (small, per document)
        # (importing folder, level, dotted name) → file: a warm request stats only its modules.
        self._resolved: dict[tuple[Path, int, str], Path | None] = {}
        self._parser = _parser()
        self.parses = 0  # files parsed since creation (what a test or benchmark can watch)
        # Bumped when a module the context may show has changed: context built before is stale.
        self.generation = 0

    # -- keeping current
    def invalidate(self, path: Path) -> None:
        """The file changed on disk (didSave, didChangeWatchedFiles): parse it again on next use
        (and resolve imports afresh: it may have been created or deleted)."""
        self._modules.pop(path.resolve(), None)
        self._resolved.clear()
        self.generation += 1

    def update_open_buffer(self, uri: str, text: str) -> None:
        """An open buffer's text: it wins over the file on disk until `close_buffer`."""
        path = path_of_uri(uri)
        if path is not None:
            self._edits += 1
            self._buffers[path.resolve()] = (self._edits, text)
            if path.resolve() in self._modules:  # another document's context shows this one
                self.generation += 1

    def close_buffer(self, uri: str) -> None:
        path = path_of_uri(uri)
        if path is not None:
            self._buffers.pop(path.resolve(), None)

    # -- asking
    def context_for(self, doc_text: str, path: Path, used_names: set[str] | Counter[str], budget_chars: int) -> list[tuple[str, str]]:
        """(path relative to its workspace folder, rendered definitions) for each workspace module
        that `doc_text` imports a used name from, in import order, within `budget_chars`. With
        counts of uses (`used_names` a Counter), the most used names are chosen first."""
        if self._parser is None or budget_chars <= 0:
            return []
        budget = _Budget(self._parser, time.perf_counter() + PARSE_BUDGET_MS / 1000)
        found: list[tuple[str, Definition, int]] = []  # (module's relative path, definition, uses of the local name)
        importer = path.resolve()
        for binding in self._document_bindings(doc_text, self._parser):
            if binding.local in used_names:
                uses = used_names[binding.local] if isinstance(used_names, Counter) else 1
                targets = self._targets(importer, binding, used_names, budget)
                found += [(self.relative(module.path), module.definitions[name], uses) for module, name in targets]
        return self._fit(list(dict.fromkeys(found)), used_names, budget_chars)

    @staticmethod
    def _fit(found: list[tuple[str, Definition, int]], used: Collection[str], budget_chars: int) -> list[tuple[str, str]]:
        """Breadth first, the most used names first: what the file needs of each definition (a
        class's line, attributes, constructor and the methods it calls) while it fits, then
        their other methods in what is left, a text that does not fit cut at a line if that
        leaves some of it. Shown in import order, a section per module."""
        order = sorted(range(len(found)), key=lambda i: -found[i][2])  # stable: import order on ties
        kept: dict[int, str] = {}
        left = budget_chars
        for index in order:
            overhead = len(found[index][0]) + 16  # the section's separator and path
            text = _within(found[index][1].render(used, whole=False), left - overhead)
            if text:
                kept[index] = text
                left -= len(text) + overhead
        for index in (i for i in order if i in kept):
            whole = found[index][1].render()
            text = whole if len(whole) <= left + len(kept[index]) else _within(found[index][1].ranked(used), left + len(kept[index]))
            if len(text) > len(kept[index]):
                left -= len(text) - len(kept[index])
                kept[index] = text
        sections: dict[str, list[str]] = {}
        for index in sorted(kept):
            sections.setdefault(found[index][0], []).append(kept[index])
        return [(relative, "\n\n".join(texts)) for relative, texts in sections.items()]

    def warm(self, doc_text: str, path: Path) -> None:
        """Parse every workspace module the document imports a name it uses from, without the
        per-request budget: for didOpen, in a worker thread (`asyncio.to_thread`), so that the
        first completion finds them ready and every request in the file sees the same context.
        Safe beside requests: it has its own parser, and cache entries are replaced whole."""
        parser = _parser()
        if parser is None:
            return
        budget = _Budget(parser, float("inf"), MAX_PARSES_WARMING)
        names = used_names(doc_text)
        for binding in self._document_bindings(doc_text, parser):
            if binding.local in names:
                self._targets(path.resolve(), binding, names, budget)

    def _document_bindings(self, doc_text: str, parser: Parser) -> list[Binding]:
        lines = import_lines(doc_text)
        bindings = self._imports.get(lines)
        if bindings is None:
            bindings = read_bindings(parser.parse(lines.encode("utf-8", "surrogatepass")).root_node)
            if len(self._imports) > 64:
                self._imports.clear()  # documents come and go; a few entries are all that matter
            self._imports[lines] = bindings
        return bindings

    def _targets(self, importer: Path, binding: Binding, used: Collection[str], budget: _Budget) -> list[tuple[Module, str]]:
        """The (module, definition name) pairs a binding brings into view."""
        if binding.name is None:  # `import pkg.mod`: the used attributes of the module
            module = self._module(self._resolve(importer, binding.level, binding.module), budget)
            return [(module, name) for name in module.definitions if name in used] if module else []
        found = self._find(importer, binding, budget)
        if found is not None:
            return [found]
        # `from pkg import mod`: a submodule, whose used attributes are shown
        dotted = ".".join(part for part in (binding.module, binding.name) if part)
        module = self._module(self._resolve(importer, binding.level, dotted), budget)
        return [(module, name) for name in module.definitions if name in used] if module else []

    def _find(self, importer: Path, binding: Binding, budget: _Budget, depth: int = 0) -> tuple[Module, str] | None:
        """Where the name a binding imports is defined, following `__init__` re-exports."""
        module = self._module(self._resolve(importer, binding.level, binding.module), budget)
        if module is None or binding.name is None:
            return None
        if binding.name in module.definitions:
            return module, binding.name
        reexport = module.imports.get(binding.name)
        if reexport is None or depth >= MAX_REEXPORT_DEPTH:
            return None
        return self._find(module.path, reexport, budget, depth + 1)

    def _resolve(self, importer: Path, level: int, dotted: str) -> Path | None:
        """The workspace file a module name means, seen from `importer`."""
        key = (importer.parent, level, dotted)
        if key not in self._resolved:
            self._resolved[key] = self._find_file(importer, level, dotted)
        return self._resolved[key]

    def _find_file(self, importer: Path, level: int, dotted: str) -> Path | None:
        parts = [part for part in dotted.split(".") if part]
        if level > 0:
            base = importer.parent
            for _ in range(level - 1):
                base = base.parent
            return self._module_file(base, parts)
        for root in self._roots(importer):
            found = self._module_file(root, parts)
            if found is not None:
                return found
        return None

    def _roots(self, importer: Path) -> list[Path]:
        """Where absolute imports start: the folder holding the importer's top package (a
        workspace that is itself a package), then each workspace folder and its `src/`."""
        package = importer.parent
        while (package / "__init__.py").is_file() and package.parent != package:
            package = package.parent
        return [package, *[root for folder in self.folders for root in (folder, folder / "src")]]

    def _module_file(self, base: Path, parts: list[str]) -> Path | None:
        candidate = base.joinpath(*parts)
        for path in (candidate.with_name(candidate.name + ".py") if parts else None, candidate / "__init__.py"):
            if path is not None and path.is_file() and self._inside(path):
                return path
        return None

    def _inside(self, path: Path) -> bool:
        return not self.folders or any(path.is_relative_to(folder) for folder in self.folders)

    def relative(self, path: Path) -> str:
        """How a file is named to the model: relative to its workspace folder."""
        for candidate in (path, path.resolve()):  # resolving (a syscall a part) only if needed
            for folder in self.folders:
                if candidate.is_relative_to(folder):
                    return candidate.relative_to(folder).as_posix()
        return path.name

    def _module(self, path: Path | None, budget: _Budget) -> Module | None:
        """The parsed module at `path`, from the cache when its key still matches; parsed now
        if this request's budget allows (None otherwise: a later request will)."""
        if path is None:
            return None
        buffer = self._buffers.get(path)
        if buffer is not None:
            key: object = ("buffer", buffer[0])
        else:
            try:
                stat = path.stat()
            except OSError:
                return None
            if stat.st_size > MAX_FILE_BYTES:
                return None
            key = (stat.st_mtime_ns, stat.st_size)
        cached = self._modules.get(path)
        if cached is not None and cached.key == key:
            return cached
        if not budget.allows():
            return None
        budget.parses -= 1
        text = buffer[1] if buffer is not None else path.read_text(encoding="utf-8", errors="replace")
        module = self._parse(path, key, text, budget.parser)
        self._modules[path] = module
        return module

    def _parse(self, path: Path, key: object, text: str, parser: Parser) -> Module:
        data = text.encode("utf-8", "surrogatepass")
        root = parser.parse(data).root_node
        self.parses += 1
        imports = {binding.local: binding for binding in read_bindings(root) if binding.name is not None}
        return Module(path, key, read_definitions(data, root), imports)


# -- recently seen chunks -------------------------------------------------------------------------------
RING_CHUNKS = 16
CHUNK_LINES = 64
# llama.vim's thresholds: a chunk this similar to a newer one is a duplicate; this similar to the
# current window it makes the model copy instead of complete.
DUPLICATE_SIMILARITY = 0.9
WINDOW_SIMILARITY = 0.5


@dataclass(frozen=True)
class Chunk:
    path: str  # as shown to the model (relative to the workspace)
    text: str


def similarity(a: str, b: str) -> float:
    """Dice coefficient of the two texts' sets of non-blank lines (stripped)."""
    lines_a = {line.strip() for line in a.split("\n") if line.strip()}
    lines_b = {line.strip() for line in b.split("\n") if line.strip()}
    if not lines_a and not lines_b:
        return 1.0
    return 2 * len(lines_a & lines_b) / (len(lines_a) + len(lines_b))


class RecentChunks:
    """llama.vim's ring: chunks of other files gathered when they are opened, saved or when the
    cursor moves far; the oldest goes first, and a chunk nearly equal to a newer one is dropped."""

    def __init__(self, size: int = RING_CHUNKS, lines: int = CHUNK_LINES) -> None:
        self._chunks: deque[Chunk] = deque(maxlen=size)
        self._lines = lines
        self.generation = 0  # bumped by every gather: what was chosen before may be stale

    def gather(self, path: str, text: str, around_line: int) -> None:
        """Remember the chunk of `text` centred on `around_line`."""
        lines = text.split("\n")
        start = max(0, min(around_line - self._lines // 2, len(lines) - self._lines))
        chunk = Chunk(path, "\n".join(lines[start : start + self._lines]))
        if not chunk.text.strip():
            return
        kept = [old for old in self._chunks if similarity(old.text, chunk.text) <= DUPLICATE_SIMILARITY]
        self._chunks.clear()
        self._chunks.extend([*kept, chunk])
        self.generation += 1

    def forget(self, path: str) -> None:
        """`path`'s buffer was edited: its chunks show text it no longer has (a renamed method
        the model would copy). It is gathered again when saved or closed."""
        kept = [chunk for chunk in self._chunks if chunk.path != path]
        if len(kept) < len(self._chunks):
            self._chunks.clear()
            self._chunks.extend(kept)
            self.generation += 1

    def for_window(self, current_path: str, window: str, budget_chars: int, shown: Collection[str] = ()) -> list[tuple[str, str]]:
        """(path, text) of the chunks to show beside `window`, oldest first (the order they came
        in, so the prompt's beginning stays put as new ones arrive), newest kept within budget;
        none of the files in `shown` (their definitions are in the prompt already)."""
        chosen: list[Chunk] = []
        used = 0
        for chunk in reversed(self._chunks):
            if chunk.path == current_path or chunk.path in shown or similarity(chunk.text, window) > WINDOW_SIMILARITY:
                continue
            if used + len(chunk.text) + len(chunk.path) + 16 > budget_chars:
                break
            chosen.append(chunk)
            used += len(chunk.text) + len(chunk.path) + 16
        return [(chunk.path, chunk.text) for chunk in reversed(chosen)]


def used_names(text: str) -> Counter[str]:
    """Uses of each identifier in `text` outside its import statements: pass the whole
    document's so the context is the same at every position in the file (and so stays in the KV
    cache); it changes only when the user first uses another imported name, or uses one so
    often that it outranks another for the budget."""
    lines = text.split("\n")
    for first, last in _import_spans(text):
        lines[first:last] = [""] * (last - first)
    return Counter(_IDENTIFIER.findall("\n".join(lines)))
