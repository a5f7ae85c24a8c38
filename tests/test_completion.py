"""Completion through a real client (pytest-lsp with editor profiles) and the real model: a line
in a function body, type-through from the cache, a superseded stale request, nothing inside a
string or comment, no repeat of the code after the cursor, and non-ASCII text in utf-8 and
utf-16 positions. The stop and clean-up rules also get direct checks (they need no model)."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pytest_lsp import client_capabilities

from qwen_lsp.completion import postprocess
from qwen_lsp.completion.completer import Completer, complete_lines
from qwen_lsp.completion.layout import Context, Mode
from qwen_lsp.config import Settings
from qwen_lsp.engine.base import GenerationRequest, StopReason
from qwen_lsp.syntax.documents import Document
from tests.conftest import NO_TIME_LIMITS, open_doc, position_of, records_after, server_env, server_status, settled_status
from tests.fake_engine import FakeEngine
from tests.helpers import inline_completion

BODY = '''import math


def circle_area(radius: float) -> float:
    """Area of a circle."""
    return math.pi * radius ** 2


def total_area(radii: list[float]) -> float:
    """Sum of the areas of circles with these radii."""
    total = 0.0
    for radius in radii:
        total += '''


def end_of(text: str, encoding: str = "utf-16") -> lsp.Position:
    lines = text.split("\n")
    column = lines[-1].encode("utf-8") if encoding == "utf-8" else lines[-1].encode("utf-16-le")
    return lsp.Position(len(lines) - 1, len(column) if encoding == "utf-8" else len(column) // 2)


def type_text(client, uri: str, version: int, at: lsp.Position, text: str) -> None:
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(at, at), text=text)],
        )
    )


async def recent_count(client, expected: int = 1, attempts: int = 50) -> int:
    """How many generations the engine has recorded, once `expected` are (or after `attempts`
    tenths of a second): an answer reaches the client before its stats are filed."""
    status = await settled_status(client, expected, attempts)
    return len(status.get("recent", []))


@pytest.fixture
async def client(model_path, make_client):
    """The real model with no time limit on a completion: a loaded machine must not turn these
    tests' suggestions into none (a line cut short by the limit is dropped)."""
    return await make_client(env=server_env(QWEN_LSP_MODEL=str(model_path)), options=NO_TIME_LIMITS)


async def test_completes_a_line_in_a_function_body(client, tmp_path):
    uri = open_doc(client, str(tmp_path / "areas.py"), BODY)
    at = end_of(BODY)
    result = await inline_completion(client, uri, at)
    assert len(result.items) == 1
    item = result.items[0]
    assert item.range.start == at and item.range.end == at
    text = item.insert_text
    assert text.strip() and "\n" not in text, f"a rest-of-line suggestion, got {text!r}"
    assert text == text.rstrip()
    # The model knows what a loop summing areas adds: the helper defined above or the formula.
    assert "circle_area" in text or "radius" in text


async def test_type_through_is_served_from_the_cache(client, tmp_path):
    uri = open_doc(client, str(tmp_path / "areas.py"), BODY)
    at = end_of(BODY)
    first = (await inline_completion(client, uri, at)).items[0].insert_text
    assert len(first) >= 3
    before = await recent_count(client, 1)
    # The user types the first two characters of the suggestion.
    type_text(client, uri, 2, at, first[:2])
    moved = lsp.Position(at.line, at.character + 2)
    second = await inline_completion(client, uri, moved)
    assert [i.insert_text for i in second.items] == [first[2:]]
    assert second.items[0].range.start == moved
    assert await recent_count(client, before + 1, attempts=10) == before, "type-through must not ask the model"


