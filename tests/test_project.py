"""The workspace index (qwen_lsp/syntax/project.py) and the repository-level prompt built from it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from qwen_lsp.completion import layout, postprocess
from qwen_lsp.completion.completer import fim_prompt
from qwen_lsp.completion.project_context import repo_name, repo_prompt, sections_for
from qwen_lsp.engine.base import GenerationRequest
from qwen_lsp.engine.local import LocalEngine, LocalSettings
from qwen_lsp.engine.tokens import Prompt
from qwen_lsp.syntax.documents import Document
from qwen_lsp.syntax.project import Project, RecentChunks, similarity, used_names

STYLE = '''"""Styles."""
from .colors import Color

DEFAULT_WIDTH = 80


class Style:
    """A text style."""

    bold: bool = False
    color: Color | None = None

    def __init__(self, bold: bool = False, color: Color | None = None) -> None:
        self.bold = bold
        self.color = color
        self._cache = {}
        self._hash = None

    def combine(self, other: "Style") -> "Style":
        merged = Style(self.bold or other.bold, other.color or self.color)
        merged._cache = {}
        merged._hash = None
        return merged

    def _private(self) -> None:
        pass


def parse_style(text: str) -> Style:
    return Style(bold="bold" in text)
'''


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "from .style import Style as Style\nfrom .utils import helper\n",
            "pkg/style.py": STYLE,
            "pkg/colors.py": "class Color:\n    def rgb(self) -> tuple[int, int, int]:\n        return (0, 0, 0)\n",
            "pkg/utils.py": "def helper(x: int) -> int:\n    return x + 1\n\ndef unused() -> None:\n    pass\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/render.py": "",
        },
    )
    return tmp_path


def context(project: Project, path: Path, text: str) -> dict[str, str]:
    return dict(project.context_for(text, path, used_names(text), 10_000))


def test_relative_imports_resolve(workspace: Path) -> None:
    text = "from ..style import Style\nfrom ..utils import helper\n\ns = Style()\nhelper(1)\n"
    found = context(Project([workspace]), workspace / "pkg/sub/render.py", text)
    assert list(found) == ["pkg/style.py", "pkg/utils.py"]
    assert found["pkg/utils.py"] == "def helper(x: int) -> int:\n    return x + 1"


def test_imports_over_several_lines_and_nested_are_read(workspace: Path) -> None:
    text = "from ..style import (\n    Style,\n    parse_style,\n)\ntry:\n    from ..utils import \\\n        helper\nexcept ImportError:\n    pass\n\nhelper(parse_style(Style))\n"
    found = context(Project([workspace]), workspace / "pkg/sub/render.py", text)
    assert list(found) == ["pkg/style.py", "pkg/utils.py"]
    assert used_names(text)["Style"] == 1  # uses outside import statements only


def test_submodule_imported_from_a_package(workspace: Path) -> None:
    text = "from .. import utils\n\nutils.helper(2)\n"
    found = context(Project([workspace]), workspace / "pkg/sub/render.py", text)
    assert found == {"pkg/utils.py": "def helper(x: int) -> int:\n    return x + 1"}


def test_absolute_imports_and_modules_resolve(workspace: Path) -> None:
    text = "import pkg.utils\nfrom pkg.style import parse_style\n\npkg.utils.helper(parse_style('x'))\n"
    found = context(Project([workspace]), workspace / "main.py", text)
    assert list(found) == ["pkg/utils.py", "pkg/style.py"]
    assert found["pkg/utils.py"].startswith("def helper(")
    assert "unused" not in found["pkg/utils.py"]  # not used by the document
    assert found["pkg/style.py"].startswith("def parse_style(text: str) -> Style:")


def test_package_reexports_are_followed(workspace: Path) -> None:
    text = "from pkg import Style, helper\n\nStyle().combine(helper)\n"
    found = context(Project([workspace]), workspace / "main.py", text)
    assert list(found) == ["pkg/style.py", "pkg/utils.py"]


def test_unused_and_outside_names_are_left_out(workspace: Path) -> None:
    text = "import os\nfrom pkg.style import Style, parse_style\n\nos.getcwd()\n"
    assert context(Project([workspace]), workspace / "main.py", text) == {}


def test_class_rendered_with_attributes_and_method_signatures(workspace: Path) -> None:
    found = context(Project([workspace]), workspace / "main.py", "from pkg.style import Style\nStyle\n")
    assert found["pkg/style.py"] == (
        "class Style:\n"
        '    """A text style."""\n'
        "    bold: bool = False\n"
        "    color: Color | None = None\n"
        "    def __init__(self, bold: bool = False, color: Color | None = None) -> None: ...\n"
        '    def combine(self, other: "Style") -> "Style": ...'
    )


WIDE = (
    "class Console:\n"
    '    """A console."""\n'
    + "".join(f"    def method_{i}(self, value: int) -> int:\n        x = value\n        return x * {i}\n\n" for i in range(30))
    + "    def print_table(\n        self,\n        rows: list[str],\n        *,\n        width: int = 80,\n    ) -> None:\n        pass\n        pass\n"
)


def test_the_members_a_file_uses_lead_its_class_and_survive_the_cut(tmp_path: Path) -> None:
    """A large class does not fit the budget: its members that the file calls come first (its
    other members after them), so cutting the class at the budget keeps what the file needs."""
    write(tmp_path, {"pkg/__init__.py": "", "pkg/console.py": WIDE})
    text = "from .console import Console\n\nConsole().print_table(rows)\nConsole().method_3(1)\n"
    found = dict(Project([tmp_path]).context_for(text, tmp_path / "pkg/main.py", used_names(text), 400))
    lines = found["pkg/console.py"].split("\n")
    assert lines[:4] == [
        "class Console:",
        '    """A console."""',
        "    def method_3(self, value: int) -> int: ...",
        "    def print_table(self, rows: list[str], *, width: int = 80) -> None: ...",
    ], lines
    assert "method_0" in lines[4] and lines[-1] == "    ...", lines


def test_budget_keeps_import_order(workspace: Path) -> None:
    text = "from pkg.utils import helper\nfrom pkg.style import Style\nhelper(Style)\n"
    project = Project([workspace])
    assert [path for path, _ in project.context_for(text, workspace / "main.py", used_names(text), 90)] == ["pkg/utils.py"]


def test_a_changed_file_is_read_again(workspace: Path) -> None:
    project = Project([workspace])
    main, text = workspace / "main.py", "from pkg.utils import helper\nhelper(1)\n"
    assert "x + 1" in context(project, main, text)["pkg/utils.py"]
    (workspace / "pkg/utils.py").write_text("def helper(x: int, y: int) -> int:\n    return x + y\n")
    os.utime(workspace / "pkg/utils.py", ns=(1, 1))  # a different mtime even on coarse clocks
    assert "x + y" in context(project, main, text)["pkg/utils.py"]


def test_invalidate_and_open_buffers(workspace: Path) -> None:
    project = Project([workspace])
    main, text = workspace / "main.py", "from pkg.utils import helper\nhelper(1)\n"
    utils = workspace / "pkg/utils.py"
    context(project, main, text)
    stat = utils.stat()
    # Same size and mtime (a tool that restores times): only `invalidate` tells.
    utils.write_bytes(b"def helper(z):\n    return z\n".ljust(stat.st_size))
    os.utime(utils, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "x + 1" in context(project, main, text)["pkg/utils.py"]
    project.invalidate(utils)
    assert "return z" in context(project, main, text)["pkg/utils.py"]
    project.update_open_buffer(utils.as_uri(), "def helper(edited):\n    pass\n")
    assert "edited" in context(project, main, text)["pkg/utils.py"]  # the buffer wins over disk
    project.close_buffer(utils.as_uri())
    assert "return z" in context(project, main, text)["pkg/utils.py"]


def test_large_workspace_is_not_scanned(tmp_path: Path) -> None:
    files = {f"pkg/mod{n}.py": f"def function{n}(a, b):\n    return a * {n} + b\n" for n in range(2000)}
    files["pkg/__init__.py"] = ""
    write(tmp_path, files)
    project = Project([tmp_path])
    text = "from .mod7 import function7\nfrom .mod8 import function8\n\n\ndef f():\n    return function7(1, 2) + function8(3, 4)\n"
    started = time.perf_counter()
    cold = project.context_for(text, tmp_path / "pkg/main.py", used_names(text), 3000)
    cold_ms = (time.perf_counter() - started) * 1000
    assert project.parses == 2  # the two imported modules, nothing else
    started = time.perf_counter()
    for _ in range(100):
        warm = project.context_for(text, tmp_path / "pkg/main.py", used_names(text), 3000)
    warm_ms = (time.perf_counter() - started) * 10
    assert warm == cold and project.parses == 2
    print(f"2,000-file workspace: cold {cold_ms:.1f} ms, warm {warm_ms:.2f} ms a request")
    assert cold_ms < 100 and warm_ms < 5


def test_cold_parsing_is_capped_per_request(tmp_path: Path) -> None:
    files = {f"pkg/m{n}.py": f"def f{n}():\n    pass\n" for n in range(20)}
    write(tmp_path, {"pkg/__init__.py": "", **files})
    text = "".join(f"from .m{n} import f{n}\n" for n in range(20)) + "".join(f"f{n}()\n" for n in range(20))
    project = Project([tmp_path])
    first = project.context_for(text, tmp_path / "pkg/main.py", used_names(text), 10_000)
    assert len(first) < 20  # the rest waits for the next requests
    for _ in range(5):
        project.context_for(text, tmp_path / "pkg/main.py", used_names(text), 10_000)
    assert len(project.context_for(text, tmp_path / "pkg/main.py", used_names(text), 10_000)) == 20
    opened = Project([tmp_path])
    opened.warm(text, tmp_path / "pkg/main.py")  # what didOpen does, off the event loop
    assert len(opened.context_for(text, tmp_path / "pkg/main.py", used_names(text), 10_000)) == 20


def test_recent_chunks_drop_duplicates_and_copies_of_the_window() -> None:
    ring = RecentChunks(size=4, lines=10)
    a = "\n".join(f"alpha_{n} = {n}" for n in range(10))
    b = "\n".join(f"beta_{n} = {n}" for n in range(10))
    ring.gather("a.py", a, 5)
    ring.gather("b.py", b, 5)
    ring.gather("a2.py", a, 5)  # the same lines again: the older copy goes
    assert [path for path, _ in ring.for_window("main.py", "", 10_000)] == ["b.py", "a2.py"]
    assert [path for path, _ in ring.for_window("main.py", b, 10_000)] == ["a2.py"]  # too like the window
    assert [path for path, _ in ring.for_window("b.py", "", 10_000)] == ["a2.py"]  # the current file
    assert similarity(a, b) == 0.0 and similarity(a, a) == 1.0


def test_repo_prompt_layout_and_special_tokens_in_user_text() -> None:
    fim = Prompt.template("<|fim_prefix|>x<|fim_suffix|><|fim_middle|>")
    sections = [("pkg/a.py", "A = '<|file_sep|>'"), ("pkg/b.py", "B = 2")]
    prompt = repo_prompt("proj", "pkg/main.py", sections, fim)
    assert prompt.text == (
        "<|repo_name|>proj\n<|file_sep|>pkg/a.py\nA = '<|file_sep|>'\n<|file_sep|>pkg/b.py\nB = 2\n"
        "<|file_sep|>pkg/main.py\n<|fim_prefix|>x<|fim_suffix|><|fim_middle|>"
    )
    assert "<|file_sep|>" not in prompt.defused().split("pkg/a.py\n")[1].split("\n")[0]
    assert repo_prompt("proj", "pkg/main.py", [], fim) is fim


def test_sections_are_the_same_at_every_position(workspace: Path) -> None:
    text = "from pkg.style import Style\nfrom pkg.utils import helper\n\n\ndef f():\n    s = Style()\n    return helper(1)\n"
    project = Project([workspace])
    first = sections_for(project, text, workspace / "main.py", 512)
    assert [path for path, _ in first] == ["pkg/style.py", "pkg/utils.py"]
    assert sections_for(project, text + "\n\ndef g():\n    ret", workspace / "main.py", 512) == first


# -- with the real model (through the engine until the server builds the project prompt) ----------
INVENTORY = '''"""Stock kept per warehouse."""


class Warehouse:
    """Items on the shelves, by SKU."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._shelves: dict[str, int] = {}

    def replenish_shelf_from_supplier(self, sku: str, quantity: int) -> None:
        """Order `quantity` more of `sku` and put it on the shelf."""
        self._shelves[sku] = self._shelves.get(sku, 0) + quantity

    def units_on_shelf(self, sku: str) -> int:
        return self._shelves.get(sku, 0)
