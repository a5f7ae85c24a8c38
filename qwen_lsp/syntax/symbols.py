"""What a piece of code depends on in its own file, read from the tree-sitter tree: the imports,
the definitions of the names it uses, the signatures around it, the names the file defines, and
the syntactic unit (function, class, statement) that holds a line.

Explain and fix both show these to the model; everything works on the UTF-8 bytes tree-sitter
parsed, and returns text.
"""

from __future__ import annotations

from dataclasses import dataclass

from tree_sitter import Node, Tree

from qwen_lsp.syntax.documents import decoded_length
from qwen_lsp.syntax.indent import width

DEFINITIONS = {"function_definition", "class_definition"}
IMPORTS = {"import_statement", "import_from_statement", "future_import_statement"}
_HEADER_WORDS = ("def ", "async def ", "class ")
# A definition longer than this is shown as its outline (signatures, fields), not in full.
FULL_DEFINITION_LINES = 16
# A function or class longer than this is too much to rewrite: the fix works on a smaller block.
MAX_UNIT_LINES = 60


@dataclass(frozen=True)
class Definition:
    name: str
    node: Node


def node_text(data: bytes, node: Node) -> str:
    return data[node.start_byte : node.end_byte].decode("utf-8", "replace")


def definition_node(node: Node) -> Node:
    """The class/function node of a (possibly decorated) definition."""
    if node.type == "decorated_definition":
        inner = node.child_by_field_name("definition")
        if inner is not None:
            return inner
    return node


def char_offset(data: bytes, byte: int) -> int:
    """Character offset of a byte offset into UTF-8 `data`."""
    return decoded_length(data[:byte])


def definition_name(node: Node, data: bytes) -> str:
    name = definition_node(node).child_by_field_name("name")
    return node_text(data, name) if name is not None else "?"


def imports(tree: Tree, data: bytes) -> list[str]:
    return [node_text(data, n) for n in tree.root_node.children if n.type in IMPORTS]


def top_level_definitions(tree: Tree, data: bytes) -> dict[str, Definition]:
    """Module-level functions, classes and assigned names, by name (decorators included)."""
    found: dict[str, Definition] = {}
    for node in tree.root_node.children:
        inner = definition_node(node)
        if inner.type in DEFINITIONS:
            name = inner.child_by_field_name("name")
            if name is not None:
                found[node_text(data, name)] = Definition(node_text(data, name), node)
        elif node.type == "expression_statement" and node.named_child_count:
            assignment = node.named_children[0]
            left = assignment.child_by_field_name("left") if assignment.type == "assignment" else None
            if left is not None and left.type == "identifier":
                found[node_text(data, left)] = Definition(node_text(data, left), node)
    return found


def names_used(tree: Tree, start_byte: int, end_byte: int, data: bytes, *, reads_only: bool = False) -> list[str]:
    """Identifiers in the byte range, in order of first use. `reads_only` leaves out those that
    name no variable: attributes (`x.name`) and keyword arguments (`f(name=...)`)."""
    seen: dict[str, None] = {}
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.end_byte <= start_byte or node.start_byte >= end_byte:
            continue
        if node.type == "identifier" and not (reads_only and _names_no_variable(node)):
            seen.setdefault(node_text(data, node), None)
        stack.extend(reversed(node.children))
    return list(seen)


def _names_no_variable(node: Node) -> bool:
    parent = node.parent
    if parent is None:
        return False
    field = {"attribute": "attribute", "keyword_argument": "name"}.get(parent.type)
    return field is not None and parent.child_by_field_name(field) == node


