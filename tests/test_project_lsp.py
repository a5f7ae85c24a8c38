"""Project context through a real client (pytest-lsp, Neovim's profile, the workspace folder sent at
`initialize`) and the real model: a method defined in another workspace file, that file changed
(saved on disk, or edited in an open buffer) and seen by the next completion, and a keystroke in a
workspace of 2,000 files.

No `$/progress` for indexing: the index never scans the workspace. A document's imports name the
modules to read; `didOpen` parses at most 64 of them in a worker thread, and a request parses at
most 8 within 50 ms, so there is no long-running indexing to report (the 2,000-file test checks
that only the imported modules are ever parsed).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest
from lsprotocol import types as lsp

from qwen_lsp.completion.project_context import ProjectContext
from qwen_lsp.engine.tokens import Prompt
from tests.conftest import NO_TIME_LIMITS, open_doc, records_after, server_env, server_status, settled_status
from tests.helpers import inline_completion
from tests.test_completion import end_of, type_text
from tests.test_project import INVENTORY, ORDERS, write

METHOD = "replenish_shelf_from_supplier"
RENAMED = "reorder_from_supplier"
# The same function with other names: a fresh place, so the server's suggestion cache cannot answer.
ORDERS_AGAIN = ORDERS.replace("refill(warehouse", "top_up(store").replace("warehouse.", "store.")


async def project_client(make_client, model_path: Path, root: Path, tokens: int = 256):
    write(root, {"shop/__init__.py": "", "shop/inventory.py": INVENTORY, "shop/orders.py": ORDERS + "\n"})
    env = server_env(QWEN_LSP_MODEL=str(model_path))
    # No time limit: what is checked is what the model knows, not how fast a shared machine is.
    options = {**NO_TIME_LIMITS, "projectContextTokens": tokens}
    return await make_client(env=env, options=options, workspace=root)


async def complete_method(client, uri: str, text: str) -> str:
    """The suggestion after `text`'s final `.` (a space after the dot, still valid Python, dropped)."""
    result = await inline_completion(client, uri, end_of(text))
    return result.items[0].insert_text.lstrip() if result.items else ""


def replace_text(client, uri: str, version: int, text: str) -> None:
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


@pytest.mark.parametrize("tokens", [256, 0])
async def test_method_of_a_class_in_another_file(make_client, model_path, tmp_path, tokens):
    """Only with project context does the model know the method's name (with `tokens` 0 it guesses
    another: the check that this test can fail)."""
    client = await project_client(make_client, model_path, tmp_path, tokens)
    uri = open_doc(client, str(tmp_path / "shop/orders.py"), ORDERS + "\n")
    answer = await complete_method(client, uri, ORDERS)
    print(f"projectContextTokens {tokens}: {answer!r}")
    assert answer.startswith(METHOD + "(") == (tokens > 0), answer


@pytest.mark.parametrize("tokens", [256, 0])
async def test_a_saved_change_is_seen_by_the_next_completion(make_client, model_path, tmp_path, tokens):
    """The method renamed on disk and `didSave` sent: the next completion (at a fresh place) uses
    the new name. Without the save notification the sections chosen for orders.py would stay
    (they are chosen again only when the imports or a shown module change)."""
    client = await project_client(make_client, model_path, tmp_path, tokens)
    uri = open_doc(client, str(tmp_path / "shop/orders.py"), ORDERS + "\n")
    before = await complete_method(client, uri, ORDERS)
    inventory = tmp_path / "shop/inventory.py"
    inventory.write_text(INVENTORY.replace(METHOD, RENAMED), encoding="utf-8")
    client.text_document_did_save(lsp.DidSaveTextDocumentParams(lsp.TextDocumentIdentifier(inventory.as_uri())))
    replace_text(client, uri, 2, ORDERS_AGAIN + "\n")
    after = await complete_method(client, uri, ORDERS_AGAIN)
    print(f"projectContextTokens {tokens}: before {before!r}, after saving {after!r}")
    assert after.startswith(RENAMED + "(") == (tokens > 0), after
    assert METHOD not in after


