"""Run state in Redis: one hash per run, ``runstate:run:{run_id}``, next to the run's stream
(on a cluster ``runstate:run:{stream:run:ID}``, in the stream's hash slot: ``keys.KeyLayout``).

Fields are strings: ``run_id``, ``status``, ``created_at`` and ``completed_at`` (ISO 8601),
``output``, ``error`` and ``metadata`` (JSON), ``agent_name`` and ``framework``; absent when
unset. The hash expires with the stream: every write sets ``stream_ttl_seconds`` and every
append to the run's stream renews it (the append script), so a run that outlives a write by
more than the TTL keeps its state as long as it keeps its events.

The key cannot collide with Dockrion's (``stream:run:*``, channel ``events:run:*``) or our
counter (``seq:run:*``): run ids have no ``:``, and ``list_runs``' ``SCAN MATCH stream:run:*``
never matches another prefix. This layer knows fields, not ``Run`` (that is ``dockrion_nb.runs``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from .backend import RedisBackend

# KEYS: the state hash. ARGV: ttl, mode ('create': only if absent; 'update': only if present),
# the statuses an update may start from (comma separated, '' = any), then field/value pairs.
# Returns {outcome, status before}: outcome 'ok', 'exists', 'missing' or 'refused'.
WRITE_LUA = """
local key = KEYS[1]
local current = redis.call('HGET', key, 'status')
local exists = redis.call('EXISTS', key) == 1
if not current then current = '' end
if ARGV[2] == 'create' then
  if exists then return {'exists', current} end
else
  if not exists then return {'missing', ''} end
  if ARGV[3] ~= '' and not string.find(',' .. ARGV[3] .. ',', ',' .. current .. ',', 1, true) then
    return {'refused', current}
  end
end
if #ARGV > 3 then redis.call('HSET', key, unpack(ARGV, 4)) end
redis.call('EXPIRE', key, tonumber(ARGV[1]))
return {'ok', current}
"""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisRunStates:
    """Reads and writes run-state hashes through a backend's connection pool."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._client = backend.command_client
        self._write = self._client.register_script(WRITE_LUA)

    @property
    def ttl_seconds(self) -> int:
        return self._backend.stream_ttl_seconds

    async def write(
        self,
        run_id: str,
        fields: Mapping[str, str],
        *,
        create: bool = False,
        allowed_from: Collection[str] = (),
    ) -> tuple[str, str]:
        """Set ``fields`` in one step: a new hash (``create``; refused if the run exists), or
        an existing one whose status is one of ``allowed_from`` (any when empty). Returns the
        outcome (``ok``/``exists``/``missing``/``refused``) and the status before."""
        self._backend.check_open()
        args: list[str | int] = [
            self.ttl_seconds,
            "create" if create else "update",
            ",".join(allowed_from),
        ]
        for name, value in fields.items():
            args += [name, value]
        try:
            outcome, before = await self._write(
                keys=[self._backend.layout.runstate(run_id)], args=args
            )
        except (RedisError, OSError) as exc:
            raise self._backend.error_for(exc, f"writing the state of run {run_id!r}") from None
        return _text(outcome), _text(before)

    async def read(self, run_id: str) -> dict[str, str] | None:
        """The run's fields, or None when it has no state (never created, expired, removed)."""
        self._backend.check_open()
        try:
            raw = await self._client.hgetall(self._backend.layout.runstate(run_id))
        except (RedisError, OSError) as exc:
            raise self._backend.error_for(exc, f"reading the state of run {run_id!r}") from None
        return {_text(k): _text(v) for k, v in raw.items()} or None

    async def statuses(self, run_ids: Sequence[str]) -> list[str | None]:
        """The ``status`` of each run (None: no state), in one round trip."""
        if not run_ids:
            return []
        self._backend.check_open()
        try:
            pipe = self._client.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hget(self._backend.layout.runstate(run_id), "status")
            replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._backend.error_for(exc, "reading run states") from None
        return [None if r is None else _text(r) for r in replies]

    async def scan(self, pattern: str | None = None) -> list[dict[str, str]]:
        """Every run state on the server (``pattern`` globs the run id), found with SCAN."""
        self._backend.check_open()
        try:
            keys = []
            seen: set[bytes] = set()
            async for key in self._client.scan_iter(
                match=self._backend.layout.runstate(pattern or "*"), count=1000, _type="HASH"
            ):
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
            out: list[dict[str, str]] = []
            for start in range(0, len(keys), 200):
                pipe = self._client.pipeline(transaction=False)
                for key in keys[start : start + 200]:
                    pipe.hgetall(key)
                for raw in await pipe.execute():
                    fields = {_text(k): _text(v) for k, v in raw.items()}
                    if fields:
                        out.append(fields)
        except (RedisError, OSError) as exc:
            raise self._backend.error_for(exc, "listing run states") from None
        return out

    async def delete(self, run_id: str) -> None:
        self._backend.check_open()
        try:
            await self._client.delete(self._backend.layout.runstate(run_id))
        except (RedisError, OSError) as exc:
            raise self._backend.error_for(exc, f"removing the state of run {run_id!r}") from None
