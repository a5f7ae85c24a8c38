"""Broken versions of one small program, for the fix tests and benchmark.

Each case breaks one place of PROGRAM; a fix succeeds when the file runs again and prints what
PROGRAM prints. Syntax errors are found by the server itself; for the others the case carries
the diagnostic another server (pyright) would publish.
"""

from __future__ import annotations

from dataclasses import dataclass

PROGRAM = '''import json
import math
from dataclasses import dataclass


@dataclass
class Item:
    name: str
    price: float
    quantity: int

    def total(self) -> float:
        return self.price * self.quantity


def parse_items(raw: str) -> list[Item]:
    records = json.loads(raw)
    return [Item(r["name"], r["price"], r["quantity"]) for r in records]


def calculate_total(items: list[Item]) -> float:
    total = 0.0
    for item in items:
        if item.quantity > 0:
            total += item.total()
    return total


def most_expensive(items: list[Item]) -> Item:
    best = items[0]
    for item in items[1:]:
        if item.price > best.price:
            best = item
    return best


def boxes_needed(items: list[Item], per_box: int) -> int:
    count = sum(item.quantity for item in items)
    return math.ceil(count / per_box)


def summary(items: list[Item]) -> str:
    lines = []
    for item in items:
        lines.append(f"{item.name}: {item.quantity} x {item.price:.2f}")
    lines.append(f"total: {calculate_total(items):.2f}")
    return "\\n".join(lines)


DATA = '[{"name": "pen", "price": 1.5, "quantity": 4}, {"name": "book", "price": 12.0, "quantity": 2}]'

if __name__ == "__main__":
    items = parse_items(DATA)
    print(summary(items))
    print("most expensive:", most_expensive(items).name)
    print("boxes:", boxes_needed(items, 4))
'''


@dataclass(frozen=True)
class Diagnostic:
    """A diagnostic as another server publishes it: 0-based line, columns, message."""

    line: int
    start: int
    end: int
    message: str
    source: str = "Pyright"


@dataclass(frozen=True)
class FixCase:
    name: str
    kind: str
    broken: str
    diagnostic: Diagnostic | None  # None: the server's own syntax diagnostic


def _break(old: str, new: str) -> str:
    assert PROGRAM.count(old) >= 1, old
    return PROGRAM.replace(old, new, 1)


def _name_case(name: str, kind: str, old: str, new: str, token: str, message: str) -> FixCase:
    """A case whose diagnostic underlines the first use of `token` (minus a trailing '.')."""
    broken = _break(old, new)
    offset = broken.index(new) + new.index(token) if new else broken.index(token)
    line = broken.count("\n", 0, offset)
    column = offset - (broken.rfind("\n", 0, offset) + 1)
    length = len(token.rstrip("."))
    return FixCase(name, kind, broken, Diagnostic(line, column, column + length, message))


CASES = (
    FixCase("missing colon (def)", "missing colon", _break("-> Item:\n", "-> Item\n"), None),
    FixCase("unclosed bracket", "unclosed bracket", _break(':.2f}")\n    lines', ':.2f}"\n    lines'), None),
    _name_case(
        "misspelled name", "misspelled name", "{calculate_total(items)", "{calculate_totl(items)",
        "calculate_totl", '"calculate_totl" is not defined',
    ),
    _name_case(
        "missing import (math)", "missing import", "import math\n", "", "math.", '"math" is not defined'
    ),
    _name_case(
        "wrong attribute", "wrong attribute", 'f"{item.name}: {item.quantity}', 'f"{item.nmae}: {item.quantity}',
        "nmae", 'Cannot access attribute "nmae" for class "Item"\n  Attribute "nmae" is unknown',
    ),
    FixCase("mixed tabs and spaces", "mixed tabs", _break("            total += item", "\t    total += item"), None),
    # More of the same kinds elsewhere in the program, for the benchmark.
    FixCase("missing colon (if)", "missing colon", _break("best.price:\n", "best.price\n"), None),
    FixCase("unclosed bracket (list)", "unclosed bracket", _break('r["quantity"]) for', 'r["quantity"] for'), None),
    _name_case(
        "misspelled name (2)", "misspelled name", "most_expensive(items).name", "most_expensiv(items).name",
        "most_expensiv", '"most_expensiv" is not defined',
    ),
    _name_case("missing import (json)", "missing import", "import json\n", "", "json.", '"json" is not defined'),
    _name_case(
        "wrong attribute (2)", "wrong attribute", "if item.price > best.price", "if item.prise > best.price",
        "prise", 'Cannot access attribute "prise" for class "Item"\n  Attribute "prise" is unknown',
    ),
    FixCase("mixed tabs and spaces (2)", "mixed tabs", _break("    for item in items[1:]:", "\tfor item in items[1:]:"), None),
)


def enclosing_block(lines: list[str], line: int) -> tuple[int, int]:
    """The top-level statement (def, class, if) around a line, by indentation: what the fix of an
    error on that line may touch at most."""
    first = line
    while first > 0 and (not lines[first].strip() or lines[first][0] in " \t"):
        first -= 1
    last = line
    while last + 1 < len(lines) and (not lines[last + 1].strip() or lines[last + 1][0] in " \t)]}"):
        last += 1
    return first, last
