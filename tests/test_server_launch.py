"""The editors start the server so that the project's folder cannot supply its modules (issue 15,
item 18): `python -m qwen_lsp` puts the working folder first on sys.path, so a cloned repository
holding `tree_sitter_python.py` would run its code in the server as soon as a Python file opens.
Each launch the plugins build is started from such a folder; the unsafe one shows the trap works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rawlsp import RawServer
from tests.test_settings import ESBUILD, NVIM, ROOT, run_extension

HOSTILE = 'from pathlib import Path\nPath(__file__).with_name("ran-hostile-code").write_text("")\n'
# A remote backend at a closed port: the server starts without loading the model.
NO_MODEL = {"backend": "openai", "endpoint": "http://127.0.0.1:9/v1"}


def hostile_code_ran(command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Start `command` in a folder holding a hostile tree_sitter_python.py and open a Python file."""
    folder = tmp_path / "cloned-repo"
    folder.mkdir()
    (folder / "tree_sitter_python.py").write_text(HOSTILE)
    monkeypatch.chdir(folder)
    server = RawServer(dict(os.environ), command)
    try:
        server.initialize(options=NO_MODEL)
        doc = {"uri": (folder / "a.py").as_uri(), "languageId": "python", "version": 1, "text": "x = 1\n"}
        server.notify("textDocument/didOpen", {"textDocument": doc})
        assert "result" in server.request("shutdown")  # answered after didOpen was handled
        server.notify("exit")
    finally:
        server.close()
    return (folder / "ran-hostile-code").exists()


def neovim_command(tmp_path: Path, options: str) -> list[str]:
    """The command the Neovim plugin starts for `setup(options)` (a Lua table)."""
    script = tmp_path / "cmd.lua"
    script.write_text(
        f"vim.opt.runtimepath:append({json.dumps(str(ROOT / 'editors' / 'neovim'))})\n"
        "local qwen = require('qwen_lsp')\n"
        f"io.stdout:write(vim.json.encode(qwen.server_cmd(vim.tbl_extend('force', qwen.defaults, {options}))))\n"
    )
    ran = subprocess.run([NVIM, "--headless", "-u", "NONE", "-l", script], check=False, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    return list(json.loads(ran.stdout))


def test_the_trap_works_on_a_plain_python_m(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hostile_code_ran([sys.executable, "-m", "qwen_lsp", "serve"], tmp_path, monkeypatch)


@pytest.mark.skipif(not NVIM.exists() and not os.environ.get("CI"), reason="nvim comes with the test extras")
@pytest.mark.parametrize("options", ["{ python = PYTHON }", "{}"], ids=["python", "default-cmd"])
def test_neovim_starts_the_server_isolated(options: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    command = neovim_command(tmp_path, options.replace("PYTHON", json.dumps(sys.executable)))
    if command == ["qwen-lsp"]:  # the console script, found on PATH as Neovim would
        command = [str(Path(sys.executable).parent / "qwen-lsp"), "serve"]
    assert not hostile_code_ran(command, tmp_path, monkeypatch), command


@pytest.mark.skipif(not ESBUILD.exists() and not os.environ.get("CI"), reason="run scripts/install-editors.sh")
def test_vscode_starts_the_server_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_extension(tmp_path, {"pythonPath": sys.executable})["run"]
    assert not hostile_code_ran([run["command"], *run["args"]], tmp_path, monkeypatch), run
