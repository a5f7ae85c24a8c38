"""Bounded soaks: thousands of completion requests typed into a document, most cancelled within
milliseconds, explains mixed in, a settings change that rebuilds the engine and a TCP reconnect
with a request in flight inside the storm. Every request is answered, the server's memory stops growing
after warm-up, and no thread, task or pending request is left behind. (`python -m
bench soak` runs the same soak as a command and writes a report with a plot.)"""

from __future__ import annotations

from bench.soak import SoakOptions, SoakResult, run_soak, summary
from tests.conftest import server_env

MB = 1_000_000


def check(result: SoakResult, rss_growth_limit: int) -> None:
    print("\n" + summary(result))
    assert result.stalled_at is None, f"the server stopped answering after request {result.stalled_at}"
    assert result.unanswered == 0, "requests were left without an answer"
    assert result.unanswered_explains == 0, "explain requests were left without an answer"
    assert result.failed == 0, "requests failed"
    assert result.served + result.cancelled == result.sent
    assert result.cancelled > 0, "the cancellation storm cancelled nothing"
    assert result.explains > 0
    # The storm's events happened: the engine was rebuilt under queued requests, and a client
    # hung up on a request in flight and connected again (what came after it was answered).
    assert (result.settings_changes, result.reconnects, result.abandoned) == (1, 1, 1)
    # Nothing accumulates inside the server: no task, pending request or thread left behind.
    assert result.inside_after == result.inside_before
    assert result.threads[-1][1] == result.threads[0][1]
    # Memory: RSS stops growing. With the model it swings by tens of MB as buffers come and go
    # (llama.cpp, the allocator), so the peaks of the two halves of the run are compared: a leak
    # raises the second one.
    half = len(result.rss) // 2
    first, second = max(rss for _, rss in result.rss[:half]), max(rss for _, rss in result.rss[half:])
    assert second - first < rss_growth_limit, f"RSS peaked at {first / MB:.1f} MB, then at {second / MB:.1f} MB"


async def test_plumbing_soak_with_a_cancellation_storm():
    # The fake engine keeps the model out so that 3,000 requests fit in CI time.
    result = await run_soak(SoakOptions(engine="fake", requests=3000, explain_every=100), env=server_env())
    check(result, rss_growth_limit=4 * MB)


async def test_real_model_soak(model_path):
    result = await run_soak(
        SoakOptions(engine="local", requests=160, explain_every=20, samples=32, answer_timeout=900.0),
        env=server_env(QWEN_LSP_MODEL=str(model_path)),
    )
    check(result, rss_growth_limit=32 * MB)
    assert result.served > 0
