"""Edits that a diagnostic fully determines, read from the tree, so that no model is asked: a
header's missing ':', a method's missing `self`, positional arguments past the count the callee
takes, a number added to a text, a function whose last expression is its missing result, a bare
name that is an attribute of the method's object. Messages are ours, pyright's, mypy's and
ruff's. Each repair is a suggestion the caller still verifies; None when the error leaves any
choice open (that one goes to the model).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

from tree_sitter import Node

from qwen_lsp.syntax import names, symbols
from qwen_lsp.syntax.diagnostics import SYNTAX_PREFIX, Problem
from qwen_lsp.syntax.documents import Document


@dataclass(frozen=True)
class Repair:
    """Replace the characters [start, end) of the document with `text`."""

    start: int
    end: int
    text: str


_COLON = re.compile(re.escape(SYNTAX_PREFIX) + r"expected ':' at the end of")
_UNDEFINED_SELF = re.compile(r"""["'`]self["'`] is not defined|Undefined name [`'"]self[`'"]""")
_EXTRA_ARGUMENTS = re.compile(r"Expected (\d+) positional arguments?")
_OPERANDS = re.compile(
    r"""Operator "\+" not supported for types "(.+)" and "(.+)"|Unsupported operand types for \+ \("(.+)" and "(.+)"\)"""
)
_MISSING_RETURN = re.compile(r"Missing return statement|must return value on all code paths", re.I)
_UNBOUND = re.compile(r"""["'`](\w+)["'`] is (?:unbound|not defined)|Undefined name [`'"](\w+)[`'"]""")
_UNKNOWN_NAME = re.compile(r"""["'`](\w+)["'`] is not defined|Undefined name [`'"](\w+)[`'"]""")
_UNKNOWN_ATTRIBUTE = re.compile(r"""(?:Cannot access attribute|has no attribute) ["'`](\w+)["'`](?: for class ["'`]([\w.]+))?""")
# A misspelling is renamed only to the one name in scope this close to it (difflib's ratio):
# with two candidates, or none, the model chooses.
RENAME_CUTOFF = 0.75
_TEXT_TYPE = re.compile(r"str|LiteralString|Literal\[['\"].*")
_NUMBER_TYPE = re.compile(r"int|float|Literal\[-?\d+\]")
# A last expression whose value is not the function's result: a call made for its effect.
_EFFECT_CALLS = {"print", "setattr", "delattr", "exec"}


def repair(doc: Document, problem: Problem) -> list[Repair] | None:
    """The edits that fix `problem`, when its message and the tree leave no choice; else None."""
    if doc.tree is None or doc.language_id != "python":
        return None
    for pattern, rule in _RULES:
        found = pattern.search(problem.message)
        if found is not None:
            repairs = rule(doc, problem, found)
            if repairs:
                return repairs
    return None


def _node_at(doc: Document, problem: Problem) -> Node | None:
    assert doc.tree is not None
    start = doc.byte_offset(problem.start)
    end = max(start, doc.byte_offset(problem.end))
    return doc.tree.root_node.descendant_for_byte_range(start, end)


def _ancestor(node: Node | None, kind: str) -> Node | None:
    while node is not None and node.type != kind:
        node = node.parent
    return node


def _text(doc: Document, node: Node) -> str:
    return symbols.node_text(doc.data, node)


def _at(doc: Document, byte: int, text: str, end_byte: int | None = None) -> Repair:
    end = byte if end_byte is None else end_byte
    return Repair(doc.char_offset(byte), doc.char_offset(end), text)


# -- the rules -------------------------------------------------------------------------------------
def _colon(doc: Document, problem: Problem, found: re.Match[str]) -> list[Repair] | None:
    """Our own diagnostic points at the end of the header's code: the ':' goes exactly there."""
    return [Repair(problem.start, problem.start, ":")] if problem.start == problem.end else None


def _missing_self(doc: Document, problem: Problem, found: re.Match[str]) -> list[Repair] | None:
    function = _ancestor(_node_at(doc, problem), "function_definition")
    if function is None or _method_kind(doc, function) != "method":
        return None
    parameters = function.child_by_field_name("parameters")
    if parameters is None:
        return None
    first = parameters.named_children[0] if parameters.named_children else None
    if first is None:
        return [_at(doc, parameters.start_byte + 1, "self")]
    if _text(doc, first).split(":")[0].strip() == "self":
        return None
    return [_at(doc, first.start_byte, "self, ")]


def _method_kind(doc: Document, function: Node) -> str:
    """Whether `function` is a plain method of a class ("method"), a "decorated" one or a "function"."""
    holder = function.parent
    decorators: list[str] = []
    if holder is not None and holder.type == "decorated_definition":
        decorators = [_text(doc, d).lstrip("@").strip() for d in holder.children if d.type == "decorator"]
        holder = holder.parent
    if holder is None or holder.type != "block" or holder.parent is None or holder.parent.type != "class_definition":
        return "function"
    return "method" if not {"staticmethod", "classmethod"} & set(decorators) else "decorated"


def _extra_arguments(doc: Document, problem: Problem, found: re.Match[str]) -> list[Repair] | None:
    """Pyright underlines the first argument past the count: those past it are dropped."""
    keep = int(found.group(1))
    node = _node_at(doc, problem)
    while node is not None and (node.parent is None or node.parent.type != "argument_list"):
        node = node.parent
    if node is None or node.parent is None:
        return None
    arguments = node.parent.named_children
    if any(a.type in ("list_splat", "dictionary_splat", "comment") for a in arguments):
        return None  # how many a splat passes is not known
    positional = [a for a in arguments if a.type != "keyword_argument"]
    if len(positional) <= keep or positional[keep].id != node.id or positional[-1].id != arguments[len(positional) - 1].id:
        return None
    if keep:
        return [_at(doc, positional[keep - 1].end_byte, "", positional[-1].end_byte)]
    after = arguments[len(positional)] if len(arguments) > len(positional) else None
    return [_at(doc, positional[0].start_byte, "", after.start_byte if after is not None else positional[-1].end_byte)]


def _text_plus_number(doc: Document, problem: Problem, found: re.Match[str]) -> list[Repair] | None:
    """A text and a number added: the number is turned into text (`str(...)`)."""
    left_type, right_type = (found.group(1), found.group(2)) if found.group(1) else (found.group(3), found.group(4))
    if _TEXT_TYPE.fullmatch(left_type) and _NUMBER_TYPE.fullmatch(right_type):
        side = "right"
    elif _NUMBER_TYPE.fullmatch(left_type) and _TEXT_TYPE.fullmatch(right_type):
        side = "left"
    else:
        return None
    node = _node_at(doc, problem)
    # The range is the whole sum (pyright) or the operand itself.
    if node is not None and node.type != "binary_operator" and node.parent is not None and node.parent.type == "binary_operator":
        node = node.parent
    if node is None or node.type != "binary_operator" or _text(doc, node.child_by_field_name("operator") or node) != "+":
        return None
    operand = node.child_by_field_name(side)
    if operand is None:
        return None
    return [_at(doc, operand.start_byte, "str("), _at(doc, operand.end_byte, ")")]


def _missing_return(doc: Document, problem: Problem, found: re.Match[str]) -> list[Repair] | None:
    """A function whose body ends with an expression computed and thrown away returns it."""
    function = _ancestor(_node_at(doc, problem), "function_definition")
    body = function.child_by_field_name("body") if function is not None else None
    last = body.named_children[-1] if body is not None and body.named_children else None
    if last is None or last.type != "expression_statement" or last.named_child_count != 1:
        return None
    value = last.named_children[0]
    if value.type in ("assignment", "augmented_assignment", "yield", "string", "await"):
        return None
    called = value.child_by_field_name("function") if value.type == "call" else None
    if called is not None and _text(doc, called) in _EFFECT_CALLS:
        return None
    return [_at(doc, last.start_byte, "return ")]


def _self_attribute(doc: Document, problem: Problem, found: re.Match[str]) -> list[Repair] | None:
    """A bare name that the method's class keeps as `self.name`, and the method neither takes
    nor assigns otherwise: every bare use of it in the method becomes `self.name`."""
    name = found.group(1) or found.group(2)
    node = _node_at(doc, problem)
    function = _ancestor(node, "function_definition")
    if node is None or node.type != "identifier" or _text(doc, node) != name or function is None or name == "self":
        return None
    owner = symbols.self_attributes(doc.tree, doc.data, node.start_byte)  # type: ignore[arg-type]
    parameters = function.child_by_field_name("parameters")
    if owner is None or name not in owner[1] or parameters is None or not _text(doc, parameters).lstrip("( ").startswith("self"):
        return None
    uses = [n for n in _identifiers(function, doc, name) if _is_bare(n)]
    if any(n.start_byte < (function.child_by_field_name("body") or function).start_byte for n in uses):
        return None  # a parameter of that name
    return [_at(doc, n.start_byte, "self.") for n in uses]


def _identifiers(node: Node, doc: Document, name: str) -> list[Node]:
    found, stack = [], [node]
    while stack:
        current = stack.pop()
        if current.type == "identifier" and _text(doc, current) == name:
            found.append(current)
        stack.extend(current.children)
    return sorted(found, key=lambda n: n.start_byte)


def _is_bare(node: Node) -> bool:
    """An identifier read or written as a variable (not `x.name`, not `f(name=...)`)."""
    parent = node.parent
    if parent is None:
        return False
    if parent.type == "attribute" and _same(parent.child_by_field_name("attribute"), node):
        return False
    return not (parent.type == "keyword_argument" and _same(parent.child_by_field_name("name"), node))


def _same(a: Node | None, b: Node) -> bool:
    return a is not None and a.id == b.id


def _rename(doc: Document, problem: Problem, found: re.Match[str]) -> list[Repair] | None:
    """A name used nowhere defined, with exactly one close name in scope: that one."""
    name = found.group(1) or found.group(2)
    node = _node_at(doc, problem)
    if node is None or node.type != "identifier" or _text(doc, node) != name or not _is_bare(node):
        return None
    return _renamed(doc, node, name, _names_in_scope(doc, node))


def _rename_attribute(doc: Document, problem: Problem, found: re.Match[str]) -> list[Repair] | None:
    """An attribute the class (defined in this file, with no base from elsewhere) does not have,
    with exactly one close attribute that it does have: that one."""
    name = found.group(1)
    node = _node_at(doc, problem)
    parent = node.parent if node is not None else None
    if node is None or parent is None or parent.type != "attribute" or not _same(parent.child_by_field_name("attribute"), node):
        return None
    target = parent.child_by_field_name("object")
    if target is not None and _text(doc, target) == "self":
        klass = _ancestor(node, "class_definition")
    else:
        klass = _class_named(doc, found.group(2) or "")
    if klass is None or _text(doc, node) != name:
        return None
    attributes = _class_attributes(doc, klass)
    return _renamed(doc, node, name, attributes) if attributes is not None else None


def _renamed(doc: Document, node: Node, name: str, candidates: set[str]) -> list[Repair] | None:
    close = difflib.get_close_matches(name, sorted(candidates - {name}), n=2, cutoff=RENAME_CUTOFF)
    return [_at(doc, node.start_byte, close[0], node.end_byte)] if len(close) == 1 else None


def _names_in_scope(doc: Document, node: Node) -> set[str]:
    """Builtins, the module's imports and top-level names, and what the enclosing functions bind."""
    assert doc.tree is not None
    found = set(names.BUILTINS) | set(symbols.top_level_definitions(doc.tree, doc.data))
    found |= names.names_in(doc.tree, doc.data, 0, len(doc.data)).imported
    scope = _ancestor(node, "function_definition")
    while scope is not None:
        found |= names.names_in(doc.tree, doc.data, scope.start_byte, scope.end_byte).bound
        scope = _ancestor(scope.parent, "function_definition")
    return found


def _class_named(doc: Document, name: str) -> Node | None:
    assert doc.tree is not None
    for node in doc.tree.root_node.children:
        inner = symbols.definition_node(node)
        if inner.type == "class_definition" and symbols.definition_name(inner, doc.data) == name.rstrip("*"):
            return inner
    return None


def _class_attributes(doc: Document, klass: Node) -> set[str] | None:
    """Methods, class-level fields and `self.x` of a class; None when it has bases (what they
    give is not known here)."""
    bases = klass.child_by_field_name("superclasses")
    if bases is not None and any(_text(doc, b) != "object" for b in bases.named_children):
        return None
    found: set[str] = set()
    body = klass.child_by_field_name("body")
    for statement in body.named_children if body is not None else []:
        inner = symbols.definition_node(statement)
        if inner.type in symbols.DEFINITIONS:
            found.add(symbols.definition_name(inner, doc.data))
        elif statement.type == "expression_statement" and statement.named_child_count:
            left = statement.named_children[0].child_by_field_name("left")
            if left is not None and left.type == "identifier":
                found.add(_text(doc, left))
    owner = symbols.self_attributes(doc.tree, doc.data, (body or klass).start_byte)  # type: ignore[arg-type]
    return found | set(owner[1] if owner else ())


_Rule = Callable[[Document, Problem, re.Match[str]], list[Repair] | None]
_RULES: tuple[tuple[re.Pattern[str], _Rule], ...] = (
    (_COLON, _colon),
    (_UNDEFINED_SELF, _missing_self),
    (_EXTRA_ARGUMENTS, _extra_arguments),
    (_OPERANDS, _text_plus_number),
    (_MISSING_RETURN, _missing_return),
    (_UNBOUND, _self_attribute),
    (_UNKNOWN_NAME, _rename),
    (_UNKNOWN_ATTRIBUTE, _rename_attribute),
)
