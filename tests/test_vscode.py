"""The VS Code extension in a real VS Code (code-server 4.100.3 = VS Code 1.100.3) shown in Debian's
Chromium and driven by playwright-core, with the real model: the .vsix is built with the
extension's npm scripts and installed; typing shows ghost text and Tab accepts it; "Qwen: Explain
Selection" streams into the side panel and its Stop button stops it. Screenshots are saved in the
test's temporary folder (printed) and copied to $QWEN_E2E_ARTIFACTS when set."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

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

missing = [str(p) for p in (CODE_SERVER, CHROMIUM, EXTENSION / "node_modules") if not p.exists()]
pytestmark = [
    pytest.mark.model,
    # In CI a missing editor is a failure, not a skip: the test command installs them.
    pytest.mark.skipif(bool(missing) and not os.environ.get("CI"), reason=f"run scripts/install-editors.sh (missing {missing})"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def vsix() -> Path:
    """The .vsix, built by the extension's own npm scripts (typecheck, bundle, vsce package)."""
    built = subprocess.run(["npm", "run", "package"], check=False, cwd=EXTENSION, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return EXTENSION / "qwen-lsp.vsix"


@pytest.fixture
def code_server(tmp_path: Path, vsix: Path, model_path: Path) -> Iterator[str]:
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
    settings = {
        "qwen.pythonPath": sys.executable,
        "qwen.model": str(model_path),
        "qwen.explainMaxTokens": 150,  # keeps the test short on a busy machine; still streams
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "security.workspace.trust.enabled": False,
        "extensions.autoCheckUpdates": False,
        "extensions.autoUpdate": False,
        "telemetry.telemetryLevel": "off",
        "chat.commandCenter.enabled": False,
        "editor.minimap.enabled": False,
    }
    (data / "User" / "settings.json").write_text(json.dumps(settings, indent=2))
    env = {**os.environ, "HOME": str(home)}
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


def test_ghost_text_and_explain_in_vscode(tmp_path: Path, code_server: str) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    result_file = tmp_path / "result.json"
    env = {
        **os.environ,
        "QWEN_E2E_URL": code_server,
        "QWEN_E2E_FILE": "shapes.py",
        "QWEN_E2E_LINE": str(TYPE_ON_LINE),
        "QWEN_E2E_TYPE": TYPED,
        "QWEN_E2E_GHOST_TIMEOUT_MS": "60000",
        "QWEN_E2E_EXPLAIN": "4,5",
        "QWEN_E2E_SHOTS": str(shots),
        "QWEN_E2E_RESULT": str(result_file),
        "QWEN_E2E_CHROMIUM": str(CHROMIUM),
    }
    driver = subprocess.run(["node", DRIVER], check=False, env=env, capture_output=True, text=True, timeout=1200)
    print(f"screenshots: {shots}")
    if artifacts := os.environ.get("QWEN_E2E_ARTIFACTS"):
        shutil.copytree(shots, Path(artifacts) / "vscode", dirs_exist_ok=True)
    assert result_file.exists(), f"the driver wrote no result: {driver.stdout[-2000:]}{driver.stderr[-3000:]}"
    result = json.loads(result_file.read_text())
    print("\n".join(result["events"]))
    assert result.get("error") is None, result["error"]

    ghost = result["ghost"]
    assert ghost.strip(), "the ghost text is empty"
    how = "Alt+\\ after typing gave none" if result.get("ghost_triggered_explicitly") else "typing"
    print(f"VS Code: keystroke to visible ghost text {result['ghost_ms']} ms ({how}): {ghost!r}")
    # Tab inserted exactly the ghost text after what was typed; the file was saved from the editor.
    typed_line = result["typed_line"]
    assert typed_line.strip() == TYPED.strip()
    lines = SAMPLE.split("\n")
    expected = "\n".join(lines[:TYPE_ON_LINE] + (typed_line + ghost).split("\n") + lines[TYPE_ON_LINE:])
    assert (tmp_path / "workspace" / "shapes.py").read_text() == expected

    snapshots = result["explain_snapshots"]
    print(
        f"VS Code Explain Selection: first text after {result['explain_first_text_ms']} ms, "
        f"done after {result['explain_ms']} ms, {len(snapshots)} distinct states of the panel"
    )
    assert result["explain_text"]
    assert len(snapshots) >= 3, snapshots  # streamed, not shown at once
    assert result["stopped_state"] == "stopped" and not result["stopped_text_grew"]
    assert result["status_ready"].startswith("Qwen")