'''

ORDERS = '''from .inventory import Warehouse


def refill(warehouse: Warehouse, sku: str, minimum: int) -> None:
    """Top the shelf of `sku` up to `minimum` units."""
    missing = minimum - warehouse.units_on_shelf(sku)
    if missing > 0:
        warehouse.'''


def project_prompt(root: Path, project_tokens: int) -> tuple[Prompt, layout.Context]:
    """The server's prompt at the cursor of orders.py, behind `project_tokens` of project context."""
    path = root / "shop/orders.py"
    doc = Document(path.as_uri(), ORDERS + "\n", 1, "python")
    ctx = layout.build(doc, len(ORDERS), 1024)
    project = Project([root])
    sections = sections_for(project, doc.text, path, project_tokens)
    return repo_prompt(repo_name(project, path), project.relative(path), sections, fim_prompt(ctx)), ctx


async def test_method_of_a_class_in_another_file(model_path: Path, tmp_path: Path) -> None:
    write(tmp_path, {"shop/__init__.py": "", "shop/inventory.py": INVENTORY, "shop/orders.py": ORDERS})
    engine = LocalEngine(LocalSettings(model_path=str(model_path)), lambda progress: model_path)
    engine.start()
    answers = []
    try:
        for tokens in (256, 0):
            prompt, ctx = project_prompt(tmp_path, tokens)
            async with engine.generate(GenerationRequest(prompt=prompt, max_tokens=24)) as generation:
                async for _ in generation:
                    if postprocess.end_of_suggestion(generation.text, ctx) is not None:
                        break
            answers.append(postprocess.clean(generation.text, ctx) or "")
    finally:
        engine.close()
    print(f"with project context: {answers[0]!r}; without: {answers[1]!r}")
    # The model sometimes puts a space after the dot (`warehouse. name(...)`, still valid Python).
    assert answers[0].lstrip().startswith("replenish_shelf_from_supplier(")
    assert "replenish_shelf_from_supplier" not in answers[1]


def test_budget_goes_to_the_most_used_names_shown_in_import_order(workspace: Path) -> None:
    text = "from pkg.style import Style\nfrom pkg.utils import helper\n\nStyle()\nhelper(helper(helper(1)))\n"
    project = Project([workspace])
    small = project.context_for(text, workspace / "main.py", used_names(text), 90)
    assert [path for path, _ in small] == ["pkg/utils.py"]  # Style is used once, helper three times
    large = project.context_for(text, workspace / "main.py", used_names(text), 10_000)
    assert [path for path, _ in large] == ["pkg/style.py", "pkg/utils.py"]


def test_a_class_too_large_for_the_budget_is_cut_at_a_line(tmp_path: Path) -> None:
    methods = "".join(
        f"    def method_{n}(self, value: int) -> int:\n        value += {n}\n        value *= 2\n        return value\n" for n in range(50)
    )
    write(tmp_path, {"big.py": "class Big:\n" + methods})
    text = "from big import Big\nBig()\n"
    section = dict(Project([tmp_path]).context_for(text, tmp_path / "main.py", used_names(text), 600))["big.py"]
    assert section.startswith("class Big:\n    def method_0(self, value: int) -> int: ...\n")
    assert section.endswith(") -> int: ...\n    ...") and len(section) <= 600
