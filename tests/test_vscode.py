"""The VS Code extension in a real VS Code (code-server 4.100.3 = VS Code 1.100.3) shown in Debian's
Chromium and driven by playwright-core, with the real model: the .vsix is built with the
extension's npm scripts and installed; typing shows ghost text and Tab accepts it; "Qwen: Explain
Selection" streams into the side panel and its Stop button stops it; the editor's context menu
explains the function under the mouse and fixes a broken line; without a server, the extension's
offer to install one ends with ghost text. Screenshots are saved in the test's temporary folder
(printed) and copied to $QWEN_E2E_ARTIFACTS when set."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "editors" / "vscode"
DRIVER = ROOT / "tests" / "editors" / "vscode_e2e.mjs"
CODE_SERVER_VERSION = "4.100.3"
EDITORS = Path(
    os.environ.get("QWEN_LSP_EDITORS") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qwen-lsp" / "editors"
)
CODE_SERVER = EDITORS / f"code-server-{CODE_SERVER_VERSION}" / "node_modules" / ".bin" / "code-server"
CHROMIUM = Path("/usr/bin/chromium")

SAMPLE = '''import math


def circle_area(radius):
    """Return the area of a circle with the given radius."""


def describe(shape, size):
    """Describe a shape, e.g. 'a square of side 2'."""
    return f"a {shape} of side {size}"
'''
TYPE_ON_LINE = 5  # after the docstring of circle_area
TYPED = "\nreturn math."  # VS Code indents the new line
MENU_LINE = 'return f"a {shape}'  # right-clicked: the body of describe()
BROKEN = 'print("area", circle_area(2)'  # typed at the end: a syntax error to fix

# What the install test leaves out of its copy of the project.
COPY_IGNORE = (
    ".venv",
    ".git",
    "node_modules",
    "__pycache__",
    "*.vsix",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "out",
)

missing = [str(p) for p in (CODE_SERVER, CHROMIUM, EXTENSION / "node_modules") if not p.exists()]
pytestmark = [
    pytest.mark.model,
    # In CI a missing editor is a failure, not a skip: the test command installs them.
    pytest.mark.skipif(bool(missing) and not os.environ.get("CI"), reason=f"run scripts/install-editors.sh (missing {missing})"),
]


@pytest.fixture
def vsix() -> Path:
    """The .vsix, built by the extension's own npm scripts (typecheck, bundle, vsce package)."""
    built = subprocess.run(["npm", "run", "package"], check=False, cwd=EXTENSION, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return EXTENSION / "qwen-lsp.vsix"


USER_SETTINGS = {
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": False,
    "security.workspace.trust.enabled": False,
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "telemetry.telemetryLevel": "off",
    "chat.commandCenter.enabled": False,
    "editor.minimap.enabled": False,
    "files.autoSave": "off",  # the file on disk is what Tab and Ctrl+S made it
    # The broken line is typed as is, not completed by the editor.
    "editor.autoClosingBrackets": "never",
    "editor.autoClosingQuotes": "never",
}


# On a loaded machine the completion's time budget cuts the line short (seen: 3 tokens in 1.7 s),
# which then gives no suggestion while typing (the budget has tests of its own).
NO_TIME_BUDGET = {"qwen.completionMaxMs": 0}


@contextlib.contextmanager
def running_code_server(tmp_path: Path, vsix: Path, settings: Mapping[str, object], env: Mapping[str, str]) -> Iterator[str]:
    """code-server with the extension installed from the .vsix, opened on a workspace folder."""
    home, extensions, data = tmp_path / "home", tmp_path / "extensions", tmp_path / "data"
    workspace = tmp_path / "workspace"
    for folder in (home, extensions, data / "User", workspace):
        folder.mkdir(parents=True)
    (workspace / "shapes.py").write_text(SAMPLE)
    # A cloned repository's own settings try to send the code to its server (issue 15, item 17):
    # these are `machine` settings, which VS Code takes from the user only. Were they obeyed, the
    # closed port would leave no ghost text.
    (workspace / ".vscode").mkdir()
    hostile = {"qwen.backend": "openai", "qwen.endpoint": "http://127.0.0.1:9/v1", "qwen.modelName": "theirs"}
    (workspace / ".vscode" / "settings.json").write_text(json.dumps(hostile))
    (data / "User" / "settings.json").write_text(json.dumps({**USER_SETTINGS, **settings}, indent=2))
    env = {**os.environ, "HOME": str(home), **env}
    env.pop("QWEN_LSP_MODEL", None)
    common = ["--extensions-dir", str(extensions), "--user-data-dir", str(data)]
    installed = subprocess.run(
        [CODE_SERVER, *common, "--install-extension", str(vsix)], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert installed.returncode == 0 and "qwen-lsp" in installed.stdout, installed.stdout + installed.stderr
    port = free_port()
    log = (tmp_path / "code-server.log").open("w")
    server = subprocess.Popen(
        [
            CODE_SERVER, *common, "--auth", "none", "--bind-addr", f"127.0.0.1:{port}", "--disable-telemetry",
            "--disable-update-check", "--disable-workspace-trust", "--disable-getting-started-override",
            str(workspace),
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (tmp_path / "code-server.log").read_text()
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/?folder={workspace}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def logging_python(tmp_path: Path) -> Path:
    """A `qwen.pythonPath` that starts the server as the extension asks (isolated, `-I`) with a
    DEBUG log of every message it receives and sends: what the server did, for the assertions."""
    wrapper = tmp_path / "python-logging"
    log = tmp_path / "server.log"
    wrapper.write_text(
        f'''#!/bin/sh
[ "$*" = "-I -m qwen_lsp serve" ] || {{ echo "unexpected arguments: $*" >&2; exit 2; }}
exec "{sys.executable}" -I -m qwen_lsp --log-level DEBUG --log-file "{log}" serve
'''
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def code_server(tmp_path: Path, vsix: Path, model_path: Path) -> Iterator[str]:
    settings = {
        "qwen.pythonPath": str(logging_python(tmp_path)),
        "qwen.model": str(model_path),
        "qwen.explainMaxTokens": 150,  # keeps the test short on a busy machine; still streams
        **NO_TIME_BUDGET,
        "qwen.fixMaxTokens": 150,
    }
    with running_code_server(tmp_path, vsix, settings, {}) as url:
        yield url


def drive(tmp_path: Path, url: str, **inputs: str) -> dict[str, Any]:
    """Run the playwright driver on code-server at `url`; what it saw."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    result_file = tmp_path / "result.json"
    env = {
        **os.environ,
        "QWEN_E2E_URL": url,
        "QWEN_E2E_FILE": "shapes.py",
        "QWEN_E2E_LINE": str(TYPE_ON_LINE),
        "QWEN_E2E_TYPE": TYPED,
        "QWEN_E2E_GHOST_TIMEOUT_MS": "60000",
        "QWEN_E2E_SHOTS": str(shots),
        "QWEN_E2E_RESULT": str(result_file),
        "QWEN_E2E_CHROMIUM": str(CHROMIUM),
        **inputs,
    }
    driver = subprocess.run(["node", DRIVER], check=False, env=env, capture_output=True, text=True, timeout=2400)
    print(f"screenshots: {shots}")
    if artifacts := os.environ.get("QWEN_E2E_ARTIFACTS"):
        shutil.copytree(shots, Path(artifacts) / "vscode", dirs_exist_ok=True)
    assert result_file.exists(), f"the driver wrote no result: {driver.stdout[-2000:]}{driver.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(result_file.read_text())
    print("\n".join(result["events"]))
    assert result.get("error") is None, result["error"]
    return result


def check_ghost_text(tmp_path: Path, result: dict[str, Any]) -> None:
    ghost = result["ghost"]
    print(f"VS Code: keystroke to visible ghost text {result['ghost_ms']} ms (after {result['ghost_path']}): {ghost!r}")
    assert result["ghost_path"] == "typing", "no ghost text while typing (only after an explicit Alt+\\)"
    assert ghost.strip(), "the ghost text is empty"
    # Tab inserted exactly the ghost text after what was typed; the file was saved from the editor.
    typed_line = result["typed_line"]
    assert typed_line.strip() == TYPED.strip()
    lines = SAMPLE.split("\n")
    expected = "\n".join(lines[:TYPE_ON_LINE] + (typed_line + ghost).split("\n") + lines[TYPE_ON_LINE:])
    assert (tmp_path / "workspace" / "shapes.py").read_text() == expected


def server_messages(log: Path) -> list[tuple[str, dict[str, Any]]]:
    """("received" or "sending", message), in the order the server's DEBUG log has them."""
    messages = []
    for line in log.read_text().splitlines():
        _, found, logged = line.partition(" qwen_lsp.lsp.protocol: ")
        direction, _, body = logged.partition(" ")
        if found and direction == "received":
            messages.append((direction, json.loads(ast.literal_eval(body))))  # the bytes' repr
        elif found and direction == "sending":
            messages.append((direction, json.loads(body)))
    return messages


def words(text: str) -> list[str]:
    """The words of markdown or of its rendered text: list markers and markup left out."""
    return re.findall(r"\w+", re.sub(r"(?m)^\s*(?:[-*+]|\d+[.)])\s+", "", text))


def check_stopped_on_the_server(log: Path, panel_text: str) -> None:
    """The second explanation was stopped with the panel's Stop: the server got the cancel, ended
    its progress "stopped", answered RequestCancelled and streamed nothing new afterwards; the
    panel shows what the server had streamed before the cancel reached it."""
    messages = server_messages(log)
    explains = [m for way, m in messages if way == "received" and (m.get("params") or {}).get("command") == "qwen.explain"]
    request = explains[1]  # the first ran to its end; the second is the one stopped
    msg_id, token = request["id"], request["params"]["workDoneToken"]
    cancelled_at = next(
        i
        for i, (way, m) in enumerate(messages)
        if way == "received" and m.get("method") == "$/cancelRequest" and m["params"]["id"] == msg_id
    )
    progress = [
        (i, m["params"]["value"])
        for i, (way, m) in enumerate(messages)
        if m.get("method") == "$/progress" and m["params"]["token"] == token
    ]
    streamed = [v["message"] for i, v in progress if i < cancelled_at and v["kind"] == "report" and v.get("percentage") is None]
    after = [v for i, v in progress if i > cancelled_at]
    answer = next(m for way, m in messages if way == "sending" and m.get("id") == msg_id and "method" not in m)
    print(f"VS Code Stop: {len(streamed)} reports before the cancel; after it {after}; answer {answer}")
    assert answer.get("error", {}).get("code") == -32800, answer  # RequestCancelled, not a result
    assert after and after[-1] == {"kind": "end", "message": "stopped"}, after
    # After the cancel: at most the one last report of the text so far, then the end.
    assert len([v for v in after if v["kind"] == "report"]) <= 1, after
    # The panel's text is the last report the server sent before the cancel (or the one before,
    # if a report crossed the cancel on the wire and the extension dropped it).
    assert streamed, "the server streamed nothing before the cancel"
    assert words(panel_text) in [words(text) for text in streamed[-2:]], (panel_text, streamed[-2:])


@pytest.mark.timeout(1800)  # three explanations and a fix; minutes each on a loaded machine
def test_ghost_text_and_explain_in_vscode(tmp_path: Path, code_server: str, model_path: Path) -> None:
    result = drive(tmp_path, code_server, QWEN_E2E_EXPLAIN="4,5", QWEN_E2E_MENU_LINE=MENU_LINE, QWEN_E2E_BROKEN=BROKEN)
    check_ghost_text(tmp_path, result)

    snapshots = result["explain_snapshots"]
    print(
        f"VS Code Explain Selection: first text after {result['explain_first_text_ms']} ms, "
        f"done after {result['explain_ms']} ms, {len(snapshots)} distinct states of the panel"
    )
    assert result["explain_text"]
    assert len(snapshots) >= 3, snapshots  # streamed, not shown at once
    assert result["stopped_state"] == "stopped"
    check_stopped_on_the_server(tmp_path / "server.log", result["stopped_text"])
    # The tooltip is the server's `qwen/status`: ready, with the model the settings named.
    tooltip = result["status_tooltip"]
    assert "Qwen: ready" in tooltip and f"Model: {model_path}" in tooltip, tooltip

    menu = result["menu"]
    # Right-click in describe()'s body, nothing selected: Explain, and no Fix (no problem there).
    assert "Explain with Qwen" in menu["entries"] and "Fix with Qwen" not in menu["entries"], menu["entries"]
    explain = menu["explain"]
    print(
        f"VS Code context menu Explain: first text after {explain['first_text_ms']} ms, done after "
        f"{explain['ms']} ms, {len(explain['snapshots'])} states; {explain['title']}: {explain['text'][:300]!r}"
    )
    # The panel names the clicked line; the server explained the function there, describe().
    assert re.fullmatch(r"Qwen: the function at shapes\.py:\d+", explain["title"]), explain["title"]
    assert explain["text"] and len(explain["snapshots"]) >= 3, explain["snapshots"]
    # On the broken line: Fix, which the model turned into a line that parses.
    assert "Fix with Qwen" in menu["broken_entries"], menu["broken_entries"]
    print(f"VS Code context menu Fix: {BROKEN!r} -> {menu['fixed_line']!r}")
    ast.parse(menu["fixed_line"].strip())


@pytest.mark.timeout(1800)  # a venv, the model's wheels from PyPI, the model
def test_install_offer_then_ghost_text(tmp_path: Path, vsix: Path, model_path: Path) -> None:
    """No qwen-lsp on PATH: the extension offers to install it; accepting runs the project's
    install script (from a copy of the project, `qwen.installSource`) into a venv in the
    extension's global storage, which reuses the cached llama-cpp-python wheel, and ghost text
    works afterwards."""
    source = tmp_path / "qwen-lsp-source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    path = "/usr/bin:/bin"
    assert shutil.which("qwen-lsp", path=path) is None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    wheels = sorted((cache / "qwen-lsp" / "wheels").rglob("*.whl"))
    assert wheels, "no cached llama-cpp-python wheel: run scripts/install.sh first"
    settings = {"qwen.installSource": str(source), "qwen.model": str(model_path), **NO_TIME_BUDGET}
    # The user's cache (HOME is a temporary folder): the llama-cpp-python wheel is not rebuilt.
    env = {"PATH": path, "XDG_CACHE_HOME": str(cache)}
    with running_code_server(tmp_path, vsix, settings, env) as url:
        result = drive(tmp_path, url, QWEN_E2E_INSTALL="1")
    print(f"VS Code: offer accepted to model ready in {result['install_ms'] / 1000:.0f} s")
    assert result["install_progress_seen"]
    venv = tmp_path / "data" / "User" / "globalStorage" / "qwen-lsp.qwen-lsp" / "venv"
    assert (venv / "bin" / "qwen-lsp").exists()
    assert sorted((cache / "qwen-lsp" / "wheels").rglob("*.whl")) == wheels  # none built
    check_ghost_text(tmp_path, result)