def all_defined_names(tree: Tree, data: bytes) -> set[str]:
    """Every name the file binds: definitions, parameters, assignments, attributes set on self,
    class fields and imported names. Used to suggest what a misspelled name meant."""
    names: set[str] = set()
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        field = None
        if node.type in DEFINITIONS:
            field = node.child_by_field_name("name")
        elif node.type in ("assignment", "augmented_assignment"):
            field = node.child_by_field_name("left")
            if field is not None and field.type == "attribute":
                field = field.child_by_field_name("attribute")
        elif node.type in ("typed_parameter", "default_parameter", "typed_default_parameter"):
            field = node.child_by_field_name("name") or (node.named_children[0] if node.named_children else None)
        elif node.type in ("dotted_name", "aliased_import") and node.parent is not None and node.parent.type in IMPORTS:
            field = node.child_by_field_name("alias") or node.named_children[-1]
        elif node.type == "identifier" and node.parent is not None and node.parent.type == "parameters":
            field = node
        if field is not None and field.type == "identifier":
            names.add(node_text(data, field))
        stack.extend(node.children)
    return names


def enclosing_signatures(tree: Tree, start_byte: int, end_byte: int, data: bytes) -> list[str]:
    """Headers of the classes and functions around a byte range, outermost first."""
    node = tree.root_node.descendant_for_byte_range(start_byte, max(start_byte, end_byte - 1))
    headers = []
    while node is not None:
        if node.type in DEFINITIONS and not (node.start_byte >= start_byte and node.end_byte <= end_byte):
            headers.append(header(node, data))
        node = node.parent
    return headers[::-1]


def header(node: Node, data: bytes) -> str:
    """A definition's first part, up to its body: `def f(x: int) -> str:`."""
    body = node.child_by_field_name("body")
    end = body.start_byte if body is not None else node.end_byte
    return data[node.start_byte : end].decode("utf-8", "replace").rstrip()


def render_definition(definition: Definition, data: bytes) -> str:
    """The definition's source, or for a long one its outline: signature, docstring's first line,
    class fields and method signatures."""
    source = node_text(data, definition.node)
    if source.count("\n") < FULL_DEFINITION_LINES:
        return source
    inner = definition_node(definition.node)
    body = inner.child_by_field_name("body")
    line_start = data.rfind(b"\n", 0, definition.node.start_byte) + 1
    indent = " " * (definition.node.start_byte - line_start)
    lines = [data[definition.node.start_byte : body.start_byte if body else inner.end_byte].decode().rstrip()]
    members = body.named_children if body is not None else []
    for child in members:
        member = definition_node(child)
        if member.type in DEFINITIONS:
            lines.append(indent + "    " + header(member, data) + " ...")
        elif child.type == "expression_statement" and (inner.type == "class_definition" or child == members[0]):
            lines.append(indent + "    " + node_text(data, child).split("\n", 1)[0])
    if inner.type == "function_definition":
        lines.append(indent + "    ...")
    return "\n".join(lines)


def used_definitions(tree: Tree, data: bytes, start_byte: int, end_byte: int) -> list[Definition]:
    """Module-level definitions (outside the range) of names the range uses, in order of use."""
    definitions = top_level_definitions(tree, data)
    found = []
    for name in names_used(tree, start_byte, end_byte, data):
        definition = definitions.get(name)
        if definition is None:
            continue
        if definition.node.start_byte < end_byte and definition.node.end_byte > start_byte:
            continue  # the range is inside this definition, or contains it
        found.append(definition)
    return found


def used_definitions_text(tree: Tree, data: bytes, start_byte: int, end_byte: int, budget: int) -> list[str]:
    """`used_definitions` rendered, those that still fit in `budget` characters."""
    shown = []
    for definition in used_definitions(tree, data, start_byte, end_byte):
        source = render_definition(definition, data)
        if len(source) <= budget:
            budget -= len(source)
            shown.append(source)
    return shown


def function_at(tree: Tree, byte: int) -> Node | None:
    """The innermost function (else class) around a byte offset, decorators included."""
    node = tree.root_node.descendant_for_byte_range(byte, byte)
    best = None
    while node is not None:
        if node.type == "function_definition" or (node.type == "class_definition" and best is None):
            best = node
            if node.type == "function_definition":
                break
        node = node.parent
    if best is not None and best.parent is not None and best.parent.type == "decorated_definition":
        return best.parent
    return best


