"""Print the README's layout map from the tree: each package and module of qwen_lsp/ with the
first sentence of its docstring, then the top-level folders. `--write README.md` puts it between
the README's layout-map markers; `--check README.md` exits 1 when that copy differs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "qwen_lsp"
FOLDERS = {
    "prompts/": "prompt templates (FIM, explain, fix), rendered by qwen_lsp/prompting",
    "editors/": "the VS Code extension and the Neovim plugin",
    "bench/": "benchmarks, not shipped: `python -m bench NAME`, reports in bench/results/",
    "tests/": "pytest: unit tests, a real client on the real model, the real editors",
    "scripts/": "install.sh (server, model, llama.cpp build), install-editors.sh, this map",
}
START, END = "<!-- layout-map -->", "<!-- /layout-map -->"


def summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    sentence = first.split(". ")[0].split(": ")[0].rstrip(".")
    return sentence if len(sentence) <= 72 else sentence[:69].rsplit(" ", 1)[0] + "..."


def lines_for(folder: Path, depth: int) -> list[str]:
    out = []
    modules = sorted(p for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    for module in modules:
        out.append(f"{'  ' * depth}{module.name:<{28 - 2 * depth}}{summary(module)}")
    for package in sorted(p for p in folder.iterdir() if (p / "__init__.py").exists()):
        out.append(f"{'  ' * depth}{package.name + '/':<{28 - 2 * depth}}{summary(package / '__init__.py')}")
        out.extend(lines_for(package, depth + 1))
    return out


def layout_map() -> str:
    body = ["qwen_lsp/", *lines_for(PACKAGE, 1), *(f"{name:<28}{text}" for name, text in FOLDERS.items())]
    return "\n".join([START, "```", *body, "```", END])


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] in ("--check", "--write"):
        path = Path(argv[1])
        text = path.read_text(encoding="utf-8")
        current = text[text.find(START) : text.find(END) + len(END)]
        if argv[0] == "--write":
            path.write_text(text.replace(current, layout_map()), encoding="utf-8")
            return 0
        if current != layout_map():
            print(f"{argv[1]}'s layout map is out of date: run `python scripts/layout_map.py` and paste it", file=sys.stderr)
            return 1
        return 0
    print(layout_map())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
