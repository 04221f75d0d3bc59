"""Hostile event content is refused at publish with one clear error, and the run goes on.

Every backend (memory, the machine's Redis, a private Valkey) refuses an event that cannot be
stored or sent: values that are not JSON, sequences past what every reader can count, ``gap``
markers. Everything published after the refused event still flows, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import pytest
from conftest import Factory, new_run

from dockrion_nb import EventBus
from dockrion_nb.events import (
    MAX_SEQUENCE,
    CheckpointEvent,
    CompleteEvent,
    CustomEvent,
    EventContentError,
    EventValidationError,
    TokenEvent,
    check_content,
    parse_event,
)


def cyclic() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    return d


def deep(levels: int) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for _ in range(levels):
        d = {"d": d}
    return d


NOT_JSON: list[tuple[Any, str]] = [
    (object(), r"checkpoint data\.o: object is not JSON \(use str\(\), a dict or a list\)"),
    (b"\xff\x00", r"checkpoint data\.o: bytes is not JSON \(decode it to str"),
    ({1, 2}, r"checkpoint data\.o: set is not JSON \(use a list\)"),
    (cyclic(), r"checkpoint data\.o\.self: a dict that contains itself is not JSON"),
    (deep(3000), r"checkpoint data\.o\.d\.d.*: nested deeper than 64 levels"),
    (math.nan, r"checkpoint data\.o: float nan is not JSON"),
    ({1: "x"}, r"checkpoint data\.o: key 1 \(int\) is not a JSON object key \(use str keys\)"),
    ("a\ud800b", r"checkpoint data\.o: str with a lone surrogate"),
]


@pytest.mark.parametrize(("value", "message"), NOT_JSON, ids=lambda v: type(v).__name__)
def test_values_that_are_not_json_are_named_with_their_path(value: Any, message: str) -> None:
    event = CheckpointEvent(run_id="r", name="n", data={"ok": [1, "x"], "o": value})
    with pytest.raises(EventContentError, match=message):
        check_content(event)


def test_json_values_pass() -> None:
    data = {"s": "héllo", "n": [1, 2.5, -3, True, None, {"k": "v"}], "t": (1, 2), "big": 2**80}
    check_content(CheckpointEvent(run_id="r", name="n", data=data))
    check_content(TokenEvent(run_id="r", content="ünïcode ✓"))


def test_custom_fields_and_token_text_are_checked_too() -> None:
    with pytest.raises(EventContentError, match=r"custom:probe blob: bytes is not JSON"):
        check_content(CustomEvent(run_id="r", type="custom:probe", blob=b"\x00"))
    with pytest.raises(EventContentError, match=r"token content: str with a lone surrogate"):
        check_content(TokenEvent(run_id="r", content="\udc80"))


def test_the_content_error_is_a_value_error() -> None:
    assert issubclass(EventContentError, EventValidationError)
    assert issubclass(EventContentError, ValueError)


async def test_every_backend_refuses_then_keeps_the_run_flowing(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        await bus.publish(run_id, TokenEvent(run_id=run_id, content="before"))
        for value, message in NOT_JSON:
            bad = CheckpointEvent(run_id=run_id, name="n", data={"o": value})
            with pytest.raises(EventContentError, match=message):
                await bus.publish(run_id, bad)
        with pytest.raises(EventContentError, match=r"custom:x blob: bytes"):
            await bus.publish_many(
                run_id,
                [
                    TokenEvent(run_id=run_id, content="never"),
                    CustomEvent(run_id=run_id, type="custom:x", blob=b"1"),
                ],
            )
        await bus.publish(run_id, TokenEvent(run_id=run_id, content="after"))
        await bus.publish(run_id, CompleteEvent(run_id=run_id))
        events = [e async for e in bus.subscribe(run_id, 1, live=False)]
    # nothing of a refused batch was stored; the run numbers on with no hole
    assert [(e.sequence, e.type) for e in events] == [(1, "token"), (2, "token"), (3, "complete")]


async def test_every_backend_refuses_gap_events(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        with pytest.raises(EventValidationError, match=r"'gap' events are made by subscribers"):
            await bus.publish(run_id, {"type": "gap", "from_sequence": 1})
        assert await bus.get_events(run_id) == []


@pytest.mark.parametrize("sequence", [MAX_SEQUENCE + 1, 2**70, -1, True])
def test_sequences_outside_the_countable_range_are_refused(sequence: Any) -> None:
    message = r"sequence must be an integer from 1 to 2\*\*53-1"
    with pytest.raises(EventValidationError, match=message):
        parse_event({"type": "token", "run_id": "r", "content": "x", "sequence": sequence})
    with pytest.raises(ValueError, match=message):
        TokenEvent(run_id="r", content="x", sequence=sequence)


async def test_every_backend_refuses_a_sequence_past_the_range(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        for sequence in (2**53, 2**70):
            with pytest.raises(EventValidationError, match=r"sequence must be an integer"):
                await bus.publish(run_id, {"type": "token", "content": "x", "sequence": sequence})
        top = await bus.publish(
            run_id, TokenEvent(run_id=run_id, content="x", sequence=MAX_SEQUENCE)
        )
        assert top.sequence == MAX_SEQUENCE
        with pytest.raises(EventValidationError, match=r"has reached the last sequence"):
            await bus.publish(run_id, TokenEvent(run_id=run_id, content="one too many"))
        events = await bus.get_events(run_id)
        assert [e.sequence for e in events] == [MAX_SEQUENCE]


async def test_dockrion_protocol_writes_are_checked_too(backend_factory: Factory) -> None:
    """``store_event``/``publish`` with a wire dict (how Dockrion's bus drives a backend)."""
    run_id = new_run(backend_factory)
    backend = backend_factory()
    try:
        bad = {"type": "token", "run_id": run_id, "content": "x", "sequence": 2**70}
        with pytest.raises(EventValidationError, match=r"sequence must be an integer"):
            await backend.store_event(run_id, bad)
        with pytest.raises(EventContentError, match=r"checkpoint data\.o: set is not JSON"):
            await backend.store_event(
                run_id, {"type": "checkpoint", "run_id": run_id, "sequence": 1, "data": {"o": {1}}}
            )
        with pytest.raises(EventContentError, match=r"checkpoint data\.o: set is not JSON"):
            await backend.publish(
                f"run:{run_id}",
                {"type": "checkpoint", "run_id": run_id, "sequence": 1, "data": {"o": {1}}},
            )
        assert await backend.get_events(run_id) == []
    finally:
        await backend.close()


async def test_dockrion_protocol_refuses_a_sequence_that_is_not_an_int(
    backend_factory: Factory,
) -> None:
    """A wire dict is stored as given, so its sequence must already be a number: a stored
    ``"7"`` would make every later read of the run fail in Dockrion's readers (they compare
    it with numbers). A 0 is stored as given, as Dockrion's bus writes a hand-made event."""
    run_id = new_run(backend_factory)
    backend = backend_factory()
    try:
        for seq in ("7", "0", 7.0):
            event = {"type": "token", "run_id": run_id, "content": "x", "sequence": seq}
            with pytest.raises(EventValidationError, match=r"invalid token event: sequence") as e:
                await backend.store_event(run_id, event)
            assert repr(seq) in str(e.value)
            with pytest.raises(EventValidationError, match=r"sequence"):
                await backend.publish(f"run:{run_id}", event)
            with pytest.raises(EventValidationError, match=r"sequence"):
                await backend.append(run_id, [event])
        assert await backend.get_events(run_id) == []
        zero = {"type": "token", "run_id": run_id, "content": "z", "sequence": 0}
        await backend.store_event(run_id, zero)
        assert await backend.get_events(run_id) == [zero]
        stored = await EventBus(backend).publish(run_id, {"type": "token", "content": "n"})
        assert stored.sequence == 1  # the bus numbers from what the run holds
    finally:
        await backend.close()


async def test_a_refused_sync_emit_raises_in_the_caller_and_the_run_goes_on() -> None:
    """``sync_checkpoint`` called inside a running loop queues its publish: the refusal still
    reaches the caller, not a log line."""
    from dockrion_nb import InMemoryBackend, StreamContext

    bus = EventBus(InMemoryBackend())
    ctx = StreamContext("sync-run", bus)
    ctx.sync_emit_token("a")
    with pytest.raises(EventContentError, match=r"checkpoint data\.o: object is not JSON"):
        ctx.sync_checkpoint("n", {"o": object()})
    ctx.sync_emit_token("b")
    await ctx.flush()
    await asyncio.sleep(0)
    assert [e.type for e in await bus.get_events("sync-run")] == ["token", "token"]


async def test_a_live_message_the_store_never_holds_is_skipped_not_delivered(
    backend_factory: Factory,
) -> None:
    """A message far ahead of the run, published but never stored (a stray writer, a bug),
    reaching a follower that waits live: it is not delivered, and the follower goes on with
    the stored events that follow."""
    run_id = new_run(backend_factory)
    backend = backend_factory()
    async with EventBus(backend) as bus:
        await bus.publish(run_id, TokenEvent(run_id=run_id, content="first"))
        follower = bus.subscribe(run_id, 1)
        got: list[tuple[int, str]] = []
        first_seen = asyncio.Event()

        async def read() -> None:
            async for event in follower:
                got.append((event.sequence, event.type))
                first_seen.set()
                if event.type == "complete":
                    # the follower looks at the store a few times more before it gives the
                    # stray up; keep reading so that happens (nothing else should arrive)
                    with contextlib.suppress(TimeoutError):
                        got.append(await asyncio.wait_for(_next(follower), 1.0))
                    return

        reader = asyncio.create_task(read())
        await asyncio.wait_for(first_seen.wait(), 5)
        await asyncio.sleep(0.2)  # the follower waits live now
        stray = {"type": "token", "run_id": run_id, "sequence": 500, "content": "stray"}
        await backend.publish(f"run:{run_id}", stray)  # Dockrion's protocol: delivery only
        await asyncio.sleep(0.05)
        for i in range(4):
            await bus.publish(run_id, TokenEvent(run_id=run_id, content=f"t{i}"))
        await bus.publish(run_id, CompleteEvent(run_id=run_id))
        await asyncio.wait_for(reader, 10)
        await follower.aclose()
    assert got == [
        (1, "token"),
        (2, "token"),
        (3, "token"),
        (4, "token"),
        (5, "token"),
        (6, "complete"),
    ]
    if backend_factory.kind != "memory":  # type: ignore[attr-defined]
        assert backend.describe()["skipped_messages"] == 1


async def _next(stream: Any) -> tuple[int, str]:
    event = await anext(stream)
    return (event.sequence, event.type)


async def test_followers_dropped_unclosed_are_released(backend_factory: Factory) -> None:
    """Subscriptions read once and then dropped (never closed) detach when collected, on
    every backend: nothing keeps queueing events for a reader that is gone."""
    import gc

    run_id = new_run(backend_factory)
    backend = backend_factory()
    async with EventBus(backend) as bus:
        await bus.publish(run_id, TokenEvent(run_id=run_id, content="x"))
        streams = []
        for _ in range(50):
            stream = bus.subscribe(run_id, 1)
            assert (await anext(stream)).sequence == 1
            streams.append(stream)
        for _ in range(100):  # Redis counts a follower once the server confirmed it
            if backend.subscriber_count(run_id) == 50:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.02)
        assert backend.subscriber_count(run_id) == 50  # type: ignore[attr-defined]
        del stream
        streams.clear()
        for _ in range(20):  # async generators are closed by the loop's finalizer hook
            gc.collect()
            await asyncio.sleep(0.01)
            if backend.subscriber_count(run_id) == 0:  # type: ignore[attr-defined]
                break
        assert backend.subscriber_count(run_id) == 0  # type: ignore[attr-defined]
