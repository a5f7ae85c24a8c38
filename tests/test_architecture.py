"""The layout shows the architecture, and these checks keep it so: protocol → features →
syntax context / prompting → engine, data flowing one way; no feature reaches into another; no
benchmark code ships in the package; no function grows past what a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "qwen_lsp"

# What each part of the package may import from the package. Entry points (the command line,
# the in-process client) sit above the protocol layer and may use anything.
ALLOWED: dict[str, set[str]] = {
    "cli": {"*"},
    "client": {"*"},
    "__main__": {"*"},
    "lsp": {"completion", "explain", "fix", "edits", "syntax", "prompting", "engine", "config", "watchdog", "privacy", "__init__"},
    "completion": {"syntax", "prompting", "engine", "config"},
    "explain": {"syntax", "prompting", "engine", "config"},
    "fix": {"syntax", "prompting", "engine", "config", "edits"},
    "syntax": set(),
    "prompting": {"engine"},
    "engine": {"config"},
    "edits": set(),
    "config": set(),
    "privacy": set(),
    "watchdog": set(),
    "__init__": set(),
}
MAX_FUNCTION_LINES = 60


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "qwen_lsp" else [f"qwen_lsp.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "qwen_lsp":
                is_module = (len(parts) > 1 and (PACKAGE / parts[1]).with_suffix(".py").exists()) or (PACKAGE / parts[1]).is_dir()
                found.add(parts[1] if is_module else "__init__")
    return found


def test_imports_run_one_way() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        assert part in ALLOWED, f"{path}: a new part of the package needs a place in ALLOWED"
        allowed = ALLOWED[part]
        for imported in _imported_parts(path) - {part}:
            if "*" not in allowed and imported not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports qwen_lsp.{imported}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_package_holds_no_benchmark_or_test_code() -> None:
    assert not (PACKAGE / "bench").exists()
    offenders = [p for p in PACKAGE.rglob("*.py") if "fake" in p.name or p.name.startswith("test_")]
    assert not offenders


def test_no_function_is_longer_than_a_reader_can_hold() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions longer than {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_the_readme_layout_map_is_the_tree() -> None:
    """README.md's layout map is generated from the modules' docstrings (scripts/layout_map.py)."""
    import subprocess
    import sys

    root = PACKAGE.parent
    check = subprocess.run(
        [sys.executable, str(root / "scripts" / "layout_map.py"), "--check", str(root / "README.md")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