async def test_a_newer_request_from_the_same_document_supersedes_the_older(make_client, model_path, tmp_path):
    # A limit far above what a line needs: a generation that ends early was stopped, not cut.
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(model_path)), options={**NO_TIME_LIMITS, "completionMaxTokens": 400})
    # The older request needs a long prompt (~1,000 tokens, many seconds cold).
    body = "".join(f"def helper_{i}(x):\n    return x * {i} + {i * 7}\n\n\n" for i in range(60))
    text = body + "def main():\n    value = "
    uri = open_doc(client, str(tmp_path / "long.py"), text)
    short = open_doc(client, str(tmp_path / "short.py"), "def add(a, b):\n    return ")
    await inline_completion(client, short, lsp.Position(1, 11))  # the model is loaded and warm

    older = asyncio.ensure_future(inline_completion(client, uri, end_of(text), msg_id="older"))
    await asyncio.sleep(0.5)
    # The user goes to the top of the file and starts a new function there.
    top = "def square(x):\n    return "
    type_text(client, uri, 2, lsp.Position(0, 0), top + "\n\n\n")
    newer = await inline_completion(client, uri, end_of(top))
    assert not (await older).items, "the superseded request must not deliver a stale suggestion"
    assert newer.items and newer.items[0].insert_text.strip()
    status = await settled_status(client, 3)
    generated = [r for r in status["recent"] if r["generated_tokens"]]  # not the prefills
    # The older request's prompt is by far the longest; its generation was stopped, not finished.
    longest = max(status["recent"], key=lambda r: r["prompt_tokens"])
    assert longest["stop_reason"] == "cancelled", longest
    assert longest["generated_tokens"] < 48, longest
    # The newer one ended with its line, well before its limit.
    assert generated[-1]["stop_reason"] == "stop", generated[-1]
    assert generated[-1]["prompt_tokens"] < longest["prompt_tokens"], generated[-1]


async def test_keystrokes_that_outrun_the_model_leave_one_generation(client, tmp_path):
    """An editor that never cancels (Neovim's inline requests) sends a request per keystroke;
    each newer one makes the older give up, so nothing queues behind stale work."""
    uri = open_doc(client, str(tmp_path / "areas.py"), BODY)
    at = end_of(BODY)
    await inline_completion(client, uri, at)  # warm: the model is loaded and the prompt is cached
    seen = len((await server_status(client))["recent"])
    word = "abs(radius) * 0.5"  # not what the model suggests, so no type-through
    requests = []
    for number, char in enumerate(word):
        type_text(client, uri, number + 2, lsp.Position(at.line, at.character + number), char)
        requests.append(asyncio.ensure_future(inline_completion(client, uri, lsp.Position(at.line, at.character + number + 1))))
    answers = await asyncio.gather(*requests)
    assert answers[-1].items and answers[-1].items[0].insert_text.strip(), "the newest request is answered"
    for number, answer in enumerate(answers):
        for item in answer.items:  # an older request gives up, or is answered where it was asked
            assert item.range.start == lsp.Position(at.line, at.character + number + 1), (number, item)
    status = await settled_status(client, seen + 1)
    finished = [r for r in status["recent"][seen:] if r["stop_reason"] != "cancelled" and r["generated_tokens"]]
    assert len(finished) <= 3, f"{len(finished)} generations ran for {len(word)} keystrokes: {finished}"


async def test_moving_the_window_reuses_the_kv_cache(client, tmp_path):
    """Typing far enough moves the window's start down; the engine moves the cached tokens of
    the window it keeps instead of reading the whole prompt again."""
    helpers = "".join(f"def helper_{i}(x):\n    return x * {i} + {i * 7}\n\n\n" for i in range(120))
    text = helpers + "def main(values):\n    total = 0\n    "
    uri = open_doc(client, str(tmp_path / "long.py"), text)
    await inline_completion(client, uri, end_of(text))
    first = await settled_status(client)
    cold = first["recent"][-1]
    # Type sixteen more lines: the anchor moves twice and the window's start with it. (They call
    # nothing defined above the window: a newly used name adds its signature to the header at
    # the front of the prompt, and then the whole prompt is read again.)
    typed = "".join(f"total += values[{i}] * {i}\n    " for i in range(16))
    type_text(client, uri, 2, end_of(text), typed)
    seen = len(first["recent"])
    await inline_completion(client, uri, end_of(text + typed))
    status = await settled_status(client, seen + 1)
    moved = status["recent"][-1]
    assert moved["prompt_tokens"] > 0.8 * cold["prompt_tokens"], (cold, moved)
    assert moved["shifted_tokens"] > 0, moved
    assert moved["evaluated_tokens"] < moved["prompt_tokens"] / 2, moved


