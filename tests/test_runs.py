"""RunManager, Run, RunStatus: Dockrion's lifecycle API; on Redis the state is shared by every
process (a hash per run with the stream's TTL), in memory it is the backend's, in-process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis
from conftest import URL_FIXTURES, redis_cleanup

from dockrion_nb import EventBus, InMemoryBackend, Run, RunManager, RunStatus
from dockrion_nb.backends.redis import RedisBackend
from dockrion_nb.runs import RunNotFoundError, RunValidationError
from dockrion_nb.runstore import list_runs_with_status
from dockrion_nb.tables import RunTable

Factory = Callable[..., EventBus]


@pytest.fixture(params=["memory", "redis", "cluster", "sentinel"])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Buses on one store: one memory backend, or new Redis backends on one server, a local
    cluster or a Sentinel-managed master."""
    kind = request.param
    url = request.getfixturevalue(URL_FIXTURES[kind]) if kind != "memory" else None
    memory = InMemoryBackend()
    buses: list[EventBus] = []

    def make(ttl: int = 600) -> EventBus:
        if url is None:
            bus = EventBus(memory)
        else:
            bus = EventBus(RedisBackend(url, stream_ttl_seconds=ttl))
            buses.append(bus)
        return bus

    make.kind = kind  # type: ignore[attr-defined]
    make.used = []  # type: ignore[attr-defined]
    yield make
    for bus in buses:
        await bus.close()
    if url is not None and make.used:  # type: ignore[attr-defined]
        redis_cleanup(url, *make.used)  # type: ignore[attr-defined]


def new_id(factory: Factory) -> str:
    rid = f"r-{uuid.uuid4().hex[:12]}"
    factory.used.append(rid)  # type: ignore[attr-defined]
    return rid


async def test_a_run_goes_accepted_running_completed_with_its_events(make_bus: Factory) -> None:
    bus = make_bus()
    manager = RunManager(bus, agent_name="invoice", framework="langgraph")
    run = await manager.create_run(new_id(make_bus), metadata={"user": "ana"})
    assert run.status is RunStatus.ACCEPTED and run.completed_at is None
    await manager.start_run(run.run_id)
    assert run.status is RunStatus.RUNNING  # the object handed out follows, as in Dockrion
    ctx = await manager.get_context(run.run_id)
    assert ctx is not None and await ctx.emit_token("hi") is not None
    await manager.set_result(run.run_id, {"answer": 42}, latency_seconds=0.5, metadata={"n": 1})
    assert run.status is RunStatus.COMPLETED and run.output == {"answer": 42}
    assert run.metadata == {"user": "ana", "n": 1} and run.completed_at is not None
    events = await bus.get_events(run.run_id)
    assert [e.type for e in events] == ["started", "token", "complete"]
    assert events[0].agent_name == "invoice"  # type: ignore[attr-defined]
    assert events[2].output == {"answer": 42}  # type: ignore[attr-defined]
    assert manager.is_terminal(run.run_id) and manager.is_terminal("never-made")
    stats = manager.get_stats()
    assert stats["completed"] == 1 and stats["total"] == 1
    body = (await manager.get_run(run.run_id)).to_response()  # type: ignore[union-attr]
    assert body["status"] == "completed" and body["output"] == {"answer": 42}
    assert body["created_at"] == run.created_at.isoformat()


async def test_failure_and_cancellation_record_their_status(make_bus: Factory) -> None:
    manager = RunManager(make_bus())
    failed = await manager.create_run(new_id(make_bus))
    await manager.start_run(failed.run_id)
    await manager.set_error(failed.run_id, "boom", code="ValueError", details={"at": "n2"})
    assert failed.status is RunStatus.FAILED
    assert failed.error == {"message": "boom", "code": "ValueError", "details": {"at": "n2"}}
    stopped = await manager.create_run(new_id(make_bus))
    await manager.cancel_run(stopped.run_id, reason="user")
    assert stopped.status is RunStatus.CANCELLED
    await manager.update_status(stopped.run_id, RunStatus.RUNNING)  # unchecked, as in Dockrion
    assert (await manager.get_run(stopped.run_id)).status is RunStatus.RUNNING  # type: ignore[union-attr]
    types = [e.type for e in await make_bus().get_events(failed.run_id)]
    assert types == ["started", "error"]
    assert [e.type for e in await make_bus().get_events(stopped.run_id)] == ["cancelled"]
    newest = manager.list_runs()
    assert [r.run_id for r in newest] == [stopped.run_id, failed.run_id]
    assert [r.run_id for r in manager.list_runs(RunStatus.FAILED)] == [failed.run_id]
    assert manager.list_runs(limit=1) == newest[:1]


