"""The editors' copies of the server settings, generated from qwen_lsp/config.py.

    python scripts/editor_settings.py           # exit 1 with a diff when a copy has drifted
    python scripts/editor_settings.py --write   # rewrite the copies

The copies: the server section of VS Code's package.json (names in camelCase, types, defaults,
descriptions, `machine` scope for `user_only` settings, `x-restartsServer` for settings that
rebuild the engine, which the extension reads at run time), the Neovim plugin's defaults table
and its help, and the README's table. As in python-lsp-server, a test runs the check
(tests/test_settings.py), so they cannot drift from the server.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qwen_lsp.config import Settings, camel_case  # noqa: E402 - after the path is set

PACKAGE_JSON = ROOT / "editors" / "vscode" / "package.json"
INIT_LUA = ROOT / "editors" / "neovim" / "lua" / "qwen_lsp" / "init.lua"
HELP = ROOT / "editors" / "neovim" / "doc" / "qwen_lsp.txt"
README = ROOT / "README.md"

JSON_TYPES = {str: "string", int: "integer", bool: "boolean"}
# package.json's configuration: [editor-only settings (hand-written), server settings (generated)].
SERVER_SECTION = 1
SERVER_TITLE = "Server (sent to qwen-lsp; generated from its qwen_lsp/config.py)"


def vscode_property(field: attrs.Attribute[Any]) -> dict[str, Any]:
    meta = field.metadata
    prop: dict[str, Any] = {"type": JSON_TYPES[field.type], "default": field.default}  # type: ignore[index]
    if meta["choices"]:
        prop["enum"] = list(meta["choices"])
    if meta["minimum"] is not None:
        prop["minimum"] = meta["minimum"]
    prop["markdownDescription"] = meta["doc"]
    if meta["user_only"]:
        # Read from user (or remote) settings only: a workspace's .vscode/settings.json is ignored.
        prop["scope"] = "machine"
    if meta["rebuilds_engine"]:
        prop["x-restartsServer"] = True
    return prop


def package_json(text: str) -> str:
    manifest = json.loads(text)
    properties = {f"qwen.{camel_case(f.name)}": vscode_property(f) for f in attrs.fields(Settings)}
    manifest["contributes"]["configuration"][SERVER_SECTION] = {"title": SERVER_TITLE, "properties": properties}
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def lua_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def init_lua(text: str) -> str:
    lines = [
        "  -- Server settings, each with its default (generated from the server's qwen_lsp/config.py by",
        "  -- scripts/editor_settings.py). Sent as initializationOptions and on every change.",
        "  settings = {",
    ]
    for field in attrs.fields(Settings):
        lines += textwrap.wrap(field.metadata["doc"], 100, initial_indent="    -- ", subsequent_indent="    -- ", break_on_hyphens=False)
        lines.append(f"    {camel_case(field.name)} = {lua_value(field.default)},")
    block = "\n".join([*lines, "  },"]) + "\n"
    return _replace(text, r"^  -- Server settings.*?^  },\n", block, INIT_LUA)


def help_txt(text: str) -> str:
    lines = []
    for field in attrs.fields(Settings):
        lines.append(f"{camel_case(field.name)} = {lua_value(field.default)}")
        doc = field.metadata["doc"] + _reloads(field)
        lines += textwrap.wrap(doc, 78, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False)
        lines.append("")
    return _replace(text, r"(?<=\*qwen_lsp-settings-list\*\n).*?(?=^={78}$)", "\n".join(lines) + "\n", HELP)


def readme(text: str) -> str:
    rows = ["| setting | default | |", "| --- | --- | --- |"]
    for field in attrs.fields(Settings):
        scope = " VS Code: user settings only." if field.metadata["user_only"] else ""
        rows.append(f"| `{camel_case(field.name)}` | `{json.dumps(field.default)}` | {field.metadata['doc']}{_reloads(field)}{scope} |")
    return _replace(text, r"^\| setting \| default \| \|\n(?:\|[^\n]*\n)*", "\n".join(rows) + "\n", README)


def _reloads(field: attrs.Attribute[Any]) -> str:
    return " Changing it reloads the model or reconnects." if field.metadata["rebuilds_engine"] else ""


def _replace(text: str, pattern: str, new: str, path: Path) -> str:
    result, count = re.subn(pattern, lambda _: new, text, count=1, flags=re.MULTILINE | re.DOTALL)
    if count != 1:
        raise SystemExit(f"{path}: the generated part was not found ({pattern})")
    return result


GENERATORS: dict[Path, Callable[[str], str]] = {
    PACKAGE_JSON: package_json,
    INIT_LUA: init_lua,
    HELP: help_txt,
    README: readme,
}


def main(argv: list[str]) -> int:
    drifted = 0
    for path, generate in GENERATORS.items():
        current = path.read_text(encoding="utf-8")
        expected = generate(current)
        if expected == current:
            continue
        if "--write" in argv:
            path.write_text(expected, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
            continue
        drifted = 1
        name = str(path.relative_to(ROOT))
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), expected.splitlines(True), name, name))
    if drifted:
        print("\nThe editors' settings differ from qwen_lsp/config.py: python scripts/editor_settings.py --write")
    return drifted


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