async def test_a_line_added_below_the_cursor_costs_only_its_own_tokens(client, tmp_path):
    """The code after the cursor follows the window in the prompt: a line added below the
    cursor's puts tokens in front of it. The engine evaluates them in place and moves the cached
    code after them, rather than reading everything after the cursor again."""
    head = "def total_price(items, tax_rate):\n    subtotal = 0\n    "
    rest = "".join(f"\n    if len(items) > {n}:\n        subtotal += items[{n}].price * {n + 1}" for n in range(8))
    text = head + rest + "\n    return subtotal * (1 + tax_rate)\n"
    uri = open_doc(client, str(tmp_path / "prices.py"), text)
    first = await inline_completion(client, uri, end_of(head))
    seen = len(await records_after(client, 0))
    type_text(client, uri, 2, lsp.Position(end_of(head).line + 1, 0), "    assert items, 'nothing to price'\n")
    again = await inline_completion(client, uri, end_of(head))
    after = await records_after(client, seen)
    print(
        f"first {first.items[0].insert_text if first.items else None!r}, again {again.items[0].insert_text if again.items else None!r}; {after}"
    )
    assert sum(r["evaluated_tokens"] for r in after) <= 16, after
    assert sum(r["shifted_tokens"] for r in after) > 64, after
    assert again.items and again.items[0].insert_text.strip(), "the place is still answered"


@pytest.mark.parametrize(
    "source",
    [
        'def greet(name):\n    """Say hello to the person\n    called ',  # inside a docstring
        "def greet(name):\n    # say hello to the person called ",  # inside a comment
        'def greet(name):\n    message = f"Hello, ',  # inside an unterminated string
        "def greet(name):\n    name = name.strip()\n    ",  # code: the control case
    ],
)
async def test_nothing_is_suggested_inside_a_string_or_comment(client, tmp_path, source):
    uri = open_doc(client, str(tmp_path / "greet.py"), source)
    result = await inline_completion(client, uri, end_of(source))
    if source.endswith("strip()\n    "):
        assert result.items, "on an empty line in code a suggestion is expected"
        return
    assert not result.items
    await asyncio.sleep(1)  # a generation, had there been one, is recorded by now
    generated = [r for r in (await server_status(client)).get("recent", []) if r["generated_tokens"]]
    assert not generated, f"the decision needs no model: {generated}"


SUFFIX_CASES = [
    # (text before the cursor, text after it)
    ("def shout(word):\n    return print(word.upper(", "))\n"),
    ("def area(w, h):\n    result = ", "\n    return result\n"),
    ("def pairs(items):\n    return [(a, b) for a in items for b in items if ", "]\n"),
]


@pytest.mark.parametrize("before,after", SUFFIX_CASES)
async def test_the_code_after_the_cursor_is_never_repeated(client, tmp_path, before, after):
    uri = open_doc(client, str(tmp_path / "suffix.py"), before + after)
    result = await inline_completion(client, uri, end_of(before))
    assert result.items, "no suggestion: nothing below would be checked"
    for item in result.items:
        line = before.split("\n")[-1] + item.insert_text + after.split("\n")[0]
        assert postprocess._balanced(line), f"brackets doubled or dropped: {line!r}"
        following = [x.strip() for x in after.split("\n")[1:] if x.strip()]
        inserted = [x.strip() for x in item.insert_text.split("\n") if x.strip()]
        assert not (following and inserted and inserted[-1] == following[0]), f"repeats the next line: {item.insert_text!r}"


NON_ASCII = '''def grüße(名前: str) -> str:
    """Grüße 👋 an 名前."""
    return "Hallo 👋, " + 名前


def abschied(名前: str) -> str:
    """Abschied 😢 von 名前."""
    return "Tschüss 😢, " + '''