async def test_errors_keep_dockrions_words_and_are_its_validation_error(
    make_bus: Factory,
) -> None:
    from dockrion_common import ValidationError

    manager = RunManager(make_bus())
    rid = new_id(make_bus)
    checks = [
        (manager.start_run(rid), r"^Run '.+' not found"),
        (manager.set_result(rid, {}), r"^Run '.+' not found"),
        (manager.cancel_run(rid), r"^Run '.+' not found"),
    ]
    for call, pattern in checks:
        with pytest.raises(RunNotFoundError, match=pattern) as info:
            await call
        assert isinstance(info.value, ValidationError) and isinstance(info.value, LookupError)
        assert "not found" in str(info.value).lower()  # what Dockrion's runtime matches on
    await manager.create_run(rid)
    with pytest.raises(ValidationError, match=rf"^Run ID '{rid}' already exists"):
        await manager.create_run(rid)
    await manager.start_run(rid)
    with pytest.raises(RunValidationError, match=rf"^Run '{rid}' already started \(status: "):
        await manager.start_run(rid)
    await manager.set_result(rid, {})
    with pytest.raises(ValidationError, match=rf"^Run '{rid}' is already finished \(status: "):
        await manager.cancel_run(rid)
    assert RunManager(make_bus()).get_stats()["total"] >= 0


async def test_run_ids_follow_dockrions_rule_with_its_messages() -> None:
    manager = RunManager(EventBus(InMemoryBackend()))
    generated = await manager.create_run()
    assert uuid.UUID(generated.run_id).version == 4
    for bad, words in [
        ("_internal", "^Run ID cannot start with underscore"),
        ("x" * 129, "^Run ID must be 128 characters or less"),
        ("a b", "^Run ID must contain only alphanumeric characters"),
        ("ok\n", "^Run ID must contain only alphanumeric characters"),
    ]:
        with pytest.raises(RunValidationError, match=words):
            await manager.create_run(bad)
    closed = RunManager(EventBus(InMemoryBackend()), allow_client_ids=False)
    with pytest.raises(RunValidationError, match=r"^Client-provided run IDs are not allowed"):
        await closed.create_run("mine")
    assert (await closed.create_run()).status is RunStatus.ACCEPTED


