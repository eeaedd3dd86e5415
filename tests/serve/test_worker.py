"""The engine worker on the real tiny engine: arrival order, and cancels that stay with their
own turn."""

from __future__ import annotations

import queue

from smolchat.backend.local import LocalBackend
from smolchat.backend.types import ChatMessage, Conversation, GenerationRequest
from smolchat.engine.types import SamplingParams
from smolchat.serve.worker import Delta, Done, EngineWorker, Job, Refused, Started, StopFilter


def _job(text: str, max_new: int) -> tuple[Job, queue.Queue]:
    items: queue.Queue = queue.Queue()
    request = GenerationRequest(
        Conversation((ChatMessage("user", text),)),
        sampling=SamplingParams(temperature=0.0),
        max_new_tokens=max_new,
    )
    return Job(request, items.put), items


def _until_done(items: queue.Queue) -> list:
    out = []
    while not out or not isinstance(out[-1], Done | Refused):
        out.append(items.get(timeout=60))
    return out


def test_cancelling_a_finished_turn_does_not_stop_the_next_one(tiny_engine):
    """The server cancels a turn when its handler ends; after the turn is over that must not
    reach the engine (the backend ties the token to engine.cancel), or a queued client's reply
    is cut short: found by two clients at once on the SmolLM2 GGUF."""
    worker = EngineWorker(LocalBackend(tiny_engine))
    try:
        first, first_items = _job("Hello", 2)
        second, second_items = _job("Paris", 12)
        worker.submit(first)
        worker.submit(second)
        assert isinstance(_until_done(first_items)[-1], Done)
        while not isinstance(second_items.get(timeout=60), Delta):
            pass  # the second turn is generating now
        first.cancel()  # what the first request's handler does as it ends
        end = _until_done(second_items)[-1]
        assert isinstance(end, Done)
        assert (end.finish_reason, end.stats.generated_tokens) == ("length", 12)
    finally:
        worker.close()


def test_turns_run_in_arrival_order_and_a_cancelled_queued_one_never_starts(tiny_engine):
    worker = EngineWorker(LocalBackend(tiny_engine))
    try:
        jobs = [_job(text, 3) for text in ("one", "two", "three")]
        jobs[1][0].cancel()  # its client left while it waited
        for job, _ in jobs:
            worker.submit(job)
        ends = [_until_done(items) for _, items in jobs]
        assert isinstance(ends[0][0], Started) and ends[0][-1].stats.generated_tokens == 3
        assert ends[1][-1].finish_reason == "cancelled" and ends[1][-1].stats.generated_tokens == 0
        assert ends[2][-1].stats.generated_tokens == 3
        assert worker.waiting == 0
    finally:
        worker.close()


def test_stop_filter_holds_back_a_possible_start_and_cuts_at_the_stop():
    f = StopFilter(["END", "\n\n"])
    assert f.feed("Paris E") == "Paris "  # "E" may begin END
    assert f.feed("N") == ""
    assert f.feed("Dless") == "" and f.stopped
    g = StopFilter(["END"])
    assert g.feed("a E") == "a " and g.feed("x") == "Ex" and g.flush() == ""
    assert StopFilter([]).feed("anything") == "anything"