@pytest.mark.parametrize("profile,encoding", [("neovim@v0.11.0", "utf-8"), ("visual-studio-code", "utf-16")])
async def test_non_ascii_positions_in_the_negotiated_encoding(make_client, model_path, tmp_path, profile, encoding):
    capabilities = client_capabilities(profile)
    client = await make_client(capabilities=capabilities, env=server_env(QWEN_LSP_MODEL=str(model_path)))
    uri = open_doc(client, str(tmp_path / "gruss.py"), NON_ASCII)
    at = position_of(NON_ASCII, 'return "Tschüss 😢, " + ', encoding)
    assert at == end_of(NON_ASCII, encoding)
    result = await inline_completion(client, uri, at)
    assert result.items, "no suggestion after non-ASCII text"
    item = result.items[0]
    assert item.range.start == at and item.range.end == at
    assert "名前" in item.insert_text, f"the suggestion should use the parameter, got {item.insert_text!r}"
    # The server maps the client's edit in the same units: typing the suggestion's first
    # character there is a type-through hit whose range starts right after that character.
    first = item.insert_text[0]
    type_text(client, uri, 2, at, first)
    units = len(first.encode("utf-8")) if encoding == "utf-8" else len(first.encode("utf-16-le")) // 2
    moved = lsp.Position(at.line, at.character + units)
    rest = await inline_completion(client, uri, moved)
    assert [(i.insert_text, i.range.start) for i in rest.items] == [(item.insert_text[1:], moved)]


# -- the rules themselves (no model) ------------------------------------------------------------------
def ctx(line_prefix: str, line_suffix: str = "", suffix: str = "", mode: Mode = Mode.LINE, indent: str = "") -> Context:
    return Context(mode, "", "", suffix or line_suffix, line_prefix, indent, line_prefix, line_suffix)


def test_clean_drops_closers_the_line_already_has():
    assert postprocess.clean("word.upper())", ctx("    return print(", ")")) == "word.upper()"
    assert postprocess.clean("x, y]):", ctx("    for a in sorted([", "]):")) == "x, y"
    assert postprocess.clean("f(x)", ctx("    return print(", ")")) == "f(x)"


def test_clean_drops_a_repeat_of_the_next_line_and_blank_suggestions():
    assert postprocess.clean("return result", ctx("    ", suffix="\n    return result\n")) is None
    assert postprocess.clean("   \n", ctx("    ")) is None


def test_block_stops_at_the_dedent():
    text = "    if x:\n        return 1\n    return 2\nprint(3)\n"
    context = ctx("", mode=Mode.BLOCK, indent="    ")
    assert postprocess.clean(text, context) == "    if x:\n        return 1\n    return 2"


def test_a_block_cut_short_keeps_its_complete_lines():
    block = ctx("", mode=Mode.BLOCK, indent="    ")
    text = "    if x:\n        return 1\n    ret"
    assert complete_lines(text, StopReason.TIME, block) == "    if x:\n        return 1"
    assert complete_lines(text, StopReason.STOP, block) == text
    assert complete_lines("    return x + y\n", StopReason.TIME, block) == "    return x + y\n", "one line: kept"
    assert complete_lines("    return x +", StopReason.LENGTH, block) == "", "a line cut off: dropped"


def test_a_line_cut_short_is_no_suggestion():
    line = ctx("    return ")
    assert complete_lines("x + y\n", StopReason.TIME, line) == "x + y\n"
    assert complete_lines("Deprec", StopReason.TIME, line) == ""
    assert complete_lines("Deprec", StopReason.LENGTH, line) == ""
    assert complete_lines("Deprec", StopReason.STOP, line) == "Deprec", "the model ended it there"


async def answer_or_none(request) -> str | None:
    try:
        result = await request
    except JsonRpcException:  # cancelled by the next keystroke
        return None
    return result.items[0].insert_text if result.items else ""