@pytest.mark.parametrize("tokens", [256, 0])
async def test_an_edited_open_buffer_is_seen_by_the_next_completion(make_client, model_path, tmp_path, tokens):
    """inventory.py opened and the method renamed in its buffer (never saved): the next completion
    in orders.py uses the buffer's name, not the one on disk."""
    client = await project_client(make_client, model_path, tmp_path, tokens)
    uri = open_doc(client, str(tmp_path / "shop/orders.py"), ORDERS + "\n")
    before = await complete_method(client, uri, ORDERS)
    inventory = open_doc(client, str(tmp_path / "shop/inventory.py"), INVENTORY)
    replace_text(client, inventory, 2, INVENTORY.replace(METHOD, RENAMED))
    replace_text(client, uri, 2, ORDERS_AGAIN + "\n")
    after = await complete_method(client, uri, ORDERS_AGAIN)
    print(f"projectContextTokens {tokens}: before {before!r}, after editing {after!r}")
    assert after.startswith(RENAMED + "(") == (tokens > 0), after
    assert METHOD not in after


async def keystroke_costs(client, uri: str, text: str, count: int = 30) -> list[float]:
    """Milliseconds from a keystroke's `didChange` to the answer of a `qwen/status` sent right
    after it: the server handles them in order, so this is the keystroke's cost on the event loop
    (its project prompt built for the warm-up) plus a status round trip."""
    at = end_of(text)
    costs = []
    for number in range(count):
        started = time.perf_counter()
        type_text(client, uri, number + 2, lsp.Position(at.line, at.character + number), "x")
        await server_status(client)
        costs.append((time.perf_counter() - started) * 1000)
    return costs


async def test_two_thousand_files_do_not_slow_a_keystroke(make_client, model_path, tmp_path):
    """The same file typed in with and without 2,000 other modules in the workspace: only the
    module it imports is ever parsed, and a keystroke costs the same. (Nothing to switch off here:
    with `projectContextTokens` 0 the index is not asked at all.)"""
    costs, parses = {}, {}
    for size in (0, 2000):
        files = {f"shop/generated/mod{n}.py": f"def function{n}(a, b):\n    return a * {n} + b\n" for n in range(size)}
        write(tmp_path / f"workspace{size}", files)
    os.sync()  # the disk's write-back of 2,000 new files would otherwise compete with the measurement
    for size in (0, 2000):
        root = tmp_path / f"workspace{size}"
        client = await project_client(make_client, model_path, root)
        uri = open_doc(client, str(root / "shop/orders.py"), ORDERS + "\n")
        await complete_method(client, uri, ORDERS)  # the model loaded, the imports read
        costs[size] = statistics.median(await keystroke_costs(client, uri, ORDERS))
        status = await server_status(client)
        parses[size] = status["project"]["parses"]
        assert status["project"]["folders"] == [str(root.resolve())]
        await client.shutdown_session()
    print(
        f"keystroke (didChange + qwen/status) median {costs[0]:.1f} ms "
        f"in a 3-file workspace, {costs[2000]:.1f} ms with 2,000 more files; files parsed {parses}"
    )
    # shop/inventory.py alone: by the didOpen warm-up, and by the first request if it came first.
    assert parses[0] <= 2 and parses[2000] <= 2, parses
    assert costs[2000] < 3 * costs[0] + 50, costs  # generous: the machine is shared


async def test_typing_keeps_the_project_sections_in_the_kv_cache(make_client, model_path, tmp_path):
    """The sections lead the prompt and are chosen once per file: after a keystroke the engine
    reads only the few tokens around the cursor, not the inventory's definitions again. (This
    holds with `projectContextTokens` 0 too; what it guards is that the sections do not change.)"""
    client = await project_client(make_client, model_path, tmp_path)
    uri = open_doc(client, str(tmp_path / "shop/orders.py"), ORDERS + "\n")
    suggested = await complete_method(client, uri, ORDERS)
    first = await settled_status(client)
    typed = "units"  # then ask at the new place (not a type-through: the suggestion was another method)
    for number, char in enumerate(typed):
        type_text(client, uri, number + 2, lsp.Position(end_of(ORDERS).line, end_of(ORDERS).character + number), char)
    answer = await complete_method(client, uri, ORDERS + typed)
    print(f"suggested {suggested!r}, after typing {typed!r}: {answer!r}")
    later = await records_after(client, len(first["recent"]))
    cold = first["recent"][-1]
    print(f"cold prompt {cold['prompt_tokens']} tokens; after typing: {[(r['prompt_tokens'], r['evaluated_tokens']) for r in later]}")
    assert cold["prompt_tokens"] > 150, cold  # the inventory's definitions are in it
    assert any(record["generated_tokens"] for record in later), later
    for record in later:
        assert record["evaluated_tokens"] <= 32, record


# Forty small functions in another workspace file: their sections alone are ~900 tokens, seconds
# to read on 2 cores.
TOOLS = "".join(f"def tool_{i}(value: int, scale: float = {i}.5) -> float:\n    return value * scale + {i}\n\n\n" for i in range(40))
USES_TOOLS = (
    "from .tools import "
    + ", ".join(f"tool_{i}" for i in range(40))
    + "\n\n\n"
    + "".join(f"def step_{i}(x):\n    y = tool_{i}(x)\n    \n    return y - {i * 3}\n\n\n" for i in range(60))
)