def test_errors_are_plain_value_errors_when_dockrion_is_not_loaded() -> None:
    code = (
        "import asyncio, sys\n"
        "from dockrion_nb import EventBus, InMemoryBackend, RunManager\n"
        "async def main():\n"
        "    try:\n"
        "        await RunManager(EventBus(InMemoryBackend())).start_run('nope')\n"
        "    except ValueError as exc:\n"
        "        print(type(exc).__mro__[1].__name__, 'dockrion_common' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["RunValidationError", "False"]


async def test_managers_on_one_memory_backend_share_its_runs() -> None:
    bus = EventBus(InMemoryBackend())
    a, b = RunManager(bus), RunManager(bus)
    run = await a.create_run("shared-1")
    await b.start_run("shared-1")  # b never created it: it gets a context on demand
    assert run.status is RunStatus.RUNNING and await b.get_run("shared-1") is run
    await b.create_run("only-accepted")
    rows = await list_runs_with_status(bus)
    assert {(r.run_id, r.run_status, r.event_count) for r in rows} == {
        ("shared-1", "running", 1),
        ("only-accepted", "accepted", 0),
    }
    table = repr(RunTable(rows, "memory"))
    assert "run status" in table.splitlines()[1] and "accepted" in table
    a.cleanup_run("shared-1")
    assert await b.get_run("shared-1") is None and b.get_stats()["total"] == 1


# -- Redis: the state in a hash, seen by every process -------------------------------------------


@pytest.fixture
def redis_ids(redis_url: str) -> Iterator[list[str]]:
    used: list[str] = []
    yield used
    redis_cleanup(redis_url, *used)


async def test_run_state_is_a_hash_with_the_streams_ttl_renewed_by_appends(
    redis_url: str, redis_ids: list[str]
) -> None:
    rid = f"h-{uuid.uuid4().hex[:12]}"
    redis_ids.append(rid)
    bus = EventBus(RedisBackend(redis_url, stream_ttl_seconds=300))
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        manager = RunManager(bus, agent_name="agent")
        await manager.create_run(rid, metadata={"k": "v"})
        state = raw.hgetall(f"runstate:run:{rid}")
        assert state["status"] == "accepted" and state["run_id"] == rid
        assert state["metadata"] == '{"k": "v"}' and state["agent_name"] == "agent"
        assert "completed_at" not in state and 290 <= raw.ttl(f"runstate:run:{rid}") <= 300
        raw.expire(f"runstate:run:{rid}", 20)  # as if the last status write were long ago
        ctx = await manager.get_context(rid)
        await ctx.emit_token("x")  # type: ignore[union-attr]
        assert 290 <= raw.ttl(f"runstate:run:{rid}") <= 300  # the append renewed it
        assert raw.type(f"runstate:run:{rid}") == "hash"
        listed = await bus.list_runs(rid)  # SCAN stream:run:* never picks the hash up
        assert [r.run_id for r in listed] == [rid] and listed[0].event_count == 1
        await bus.clear_run(rid)  # events only, as in Dockrion
        assert raw.exists(f"runstate:run:{rid}")
        await manager.remove_run(rid)
        assert not raw.exists(f"runstate:run:{rid}") and await manager.get_run(rid) is None
    finally:
        raw.close()
        await bus.close()


async def test_a_second_backend_sees_and_drives_the_run(
    redis_url: str, redis_ids: list[str]
) -> None:
    rid = f"h-{uuid.uuid4().hex[:12]}"
    redis_ids.append(rid)
    api, worker = (EventBus(RedisBackend(redis_url, stream_ttl_seconds=300)) for _ in range(2))
    try:
        front = RunManager(api, agent_name="invoice")
        run = await front.create_run(rid)
        back = RunManager(worker)
        await back.start_run(rid)  # started event carries the creator's agent name
        await back.set_result(rid, {"total": 3})
        assert run.status is RunStatus.ACCEPTED  # a copy in another "process"...
        assert await front.get_run(rid) is run and run.status is RunStatus.COMPLETED  # ...refreshed
        events = await api.get_events(rid)
        assert [e.type for e in events] == ["started", "complete"]
        assert events[0].agent_name == "invoice"  # type: ignore[attr-defined]
        assert {r.run_id: r.status for r in await front.all_runs()}[rid] is RunStatus.COMPLETED
        rows = {r.run_id: r.run_status for r in await list_runs_with_status(api, rid)}
        assert rows == {rid: "completed"}
    finally:
        await api.close()
        await worker.close()


async def test_only_one_of_two_racing_starts_wins(redis_url: str, redis_ids: list[str]) -> None:
    rid = f"h-{uuid.uuid4().hex[:12]}"
    redis_ids.append(rid)
    buses = [EventBus(RedisBackend(redis_url, stream_ttl_seconds=300)) for _ in range(4)]
    try:
        await RunManager(buses[0]).create_run(rid)
        outcomes = await asyncio.gather(
            *(RunManager(b).start_run(rid) for b in buses), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, RunValidationError)]
        assert outcomes.count(None) == 1 and len(refused) == 3
        assert all("already started (status: RunStatus.RUNNING)" in str(o) for o in refused)
        assert [e.type for e in await buses[0].get_events(rid)] == ["started"]
    finally:
        for bus in buses:
            await bus.close()