async def test_a_keystroke_during_generation_never_yields_a_cut_off_suggestion(client, make_client, model_path, tmp_path):
    """VS Code cancels its request at every keystroke and sends a new one. A request that re-attaches
    to a generation cancelled that way must not get the text it had when it was interrupted."""
    answers: list[tuple[str, str, str]] = []  # (text before the cursor, after it, suggestion)
    abandoned = []
    for trial, (pause, length) in enumerate([(0.2, 2), (0.6, 3), (1.0, 4), (1.6, 6)]):
        after = f"\n\n\n# trial {trial}\n"  # the same prompt up to the cursor, another cache key
        text = BODY + after
        uri = open_doc(client, str(tmp_path / f"trial{trial}.py"), text)
        at = end_of(BODY)
        pending = asyncio.ensure_future(inline_completion(client, uri, at, msg_id=f"t{trial}-0"))
        await asyncio.sleep(pause)
        for n, char in enumerate("circle_area(radius)"[:length], start=1):
            client.protocol.notify(lsp.CANCEL_REQUEST, lsp.CancelParams(id=f"t{trial}-{n - 1}"))
            abandoned.append(pending)
            type_text(client, uri, n + 1, lsp.Position(at.line, at.character + n - 1), char)
            pending = asyncio.ensure_future(inline_completion(client, uri, lsp.Position(at.line, at.character + n), msg_id=f"t{trial}-{n}"))
            await asyncio.sleep(0.1)
        answer = await answer_or_none(pending)
        if answer:
            answers.append((BODY + "circle_area(radius)"[:length], after, answer))
    await asyncio.gather(*abandoned, return_exceptions=True)
    # What the model says at each of those places when nothing interrupts it (a fresh server).
    oracle = await make_client(env=server_env(QWEN_LSP_MODEL=str(model_path)))
    for number, (before, after, answer) in enumerate(answers):
        uri = open_doc(oracle, str(tmp_path / f"oracle{number}.py"), before + after)
        result = await inline_completion(oracle, uri, end_of(before))
        full = result.items[0].insert_text if result.items else ""
        assert not (answer != full and full.startswith(answer)), f"cut off: {answer!r} of {full!r}"


# An empty line in the middle of a body, its indentation already there (as an editor leaves it
# after Enter): the tokenizer joins a whitespace run's last space to the word after it, so a
# prompt that ends with the whole run is one the model never saw. It answered nothing, a comment,
# or code with one space too many (an IndentationError once accepted).
INDENTED_GAP = """class Printer:
    def __init__(self, indent=1, width=80, depth=None, stream=None):
        self._depth = depth
        self._indent_per_level = indent
        self._stream = stream
        @@
        self._sort_dicts = True

    def format(self, obj):
        return repr(obj)[: self._width]
"""


@pytest.mark.parametrize("indent", ["    ", "\t"], ids=["spaces", "tabs"])
async def test_a_suggestion_on_an_indented_empty_line_is_code_at_that_indentation(client, tmp_path, indent):
    source = INDENTED_GAP.replace("    ", indent)
    text = source.replace("@@", "")
    uri = open_doc(client, str(tmp_path / "printer.py"), text)
    at = position_of(source.replace("@@", "\0"), "\0")
    at = lsp.Position(at.line, at.character - 1)
    result = await inline_completion(client, uri, at)
    assert result.items, "no suggestion on an indented empty line"
    suggestion = result.items[0].insert_text
    assert suggestion[:1] not in (" ", "\t", "#"), f"code at the line's indentation, got {suggestion!r}"
    compile(source.replace("@@", suggestion), "printer.py", "exec")


NEXT_LINE_REPEATED = """def _set_new_attribute(cls, name, value):
    # Never overwrites an existing attribute.  Returns True if the
    # attribute already exists.
    if name in cls.__dict__:
        return True
    @@
    setattr(cls, name, value)
    return False
"""


async def test_a_blank_line_where_the_model_writes_the_next_line_again_gets_its_next_choice(client, tmp_path):
    """Issue 16's empty answers: on a blank line the model often sees nothing missing and writes
    the line below again, which is no suggestion (it would repeat the code after the cursor).
    The server asks once more with that start refused, from the prompt already read."""
    text = NEXT_LINE_REPEATED.replace("@@", "")
    uri = open_doc(client, str(tmp_path / "attributes.py"), text)
    result = await inline_completion(client, uri, position_of(NEXT_LINE_REPEATED.replace("@@", "\0"), "\0"))
    assert result.items, "no suggestion on the blank line"
    suggestion = result.items[0].insert_text
    assert suggestion.strip() and not suggestion.strip().startswith("setattr(cls, name, value)"), suggestion
    generated = [r for r in (await settled_status(client, 2))["recent"] if r["generated_tokens"]]
    if len(generated) > 1:  # asked again (the first answer can differ when the prompt was partly prefilled)
        assert generated[-1]["evaluated_tokens"] <= 2, generated  # the prompt was in the KV cache