async def test_a_cold_place_falls_back_to_a_prompt_it_can_read_in_time(make_client, model_path, tmp_path):
    """Issue 12: at a cold place the engine answers from a smaller prompt. That prompt must be one
    it can read within the budget: the project's sections, when nobody has read them yet, are as
    slow as the full window, so they are left out; once they are in the cache, the smaller prompt
    keeps them."""
    write(tmp_path, {"shop/__init__.py": "", "shop/tools.py": TOOLS})
    # 1 s: a 64-token window can be read in time, the ~900 tokens of sections cannot.
    options = {"completionMaxMs": 0, "completionColdPromptMs": 1000, "completionColdContextTokens": 64, "projectContextTokens": 1024}
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(model_path)), options=options, workspace=tmp_path)
    text = USES_TOOLS + "def main(values):\n    total = 0\n    for value in values:\n        total += "
    uri = open_doc(client, str(tmp_path / "shop/main.py"), text)
    await inline_completion(client, uri, end_of(text))
    recent = (await settled_status(client))["recent"]
    first = next((r for r in recent if r["generated_tokens"]), None)
    assert first is not None and first["fell_back"] and first["prompt_tokens"] < 300, recent

    # The full prompt, sections first, is read behind that answer; then a cold place far above.
    recent = (await settled_status(client, recent.index(first) + 2, attempts=1200))["recent"]
    assert recent[recent.index(first) + 1]["prompt_tokens"] > 1200, recent
    above = text.index("def step_20(x):\n") + len("def step_20(x):\n    y = tool_20(x)\n    ")
    await inline_completion(client, uri, position_of_offset(text, above))
    later = await records_after(client, len(recent), attempts=600)
    second = next(r for r in later if r["generated_tokens"])
    assert second["fell_back"] and second["prompt_tokens"] > 700 and second["evaluated_tokens"] < 300, later


def position_of_offset(text: str, offset: int) -> lsp.Position:
    before = text[:offset]
    return lsp.Position(before.count("\n"), len(before) - (before.rfind("\n") + 1))


# -- ProjectContext's bookkeeping (no model) ---------------------------------------------------------
FIM = Prompt.template("<|fim_prefix|>x<|fim_suffix|><|fim_middle|>")


def test_sections_grow_as_the_cold_budget_reads_more_modules(tmp_path):
    """A request parses at most a few modules and leaves the rest to the next; the sections chosen
    for the file must not stay those of the first, partial read."""
    files = {f"pkg/m{n}.py": f"def f{n}():\n    pass\n" for n in range(20)}
    write(tmp_path, {"pkg/__init__.py": "", **files})
    text = "".join(f"from .m{n} import f{n}\n" for n in range(20)) + "".join(f"f{n}()\n" for n in range(20))
    project = ProjectContext([tmp_path])
    uri = (tmp_path / "pkg/main.py").as_uri()
    first = project.prompt(uri, text, 1, 10_000, FIM).text.count("<|file_sep|>")
    for _ in range(5):
        project.prompt(uri, text, 1, 10_000, FIM)
    assert first < 21 and project.prompt(uri, text, 1, 10_000, FIM).text.count("<|file_sep|>") == 21


def test_an_edited_buffer_leaves_no_stale_chunk(tmp_path):
    """A file's chunk gathered when it was opened is dropped once its buffer is edited (the model
    would copy the old text), and is not shown beside that file's own definitions."""
    write(tmp_path, {"notes.py": "OLD_NAME = 1\n", "shop/__init__.py": "", "shop/inventory.py": INVENTORY})
    project = ProjectContext([tmp_path])
    main, notes = (tmp_path / "main.py").as_uri(), (tmp_path / "notes.py").as_uri()
    project.opened(notes, "OLD_NAME = 1\n")
    assert "OLD_NAME" in project.prompt(main, "x = 1\n", 1, 512, FIM).text
    project.edited(notes, "NEW_NAME = 1\n")
    assert "_NAME" not in project.prompt(main, "x = 1\n", 1, 512, FIM).text
    project.opened((tmp_path / "shop/inventory.py").as_uri(), INVENTORY)
    text = "from shop.inventory import Warehouse\nWarehouse('a')\n"
    assert project.prompt(main, text, 2, 512, FIM).text.count("<|file_sep|>shop/inventory.py") == 1