async def test_a_state_another_writer_broke_is_a_clear_error(
    redis_url: str, redis_ids: list[str]
) -> None:
    rid = f"h-{uuid.uuid4().hex[:12]}"
    redis_ids.append(rid)
    raw = redis.Redis.from_url(redis_url)
    bus = EventBus(RedisBackend(redis_url))
    try:
        raw.hset(f"runstate:run:{rid}", mapping={"run_id": rid, "status": "exploded"})
        manager = RunManager(bus)
        with pytest.raises(ValueError, match=rf"run state of '{rid}' is not a run: status"):
            await manager.get_run(rid)
        assert rid not in {r.run_id for r in await manager.all_runs()}  # skipped, logged
        raw.hset(f"runstate:run:{rid}", mapping={"status": "running", "output": "{nope"})
        with pytest.raises(ValueError, match="field 'output' is not JSON"):
            await manager.get_run(rid)
    finally:
        raw.close()
        await bus.close()


async def test_output_that_is_not_json_is_refused_before_anything_changes(
    redis_url: str, redis_ids: list[str]
) -> None:
    rid = f"h-{uuid.uuid4().hex[:12]}"
    redis_ids.append(rid)
    bus = EventBus(RedisBackend(redis_url))
    try:
        manager = RunManager(bus)
        await manager.create_run(rid)
        with pytest.raises(ValueError, match=rf"output of run '{rid}' cannot be stored.*not JSON"):
            await manager.set_result(rid, {"when": object()})
        assert (await manager.get_run(rid)).status is RunStatus.ACCEPTED  # type: ignore[union-attr]
        assert await bus.get_events(rid) == []
    finally:
        await bus.close()


async def test_cleanup_run_on_redis_deletes_the_state_from_a_task(
    redis_url: str, redis_ids: list[str]
) -> None:
    rid = f"h-{uuid.uuid4().hex[:12]}"
    redis_ids.append(rid)
    bus = EventBus(RedisBackend(redis_url))
    try:
        manager = RunManager(bus)
        await manager.create_run(rid)
        manager.cleanup_run(rid)
        assert manager.list_runs() == []
        await manager.aclose()
        assert await RunManager(bus).get_run(rid) is None
    finally:
        await bus.close()


WORKER = """
import asyncio, sys
from dockrion_nb import EventBus, RunManager
from dockrion_nb.backends.redis import RedisBackend

async def main(url, run_id):
    bus = EventBus(RedisBackend(url, stream_ttl_seconds=300))
    manager = RunManager(bus)
    await manager.start_run(run_id)
    ctx = await manager.get_context(run_id)
    for word in ["a", "b", "c"]:
        await ctx.emit_token(word)
    await manager.set_result(run_id, {"words": 3}, latency_seconds=0.1)
    await bus.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_another_process_runs_what_this_one_created_and_this_one_sees_it(
    redis_url: str, redis_ids: list[str]
) -> None:
    rid = f"h-{uuid.uuid4().hex[:12]}"
    redis_ids.append(rid)
    bus = EventBus(RedisBackend(redis_url, stream_ttl_seconds=300))
    try:
        manager = RunManager(bus, agent_name="creator")
        run = await manager.create_run(rid, metadata={"from": "parent"})
        follower = bus.subscribe(rid)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, redis_url, rid, stderr=subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        seen = []
        async for event in follower:
            seen.append(event.type)
            if event.is_terminal:
                break
        assert seen == ["started", "token", "token", "token", "complete"]
        assert await manager.get_run(rid) is run
        assert run.status is RunStatus.COMPLETED and run.output == {"words": 3}
        assert run.metadata == {"from": "parent"} and manager.get_stats()["completed"] == 1
        with pytest.raises(RunValidationError, match="is already finished"):
            await manager.cancel_run(rid)
    finally:
        await bus.close()


def test_run_model_is_dockrions() -> None:
    from dockrion_events import Run as TheirRun

    ours = Run(run_id="r1", metadata={"a": 1})
    theirs = TheirRun(run_id="r1", metadata={"a": 1}, created_at=ours.created_at)
    assert ours.model_dump() == theirs.model_dump()
    assert ours.to_response() == theirs.to_response()
    assert [s.value for s in RunStatus] == [
        "accepted",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
