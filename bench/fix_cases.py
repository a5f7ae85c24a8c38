"""Broken versions of small programs, for the fix tests and benchmark.

Each case breaks one place of a program (CASES: PROGRAM, an inventory; BENCH_CASES adds a bank,
text statistics and a game of life); a fix succeeds when the file runs again and prints what the
intact program prints. Syntax errors are found by the server itself; for the others the case
carries the diagnostic another server (pyright, mypy) would publish.
"""

from __future__ import annotations

from dataclasses import dataclass

PROGRAM = """import json
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
"""


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
    program: str = PROGRAM  # the intact program: what the fixed file must print


def _break(old: str, new: str, program: str = PROGRAM) -> str:
    assert program.count(old) >= 1, old
    return program.replace(old, new, 1)


def name_case(name: str, kind: str, old: str, new: str, token: str, message: str, program: str = PROGRAM) -> FixCase:
    """A case whose diagnostic underlines the first use of `token` (minus a trailing '.' or ')') from
    the broken place on (the body's `self` of a method whose `def` lost it)."""
    broken = _break(old, new, program)
    offset = broken.index(token, broken.index(new) if new else 0)
    line = broken.count("\n", 0, offset)
    column = offset - (broken.rfind("\n", 0, offset) + 1)
    length = len(token.rstrip(".)"))
    return FixCase(name, kind, broken, Diagnostic(line, column, column + length, message), program)