# -- units by indentation --------------------------------------------------------------------------
def _is_blank(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def unit_lines(lines: list[str], first: int, last: int) -> tuple[int, int]:
    """First and last line (0-based) of the smallest function or class holding lines
    first..last, else of the top-level statement that does; a function longer than
    MAX_UNIT_LINES gives way to the smallest block statement inside it.

    Found by indentation rather than from the tree: around a syntax error the tree is broken,
    while the code's layout still says where a definition starts and ends.
    """
    level = min((width(lines[i]) for i in range(first, last + 1) if not _is_blank(lines[i])), default=0)
    candidates = []  # (header line, its indentation), innermost first
    for row in range(first, -1, -1):
        line = lines[row]
        if _is_blank(line):
            continue
        indent = width(line)
        if indent < level or (row == first and indent <= level):
            candidates.append((row, indent))
            level = indent
            if indent == 0:
                break
    if not candidates:
        candidates.append((first, width(lines[first])))
    fallback = None
    for row, indent in candidates:
        stripped = lines[row].lstrip()
        is_definition = stripped.startswith(_HEADER_WORDS)
        if not (is_definition or indent == 0 or stripped.endswith(":")):
            continue
        start, end = _with_decorators(lines, row, indent), _block_end(lines, row, indent, last)
        if fallback is None and end - start < MAX_UNIT_LINES:
            fallback = (start, end)
        if is_definition or indent == 0:
            if end - start < MAX_UNIT_LINES or fallback is None:
                return start, end
            return fallback
    return fallback or (first, last)


def _with_decorators(lines: list[str], row: int, indent: int) -> int:
    while row > 0 and lines[row - 1].lstrip().startswith("@") and width(lines[row - 1]) == indent:
        row -= 1
    return row


def _block_end(lines: list[str], row: int, indent: int, at_least: int) -> int:
    """Last line of the statement starting at `row`: the lines after it that are indented
    deeper (or close a bracket at its level), trailing blank lines excluded."""
    end = max(row, at_least)
    for i in range(row + 1, len(lines)):
        line = lines[i]
        if _is_blank(line):
            continue
        if width(line) > indent or (width(line) == indent and line.lstrip()[:1] in ")]}"):
            end = max(end, i)
        elif i > at_least:
            break
    return end


def enclosing_definition_lines(lines: list[str], first: int, last: int) -> tuple[int, int] | None:
    """The function or class (lines, 0-based) around the block first..last, for a fix whose
    first answer, seeing only that block, failed; None at the top level or past MAX_UNIT_LINES."""
    level = width(lines[first])
    for row in range(first - 1, -1, -1):
        line = lines[row]
        if _is_blank(line) or width(line) >= level:
            continue
        level = width(line)
        if line.lstrip().startswith(_HEADER_WORDS):
            start, end = _with_decorators(lines, row, level), _block_end(lines, row, level, last)
            return (start, end) if end - start < MAX_UNIT_LINES else None
        if level == 0:
            break
    return None


def self_attributes(tree: Tree, data: bytes, byte: int) -> tuple[str, list[str]] | None:
    """The class around a byte offset and the `self.x` attributes its methods assign, in order."""
    node = tree.root_node.descendant_for_byte_range(byte, byte)
    while node is not None and node.type != "class_definition":
        node = node.parent
    if node is None:
        return None
    found: dict[str, None] = {}
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type in ("assignment", "augmented_assignment"):
            left = current.child_by_field_name("left")
            target = left.child_by_field_name("object") if left is not None and left.type == "attribute" else None
            attribute = left.child_by_field_name("attribute") if left is not None and target is not None else None
            if attribute is not None and target is not None and node_text(data, target) == "self":
                found.setdefault(node_text(data, attribute), None)
        stack.extend(reversed(current.children))
    return definition_name(node, data), list(found)
