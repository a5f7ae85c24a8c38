"""The facts about a selection that an explanation must mention, read from the tree-sitter tree:
the function it is (if it is one), its parameters and return annotation, and the names it uses
that are bound somewhere else. Explain shows these to the model so that a small model names
them instead of guessing."""

from __future__ import annotations

import builtins
import keyword
from dataclasses import dataclass

from tree_sitter import Node, Tree

from qwen_lsp.syntax import symbols

_PARAMETER_KINDS = {
    "identifier",
    "typed_parameter",
    "default_parameter",
    "typed_default_parameter",
    "list_splat_pattern",
    "dictionary_splat_pattern",
}
# Names no explanation needs to be told about: everyone knows them.
COMMON_NAMES = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | {"self", "cls"}


@dataclass(frozen=True)
class Outline:
    name: str | None  # the function's (or class's) name when the selection is one
    kind: str | None  # "function" | "class"
    parameters: tuple[str, ...]  # without self/cls
    returns: str | None  # the return annotation, if any
    gives_back: bool  # a `return <value>` or `yield` in the function's own body
    outside_names: tuple[str, ...]  # names used but bound elsewhere (not builtins)


def _text(data: bytes, node: Node) -> str:
    return data[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _definition_in(tree: Tree, start_byte: int, end_byte: int, data: bytes) -> Node | None:
    """The function or class definition that the range is, whole (surrounding whitespace and
    decorators aside); None for a part of one or several statements."""
    while start_byte < end_byte and data[start_byte : start_byte + 1].isspace():
        start_byte += 1
    while end_byte > start_byte and data[end_byte - 1 : end_byte].isspace():
        end_byte -= 1
    if start_byte >= end_byte:
        return None
    outer = tree.root_node.descendant_for_byte_range(start_byte, end_byte - 1)
    node = outer.child_by_field_name("definition") if outer is not None and outer.type == "decorated_definition" else outer
    if outer is None or node is None or node.type not in ("function_definition", "class_definition"):
        return None
    return node if outer.start_byte >= start_byte and outer.end_byte <= end_byte else None


def parameters(function: Node, data: bytes) -> tuple[str, ...]:
    """Parameter names as written (`*args` → `args`), without self and cls."""
    params = function.child_by_field_name("parameters")
    names = []
    for child in params.named_children if params is not None else []:
        if child.type not in _PARAMETER_KINDS:
            continue
        name = child if child.type == "identifier" else child.child_by_field_name("name")
        if name is None:
            name = next((c for c in child.named_children if c.type == "identifier"), None)
        if name is not None and _text(data, name) not in ("self", "cls"):
            names.append(_text(data, name))
    return tuple(names)


def _gives_back(function: Node) -> bool:
    """A `return value` or `yield` in this function's body, not in nested functions."""
    stack = list(function.children)
    while stack:
        node = stack.pop()
        if node.type in ("function_definition", "lambda", "class_definition"):
            continue
        if (node.type == "return_statement" and node.named_child_count) or node.type == "yield":
            return True
        stack.extend(node.children)
    return False


def _bound_in(tree: Tree, start_byte: int, end_byte: int, data: bytes) -> set[str]:
    """Names the range binds: parameters, assignment and loop targets, imports, definitions."""
    bound: set[str] = set()
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.end_byte <= start_byte or node.start_byte >= end_byte:
            continue
        targets: list[Node] = []
        if node.type in ("function_definition", "class_definition"):
            targets = [name] if (name := node.child_by_field_name("name")) is not None else []
            bound.update(parameters(node, data) if node.type == "function_definition" else ())
        elif node.type in ("assignment", "augmented_assignment", "for_statement", "for_in_clause"):
            targets = [left] if (left := node.child_by_field_name("left")) is not None else []
        elif node.type in ("as_pattern_target", "aliased_import", "dotted_name") and node.parent is not None:
            targets = [node] if node.parent.type in ("as_pattern", "import_statement", "import_from_statement") else []
        elif node.type == "lambda_parameters":
            targets = [node]
        for target in targets:
            bound.update(_identifiers(target, data))
        stack.extend(node.children)
    return bound


def _identifiers(node: Node | None, data: bytes) -> list[str]:
    if node is None:
        return []
    names, stack = [], [node]
    while stack:  # a loop, not recursion: deeply nested code must not hit the recursion limit
        current = stack.pop()
        if current.type == "identifier":
            names.append(_text(data, current))
        elif current.type != "attribute":  # `self.x = ...` binds no name
            stack.extend(reversed(current.named_children))
    return names


def outline(tree: Tree, data: bytes, start_byte: int, end_byte: int) -> Outline:
    """What the byte range is and what it relies on."""
    definition = _definition_in(tree, start_byte, end_byte, data)
    bound = _bound_in(tree, start_byte, end_byte, data)
    outside = tuple(
        n for n in symbols.names_used(tree, start_byte, end_byte, data, reads_only=True) if n not in bound and n not in COMMON_NAMES
    )
    if definition is None:
        return Outline(None, None, (), None, False, outside)
    name_node = definition.child_by_field_name("name")
    name = _text(data, name_node) if name_node is not None else None
    if definition.type == "class_definition":
        return Outline(name, "class", (), None, False, outside)
    annotation = definition.child_by_field_name("return_type")
    returns = _text(data, annotation) if annotation is not None else None
    return Outline(name, "function", parameters(definition, data), returns, _gives_back(definition), outside)
