"""Settings have one source of truth, qwen_lsp/config.py: VS Code's package.json, the extension's
restart rule and the Neovim defaults table agree with it, and the settings that decide where the
user's code and API key go cannot come from a workspace (issues 11 and 15). No model needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from qwen_lsp.config import ENGINE_SETTINGS, Settings, camel_case, parse_settings

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "editors" / "vscode"
ESBUILD = EXTENSION / "node_modules" / ".bin" / "esbuild"
NVIM = Path(sys.executable).parent / "nvim"
FIELDS = attrs.fields(Settings)
SERVER_NAMES = [camel_case(f.name) for f in FIELDS]
EDITOR_ONLY = {"serverPath", "pythonPath", "languages", "installSource"}
JSON_TYPES = {str: "string", int: "integer", bool: "boolean"}
# The settings that send the user's code (and API key) somewhere, or pick the file that is loaded.
USER_ONLY = {"model", "backend", "endpoint", "modelName"}


def vscode_properties() -> dict[str, dict[str, Any]]:
    manifest = json.loads((EXTENSION / "package.json").read_text())
    sections = manifest["contributes"]["configuration"]
    return {name.removeprefix("qwen."): schema for section in sections for name, schema in section["properties"].items()}


def test_the_editor_copies_are_generated_from_config() -> None:
    """package.json, the Neovim table and help, the README table: as scripts/editor_settings.py writes them."""
    check = subprocess.run([sys.executable, ROOT / "scripts" / "editor_settings.py"], check=False, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr


def test_engine_settings_come_from_config() -> None:
    assert ENGINE_SETTINGS == ("model", "n_ctx", "n_threads", "backend", "endpoint", "model_name", "prompt_cache_mb")


def test_vscode_server_settings_match_config() -> None:
    properties = vscode_properties()
    server = {name: schema for name, schema in properties.items() if not schema.get("x-editorOnly")}
    assert list(server) == SERVER_NAMES
    assert {name for name, schema in properties.items() if schema.get("x-editorOnly")} == EDITOR_ONLY
    for field in FIELDS:
        schema = server[camel_case(field.name)]
        assert schema["type"] == JSON_TYPES[field.type], field.name  # type: ignore[index]
        assert schema["default"] == field.default and type(schema["default"]) is type(field.default), field.name
        assert schema["markdownDescription"] == field.metadata["doc"], field.name
        assert schema.get("enum", []) == list(field.metadata["choices"]), field.name
        assert schema.get("x-restartsServer", False) == (field.name in ENGINE_SETTINGS), field.name


def test_a_workspace_cannot_choose_where_code_and_key_go() -> None:
    """`machine` scope: VS Code reads these from the user's (or remote) settings only, never from a
    cloned repository's .vscode/settings.json (issue 15, item 17)."""
    properties = vscode_properties()
    assert {name for name, schema in properties.items() if schema.get("scope") == "machine"} >= USER_ONLY
    assert {camel_case(f.name) for f in FIELDS if f.metadata["user_only"]} == USER_ONLY
    assert properties["serverPath"]["scope"] == properties["pythonPath"]["scope"] == "machine"


def test_minimums_and_choices_are_enforced_by_the_server_too() -> None:
    settings = parse_settings({"completionMaxTokens": 0, "nCtx": 16, "backend": "evil", "debounceMs": -1})
    assert settings == Settings()


def run_extension(tmp_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The extension's server.ts, bundled and run in node with `vscode` stubbed by `config`."""
    bundle = tmp_path / "server.js"
    built = subprocess.run(
        [ESBUILD, "src/server.ts", "--bundle", "--platform=node", "--format=cjs", "--external:vscode", f"--outfile={bundle}"],
        check=False, cwd=EXTENSION, capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    script = """
    const Module = require("module");
    const config = JSON.parse(process.env.QWEN_CONFIG);
    const vscode = { workspace: { getConfiguration: () => ({ get: (key, fallback) => (key in config ? config[key] : fallback) }) } };
    const load = Module._load;
    Module._load = function (request, ...rest) { return request === "vscode" ? vscode : load.call(this, request, ...rest); };
    const server = require(process.env.QWEN_BUNDLE);
    const manifest = require(process.env.QWEN_MANIFEST);
    const declared = new server.DeclaredSettings(manifest);
    const names = manifest.contributes.configuration.flatMap((s) => Object.keys(s.properties)).map((n) => n.slice(5));
    const restarts = names.filter((name) => declared.needsRestart({ affectsConfiguration: (s) => s === `qwen.${name}` }));
    console.log(JSON.stringify({ sent: declared.serverSettings(), restarts, run: server.serverOptions().run }));
    """
    env = {**os.environ, "QWEN_CONFIG": json.dumps(config), "QWEN_BUNDLE": str(bundle), "QWEN_MANIFEST": str(EXTENSION / "package.json")}
    ran = subprocess.run(["node", "-e", script], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    return dict(json.loads(ran.stdout))


@pytest.mark.skipif(not ESBUILD.exists() and not os.environ.get("CI"), reason="run scripts/install-editors.sh")
def test_the_extension_forwards_declared_settings_and_restarts_on_engine_ones(tmp_path: Path) -> None:
    config = {"nCtx": 2048, "debounceMs": 5, "pythonPath": "/usr/bin/python3", "apiKeyUrl": "http://evil"}
    result = run_extension(tmp_path, config)
    # Only declared server settings go to the server: not the editor's own, nor a made-up key.
    assert result["sent"] == {"nCtx": 2048, "debounceMs": 5}
    assert set(result["restarts"]) == {camel_case(name) for name in ENGINE_SETTINGS} | (
        EDITOR_ONLY - {"installSource"}
    )  # where to install from: nothing to restart
    assert result["run"] == {"command": "/usr/bin/python3", "args": ["-I", "-m", "qwen_lsp", "serve"]}


@pytest.mark.skipif(not NVIM.exists() and not os.environ.get("CI"), reason="nvim comes with the test extras")
def test_neovim_defaults_match_config(tmp_path: Path) -> None:
    """The plugin's M.defaults.settings, as Neovim evaluates it: every setting, its default, its type."""
    script = tmp_path / "dump.lua"
    script.write_text(
        f"vim.opt.runtimepath:append({json.dumps(str(ROOT / 'editors' / 'neovim'))})\n"
        "io.stdout:write(vim.json.encode(require('qwen_lsp').defaults.settings))\n"
    )
    ran = subprocess.run([NVIM, "--headless", "-u", "NONE", "-l", script], check=False, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    defaults = json.loads(ran.stdout)
    assert sorted(defaults) == sorted(SERVER_NAMES)
    for field in FIELDS:
        value = defaults[camel_case(field.name)]
        assert (type(value), value) == (type(field.default), field.default), field.name
    help_text = (ROOT / "editors" / "neovim" / "doc" / "qwen_lsp.txt").read_text()
    assert all(f"\n{name} = " in help_text for name in SERVER_NAMES)