class NextLineEngine(FakeEngine):
    """Answers every completion with the line after the cursor's, as the model did above."""

    def __init__(self, avoids_starts: bool) -> None:
        super().__init__()
        self.avoids_starts = avoids_starts
        self.requests: list[GenerationRequest] = []

    def generate(self, request, on_prompt_progress=None):
        self.requests.append(request)
        return super().generate(request, on_prompt_progress)

    def _serve(self, gen):
        gen.emit_text(" setattr(cls, name, value)\n")
        gen.stats.generated_tokens, gen.stats.stop_reason = 6, StopReason.STOP


@pytest.mark.parametrize("avoids_starts", [True, False], ids=["in-process", "remote"])
async def test_asking_again_after_a_repeated_next_line_only_where_the_engine_can_refuse_it(avoids_starts):
    """A remote server cannot refuse our token ids: asking it again would cost a second request
    for the same answer."""
    engine = NextLineEngine(avoids_starts)
    completer = Completer(lambda: engine)
    text = NEXT_LINE_REPEATED.replace("@@", "")
    doc = Document("file:///attributes.py", text, 1, "python")
    settings = Settings(completion_cold_prompt_ms=0)
    assert await completer.suggest(settings, doc, NEXT_LINE_REPEATED.index("@@")) is None
    asked = [r for r in engine.requests if r.max_tokens > 0]
    assert [r.avoid_start for r in asked] == ([""] + [" setattr(cls, name, value)"] if avoids_starts else [""]), asked
    engine.close()


async def test_a_cold_place_is_answered_from_a_small_window_and_the_full_one_warms_behind_it(make_client, model_path, tmp_path):
    """Issue 16: reading a whole window at a new place takes seconds. Past the cold budget the
    engine answers from the small window, the full one is read right after, and the next
    keystroke there is answered from the full window, warm."""
    options = {"completionMaxMs": 0, "completionColdPromptMs": 300, "completionColdContextTokens": 128}
    client = await make_client(env=server_env(QWEN_LSP_MODEL=str(model_path)), options=options)
    helpers = "".join(f"def helper_{i}(x):\n    return x * {i} + {i * 7}\n\n\n" for i in range(60))
    text = helpers + "def main(values):\n    total = 0\n    for value in values:\n        total += "
    uri = open_doc(client, str(tmp_path / "long.py"), text)
    result = await inline_completion(client, uri, end_of(text))
    assert result.items, "no suggestion from the small window"
    recent = (await settled_status(client))["recent"]
    answered = next((r for r in recent if r["generated_tokens"]), None)
    assert answered is not None and answered["fell_back"] and answered["prompt_tokens"] < 250, recent
    recent = (await settled_status(client, recent.index(answered) + 2, attempts=1200))["recent"]
    warmed = recent[recent.index(answered) + 1]
    assert not warmed["fell_back"] and warmed["prompt_tokens"] > 2 * answered["prompt_tokens"], warmed
    typed_char = "q" if not result.items[0].insert_text.startswith("q") else "z"  # not typed through
    type_text(client, uri, 2, end_of(text), typed_char)
    await inline_completion(client, uri, end_of(text + typed_char))
    for _ in range(600):
        typed = next((r for r in (await server_status(client))["recent"][len(recent) :] if r["generated_tokens"]), None)
        if typed is not None:
            break
        await asyncio.sleep(0.1)
    assert typed is not None, "the keystroke was not answered by the model"
    assert not typed["fell_back"] and typed["prompt_tokens"] >= warmed["prompt_tokens"], typed
    assert typed["evaluated_tokens"] < 20, typed


def test_a_block_cut_after_a_line_that_opens_a_block_ends_before_it():
    ctx = Context(Mode.BLOCK, "", "def f(n):\n", "", "    ", "    ", "    ", "")
    # Eight lines kept (MAX_BLOCK_LINES), the eighth opening a loop whose body is cut off.
    body = "".join(f"x{i} = {i}\n    " for i in range(7)) + "for i in range(n):\n        print(i)\n"
    assert postprocess.clean(body, ctx) == "".join(f"x{i} = {i}\n    " for i in range(7)).rstrip()
    assert postprocess.clean("if n:\n", ctx) == "if n:", "one line that opens a block is the user's to go on from"
