"""What a stretch of Python code does with names, read from its tree-sitter tree: the names it
refers to, binds, imports and calls. A fix is checked with it: an edit may not bring in names
that the error has nothing to do with (an `import os` and an `os.system(...)` call slipped into
a function), nor names defined nowhere."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field

from tree_sitter import Node, Tree

BUILTINS = frozenset(dir(builtins))
_IMPORTS = {"import_statement", "import_from_statement", "future_import_statement"}
# Where an identifier is bound: these fields of these nodes (through any tuple/list pattern).
_BINDING_FIELDS = {
    "assignment": "left",
    "augmented_assignment": "left",
    "for_statement": "left",
    "for_in_clause": "left",
    "named_expression": "name",
    "function_definition": "name",
    "class_definition": "name",
    "as_pattern": "alias",
}
# ... and anywhere inside these.
_BINDING_PARTS = {"parameters", "lambda_parameters", "global_statement", "nonlocal_statement", "as_pattern_target"}


@dataclass
class Names:
    used: set[str] = field(default_factory=set)  # every identifier, whatever its role
    references: set[str] = field(default_factory=set)  # read as a variable (not bound, not an attribute)
    bound: set[str] = field(default_factory=set)
    imported: set[str] = field(default_factory=set)  # the names import statements bind
    called: set[str] = field(default_factory=set)  # the root name of each call: `os` in os.path.join()


def names_in(tree: Tree, data: bytes, start_byte: int, end_byte: int) -> Names:
    """The names in the nodes of `tree` that overlap [start_byte, end_byte)."""
    names = Names()
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.start_byte >= end_byte or node.end_byte <= start_byte:
            continue
        if node.type in _IMPORTS:
            names.imported |= _imported_names(node, data)
        elif node.type == "call":
            root = _root_name(node.child_by_field_name("function"))
            if root is not None:
                names.called.add(_text(root, data))
        elif node.type == "identifier":
            _classify(node, _text(node, data), names)
        stack.extend(node.children)
    return names


def _classify(node: Node, name: str, names: Names) -> None:
    names.used.add(name)
    parent = node.parent
    if parent is None or any(a.type in _IMPORTS for a in _ancestors(node)):
        return
    if parent.type == "attribute" and parent.child_by_field_name("attribute") == node:
        return
    if parent.type == "keyword_argument" and parent.child_by_field_name("name") == node:
        return
    if _is_binding(node):
        names.bound.add(name)
    else:
        names.references.add(name)


def _ancestors(node: Node) -> list[Node]:
    found = []
    while node.parent is not None:
        node = node.parent
        found.append(node)
    return found


def _is_binding(node: Node) -> bool:
    child, parent = node, node.parent
    while parent is not None:
        if parent.type in ("attribute", "subscript", "call"):  # `self` in `self.x = 1` is read, not bound
            return False
        if parent.type in _BINDING_PARTS:
            return True
        binding_field = _BINDING_FIELDS.get(parent.type)
        if binding_field is not None and parent.child_by_field_name(binding_field) == child:
            return True
        child, parent = parent, parent.parent
    return False


def _imported_names(node: Node, data: bytes) -> set[str]:
    """`import a.b` binds a, `import a as b` b, `from m import x` x, `from m import x as y` y."""
    found = set()
    for child in node.children_by_field_name("name"):
        if child.type == "aliased_import":
            alias = child.child_by_field_name("alias")
            found.add(_text(alias, data) if alias is not None else _text(child, data))
        elif child.type == "dotted_name" and child.named_children:
            part = child.named_children[0] if node.type == "import_statement" else child.named_children[-1]
            found.add(_text(part, data))
    if any(c.type == "wildcard_import" for c in node.children):
        found.add("*")
    return found


def _root_name(node: Node | None) -> Node | None:
    """The identifier a call's callee starts from: `a` in a.b.c(), a(x)(y) and a[0]()."""
    while node is not None and node.type != "identifier":
        if node.type == "attribute":
            node = node.child_by_field_name("object")
        elif node.type == "call":
            node = node.child_by_field_name("function")
        elif node.type == "subscript":
            node = node.child_by_field_name("value")
        else:
            return None
    return node


def _text(node: Node, data: bytes) -> str:
    return data[node.start_byte : node.end_byte].decode("utf-8", "replace")