CASES = (
    FixCase("missing colon (def)", "missing colon", _break("-> Item:\n", "-> Item\n"), None),
    FixCase("unclosed bracket", "unclosed bracket", _break(':.2f}")\n    lines', ':.2f}"\n    lines'), None),
    name_case(
        "misspelled name",
        "misspelled name",
        "{calculate_total(items)",
        "{calculate_totl(items)",
        "calculate_totl",
        '"calculate_totl" is not defined',
    ),
    name_case("missing import (math)", "missing import", "import math\n", "", "math.", '"math" is not defined'),
    name_case(
        "wrong attribute",
        "wrong attribute",
        'f"{item.name}: {item.quantity}',
        'f"{item.nmae}: {item.quantity}',
        "nmae",
        'Cannot access attribute "nmae" for class "Item"\n  Attribute "nmae" is unknown',
    ),
    FixCase("mixed tabs and spaces", "mixed tabs", _break("            total += item", "\t    total += item"), None),
    # More of the same kinds elsewhere in the program, for the benchmark.
    FixCase("missing colon (if)", "missing colon", _break("best.price:\n", "best.price\n"), None),
    FixCase("unclosed bracket (list)", "unclosed bracket", _break('r["quantity"]) for', 'r["quantity"] for'), None),
    name_case(
        "misspelled name (2)",
        "misspelled name",
        "most_expensive(items).name",
        "most_expensiv(items).name",
        "most_expensiv",
        '"most_expensiv" is not defined',
    ),
    name_case("missing import (json)", "missing import", "import json\n", "", "json.", '"json" is not defined'),
    name_case(
        "wrong attribute (2)",
        "wrong attribute",
        "if item.price > best.price",
        "if item.prise > best.price",
        "prise",
        'Cannot access attribute "prise" for class "Item"\n  Attribute "prise" is unknown',
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


# -- more programs, for the benchmark: methods and their `self`, text, a grid ----------------------
BANK = """from dataclasses import dataclass


class Account:
    def __init__(self, owner: str, balance: int = 0) -> None:
        self.owner = owner
        self.balance = balance
        self.count = 0

    def deposit(self, amount: int) -> None:
        self.balance += amount
        self.count += 1

    def withdraw(self, amount: int) -> bool:
        if amount > self.balance:
            return False
        self.balance -= amount
        self.count += 1
        return True

    def describe(self) -> str:
        return self.owner + " has " + str(self.balance) + " after " + str(self.count) + " operations"


@dataclass
class Transfer:
    source: str
    target: str
    amount: int


class Bank:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}

    def open(self, owner: str, balance: int = 0) -> Account:
        account = Account(owner, balance)
        self.accounts[owner] = account
        return account

    def transfer(self, move: Transfer) -> bool:
        if not self.accounts[move.source].withdraw(move.amount):
            return False
        self.accounts[move.target].deposit(move.amount)
        return True

    def total(self) -> int:
        return sum(account.balance for account in self.accounts.values())


if __name__ == "__main__":
    bank = Bank()
    bank.open("ann", 100)
    bank.open("bob")
    print(bank.transfer(Transfer("ann", "bob", 30)))
    print(bank.transfer(Transfer("bob", "ann", 50)))
    for name in sorted(bank.accounts):
        print(bank.accounts[name].describe())
    print("total:", bank.total())
"""

TEXT = r"""import re
import string
from collections import Counter

STOP_WORDS = {"the", "a", "and", "of", "to"}


def words(text: str) -> list[str]:
    cleaned = text.lower().translate(str.maketrans("", "", string.punctuation))
    return [w for w in cleaned.split() if w not in STOP_WORDS]


def top_words(text: str, n: int) -> list[tuple[str, int]]:
    counts = Counter(words(text))
    return counts.most_common(n)


def sentence_count(text: str) -> int:
    parts = re.split(r"[.!?]+", text)
    return len([p for p in parts if p.strip()])


def longest_word(text: str) -> str:
    best = ""
    for word in words(text):
        if len(word) > len(best):
            best = word
    return best


def report(text: str) -> str:
    lines = []
    lines.append("sentences: " + str(sentence_count(text)))
    lines.append("longest: " + longest_word(text))
    for word, count in top_words(text, 3):
        lines.append(f"{word} {count}")
    return "\n".join(lines)


SAMPLE = "The cat sat on the mat. The dog and the cat played! Was the mat warm? The cat thought so."

if __name__ == "__main__":
    print(report(SAMPLE))
    print("words:", len(words(SAMPLE)))
"""

LIFE = r"""import itertools
from typing import Iterator

Grid = list[list[int]]


class Life:
    def __init__(self, rows: list[str]) -> None:
        self.grid: Grid = [[1 if c == "#" else 0 for c in row] for row in rows]
        self.generation = 0

    def neighbours(self, r: int, c: int) -> int:
        total = 0
        for dr, dc in itertools.product((-1, 0, 1), repeat=2):
            if (dr, dc) == (0, 0):
                continue
            rr, cc = r + dr, c + dc
            if 0 <= rr < len(self.grid) and 0 <= cc < len(self.grid[0]):
                total += self.grid[rr][cc]
        return total

    def step(self) -> None:
        new = []
        for r, row in enumerate(self.grid):
            new_row = []
            for c, alive in enumerate(row):
                n = self.neighbours(r, c)
                new_row.append(1 if n == 3 or (alive and n == 2) else 0)
            new.append(new_row)
        self.grid = new
        self.generation += 1

    def population(self) -> int:
        return sum(sum(row) for row in self.grid)

    def render(self) -> str:
        return "\n".join("".join("#" if cell else "." for cell in row) for row in self.grid)


def cells(grid: Grid) -> Iterator[tuple[int, int]]:
    for r, row in enumerate(grid):
        for c, alive in enumerate(row):
            if alive:
                yield r, c


if __name__ == "__main__":
    life = Life([".....", "..#..", "..#..", "..#..", "....."])
    for _ in range(2):
        life.step()
        print(life.render())
        print("generation " + str(life.generation) + ", population " + str(life.population()))
    print(list(cells(life.grid)))
"""

UNDEFINED_SELF = '"self" is not defined'
MISSING_RETURN = "Missing return statement  [return]"  # mypy's, on the def line
NO_BLOCK = "Expected indented block"  # pyright's (tree-sitter parses this one without an error)


def _missing_return(name: str, old: str, new: str, function: str, program: str) -> FixCase:
    """mypy's missing return, which underlines the function's name on its `def` line."""
    broken = _break(old, new, program)
    offset = broken.index(f"def {function}(") + len("def ")
    line = broken.count("\n", 0, offset)
    column = offset - (broken.rfind("\n", 0, offset) + 1)
    return FixCase(name, "missing return", broken, Diagnostic(line, column, column + len(function), MISSING_RETURN, "mypy"), program)


def _syntax(name: str, kind: str, old: str, new: str, program: str) -> FixCase:
    return FixCase(name, kind, _break(old, new, program), None, program)


def _attribute(wrong: str, klass: str) -> str:
    return f'Cannot access attribute "{wrong}" for class "{klass}"\n  Attribute "{wrong}" is unknown'


def _str_plus_int(left: str) -> str:
    return f'Operator "+" not supported for types "{left}" and "int"'


BANK_CASES = (
    name_case("missing self (deposit)", "missing self", "def deposit(self, amount", "def deposit(amount", "self", UNDEFINED_SELF, BANK),
    name_case("missing self (describe)", "missing self", "def describe(self)", "def describe()", "self", UNDEFINED_SELF, BANK),
    name_case("missing self (total)", "missing self", "def total(self)", "def total()", "self", UNDEFINED_SELF, BANK),
    name_case(
        "self.count (withdraw)",
        "self attribute",
        "self.count += 1\n        return True",
        "count += 1\n        return True",
        "count",
        '"count" is unbound',
        BANK,
    ),
    name_case("self.count (deposit)", "self attribute", "self.count += 1\n\n", "count += 1\n\n", "count", '"count" is unbound', BANK),
    name_case("self.balance", "self attribute", "self.balance -= amount", "balance -= amount", "balance", '"balance" is unbound', BANK),
    name_case(
        "str + int (describe)",
        "str + int",
        '" has " + str(self.balance)',
        '" has " + self.balance',
        "self.balance",
        _str_plus_int("str"),
        BANK,
    ),
    name_case(
        "wrong attribute (deposit)", "wrong attribute", "].deposit(move", "].depost(move", "depost", _attribute("depost", "Account"), BANK
    ),
    name_case(
        "wrong argument count (Account)",
        "wrong argument count",
        "Account(owner, balance)",
        "Account(owner, balance, 0)",
        "0",
        "Expected 2 positional arguments",
        BANK,
    ),
    _missing_return("missing return (withdraw)", "        return True\n\n    def describe", "\n    def describe", "withdraw", BANK),
    _syntax("missing colon (class)", "missing colon", "class Bank:", "class Bank", BANK),
    name_case(
        "unindented loop body (main)",
        "unindented body",
        "        print(bank.accounts[name]",
        "    print(bank.accounts[name]",
        "print(bank.accounts",
        NO_BLOCK,
        BANK,
    ),
)

TEXT_CASES = (
    name_case("missing import (re)", "missing import", "import re\n", "", "re.", '"re" is not defined', TEXT),
    name_case("missing import (string)", "missing import", "import string\n", "", "string.", '"string" is not defined', TEXT),
    name_case(
        "misspelled name (words)", "misspelled name", "Counter(words(text))", "Counter(wrds(text))", "wrds", '"wrds" is not defined', TEXT
    ),
    name_case(
        "misspelled name (longest_word)",
        "misspelled name",
        '"longest: " + longest_word',
        '"longest: " + longest_wrd',
        "longest_wrd",
        '"longest_wrd" is not defined',
        TEXT,
    ),
    name_case(
        "str + int (sentences)",
        "str + int",
        '"sentences: " + str(sentence_count(text))',
        '"sentences: " + sentence_count(text)',
        "sentence_count(text)",
        _str_plus_int("Literal['sentences: ']"),
        TEXT,
    ),
    _syntax("unclosed bracket (len)", "unclosed bracket", "if p.strip()])", "if p.strip()]", TEXT),
    _syntax("missing colon (for)", "missing colon", "for word in words(text):", "for word in words(text)", TEXT),
    name_case(
        "unindented loop body (report)",
        "unindented body",
        '        lines.append(f"{word}',
        '    lines.append(f"{word}',
        "lines.append(f",
        NO_BLOCK,
        TEXT,
    ),
    name_case(
        "wrong argument count (words)",
        "wrong argument count",
        "Counter(words(text))",
        "Counter(words(text, n))",
        "n))",
        "Expected 1 positional argument",
        TEXT,
    ),
    _missing_return(
        "missing return (longest_word)", "            best = word\n    return best\n", "            best = word\n", "longest_word", TEXT
    ),
    _syntax("mixed tabs and spaces (longest_word)", "mixed tabs", "            best = word", "\t    best = word", TEXT),
    name_case(
        "wrong attribute (most_common)",
        "wrong attribute",
        "counts.most_common(n)",
        "counts.most_comon(n)",
        "most_comon",
        _attribute("most_comon", "Counter[str]"),
        TEXT,
    ),
)

LIFE_CASES = (
    name_case("missing self (population)", "missing self", "def population(self)", "def population()", "self", UNDEFINED_SELF, LIFE),
    name_case("missing self (render)", "missing self", "def render(self)", "def render()", "self", UNDEFINED_SELF, LIFE),
    name_case(
        "self.generation", "self attribute", "self.generation += 1", "generation += 1", "generation", '"generation" is unbound', LIFE
    ),
    name_case("missing import (itertools)", "missing import", "import itertools\n", "", "itertools.", '"itertools" is not defined', LIFE),
    name_case(
        "wrong attribute (neighbours)",
        "wrong attribute",
        "self.neighbours(r, c)",
        "self.neighbors(r, c)",
        "neighbors",
        _attribute("neighbors", "Life*"),
        LIFE,
    ),
    name_case(
        "misspelled name (cells)",
        "misspelled name",
        "list(cells(life.grid))",
        "list(celss(life.grid))",
        "celss",
        '"celss" is not defined',
        LIFE,
    ),
    name_case(
        "str + int (generation)",
        "str + int",
        '"generation " + str(life.generation)',
        '"generation " + life.generation',
        "life.generation",
        _str_plus_int("Literal['generation ']"),
        LIFE,
    ),
    _syntax("missing colon (def step)", "missing colon", "def step(self) -> None:", "def step(self) -> None", LIFE),
    _syntax("unclosed bracket (subscript)", "unclosed bracket", "total += self.grid[rr][cc]", "total += self.grid[rr][cc", LIFE),
    name_case(
        "unindented loop body (cells)", "unindented body", "                yield r, c", "            yield r, c", "yield", NO_BLOCK, LIFE
    ),
    _missing_return("missing return (population)", "return sum(sum(row)", "sum(sum(row)", "population", LIFE),
    name_case(
        "wrong argument count (step)", "wrong argument count", "life.step()", "life.step(1)", "1)", "Expected 0 positional arguments", LIFE
    ),
)

BENCH_CASES = CASES + BANK_CASES + TEXT_CASES + LIFE_CASES
