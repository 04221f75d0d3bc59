"""Local Redis Cluster and Sentinel deployments of private servers, for the tests and the bench.

``LocalCluster`` starts its nodes (three masters and a replica each, by default) with
``cluster-enabled yes`` on free loopback ports and builds the cluster with CLUSTER MEET,
ADDSLOTSRANGE and REPLICATE (no ``redis-cli`` needed), then waits until every node says
``cluster_state:ok`` and every replica is in sync. It can fail a master over (stop it; its
replica is promoted) and move a hash slot between masters while clients use it.

``LocalSentinel`` starts one master, one replica and three sentinels watching them.

Every process is a ``PrivateServer``: started here, stopped by its PID, its directory removed.
Admin commands block: call them from a thread (``asyncio.to_thread``) when an event loop must
keep running meanwhile.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .server import Kind, PrivateServer, free_port

SLOTS = 16384
# A replica syncs at once (diskless, with no wait for more replicas to join the transfer).
QUICK_SYNC = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")


# The password of each password-protected node we started, by port (admin commands AUTH).
_PASSWORDS: dict[int, str] = {}


def _client(port: int, timeout: float = 2.0) -> Any:
    import redis

    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=_PASSWORDS.get(port),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _info(port: int, section: str) -> dict[str, str]:
    """``INFO section`` as text values (redis-py parses numbers; we compare text)."""
    with contextlib.closing(_client(port)) as c:
        return {k: str(v) for k, v in c.info(section).items()}


def wait_until(what: str, check: Any, timeout: float, interval: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something true; its errors count as not yet."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise RuntimeError(f"{what} did not happen within {timeout:g} s (last error: {last!r})")


class LocalCluster:
    """A Redis Cluster of private servers: ``masters`` masters, ``replicas`` replicas each."""

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        *,
        prefer: Kind = "valkey",
        binary: str | None = None,
        node_timeout_ms: int = 1000,
        password: str | None = None,
    ) -> None:
        self.masters_wanted = masters
        self.password = password
        self.replicas_wanted = replicas
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-allow-replica-migration", "no",
            "--cluster-replica-validity-factor", "0",
            *QUICK_SYNC,
        ]  # fmt: skip
        # The cluster bus gets a free port of its own: the default, port + 10000, may be taken
        # or past 65535.
        self.nodes = []
        self.bus_ports: dict[int, int] = {}
        for _ in range(masters * (1 + replicas)):
            bus = free_port()
            auth = ["--masterauth", password] if password else []
            node = PrivateServer(
                prefer=prefer,
                binary=binary,
                password=password,
                args=[*args, *auth, "--cluster-port", str(bus)],
            )
            if password:
                _PASSWORDS[node.port] = password
            self.nodes.append(node)
            self.bus_ports[node.port] = bus
        self.binary = self.nodes[0].binary

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            self._build(timeout)
        except BaseException:
            self.close()
            raise

    def _build(self, timeout: float) -> None:
        first = self.nodes[0].port
        masters = self.nodes[: self.masters_wanted]
        ids = [self.node_id(n.port) for n in self.nodes]
        for epoch, node in enumerate(self.nodes, start=1):
            with contextlib.closing(_client(node.port)) as c:
                c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for node in self.nodes[1:]:
            with contextlib.closing(_client(node.port)) as c:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", first, self.bus_ports[first])
        per = SLOTS // len(masters)
        for i, node in enumerate(masters):
            low, high = i * per, (SLOTS - 1 if i == len(masters) - 1 else (i + 1) * per - 1)
            with contextlib.closing(_client(node.port)) as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
        total = len(self.nodes)
        wait_until(
            "every node meeting every other",
            lambda: all(len(self._nodes_lines(n.port)) == total for n in self.nodes),
            timeout,
        )
        for j, node in enumerate(self.nodes[len(masters) :]):
            master_id = ids[j % len(masters)]
            wait_until(
                "a replica accepting its master",
                lambda node=node, master_id=master_id: _client(node.port).execute_command(
                    "CLUSTER", "REPLICATE", master_id
                ),
                timeout,
            )
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says ``cluster_state:ok``, agrees on every slot's owner
        and every running replica is in sync with its master."""

        def healthy() -> bool:
            owners = None
            for node in self.running():
                if _info_cluster(node.port).get("cluster_state") != "ok":
                    return False
                slots = self.slot_owners(node.port)
                if owners is None:
                    owners = slots
                elif slots != owners:
                    return False
                info = _info(node.port, "replication")
                if node.port in owners.values() and not self._replicas_known(node):
                    return False
                if info.get("role") == "slave" and (
                    info.get("master_link_status") != "up"
                    or info.get("master_sync_in_progress") != "0"
                ):
                    return False
            return True

        wait_until("a healthy cluster", healthy, timeout)

    def _replicas_known(self, master: PrivateServer) -> bool:
        """The master has as many in-sync replicas as were asked for (a master whose replica
        was stopped and not restarted counts only the running ones)."""
        wanted = self.replicas_wanted - sum(
            1 for n in self.nodes if n.proc is None or n.proc.poll() is not None
        )
        connected = int(_info(master.port, "replication").get("connected_slaves", "0"))
        return connected >= max(0, min(self.replicas_wanted, wanted)) and len(
            self.replicas_of(master)
        ) >= min(connected, self.replicas_wanted)

    def running(self) -> list[PrivateServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def close(self) -> None:
        for node in self.nodes:
            node.close()
            _PASSWORDS.pop(node.port, None)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the cluster looks like ---------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        """The backend's URL: every node as a startup node."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}{hosts}/"

    def node_id(self, port: int) -> str:
        with contextlib.closing(_client(port)) as c:
            return _text(c.execute_command("CLUSTER", "MYID"))

    def _nodes_lines(self, port: int) -> list[list[str]]:
        with contextlib.closing(_client(port)) as c:
            raw = _text(c.execute_command("CLUSTER", "NODES"))
        return [line.split() for line in raw.splitlines() if line.strip()]

    def slot_owners(self, port: int | None = None) -> dict[int, int]:
        """Slot -> the port of the master that serves it, as one node (any running one) sees
        it; only slot ranges, so it is small: {first slot of each range: port}."""
        port = port or self.running()[0].port
        out: dict[int, int] = {}
        for fields in self._nodes_lines(port):
            flags = fields[2]
            if "master" not in flags or "fail" in flags:
                continue
            node_port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated or imported
                low = int(part.split("-")[0])
                out[low] = node_port
        return dict(sorted(out.items()))

    def keyslot(self, key: str) -> int:
        with contextlib.closing(_client(self.running()[0].port)) as c:
            return int(c.execute_command("CLUSTER", "KEYSLOT", key))

    def master_of_slot(self, slot: int) -> PrivateServer:
        for node in self.running():
            with contextlib.closing(_client(node.port)) as c:
                for low, high, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if int(low) <= slot <= int(high):
                        return self.node_at(int(primary[1]))
        raise RuntimeError(f"no master serves slot {slot}")

    def node_at(self, port: int) -> PrivateServer:
        return next(n for n in self.nodes if n.port == port)

    def replicas_of(self, master: PrivateServer) -> list[PrivateServer]:
        master_id = self.node_id(master.port)
        out = []
        for fields in self._nodes_lines(master.port):
            if fields[3] == master_id and "fail" not in fields[2]:
                out.append(self.node_at(int(fields[1].split("@")[0].rsplit(":", 1)[1])))
        return out

    def masters(self) -> list[PrivateServer]:
        owners = set(self.slot_owners().values())
        return [n for n in self.running() if n.port in owners]

    # -- faults and changes ------------------------------------------------------------------

    def fail_over(
        self, master: PrivateServer, *, sig: int = signal.SIGTERM, timeout: float = 30.0
    ) -> PrivateServer:
        """Stop ``master`` (SIGTERM: it first lets its replica catch up, as Redis does on
        shutdown); returns the replica that the cluster promotes in its place."""
        replicas = self.replicas_of(master)
        if not replicas:
            raise RuntimeError(f"master on port {master.port} has no replica to fail over to")
        master.stop(sig)
        ports = {r.port for r in replicas}

        def promoted() -> PrivateServer | None:
            for replica in replicas:
                if _info(replica.port, "replication").get("role") == "master":
                    owners = self.slot_owners(replica.port)
                    if replica.port in owners.values() and master.port not in owners.values():
                        return replica
            return None

        new_master: PrivateServer = wait_until(
            f"a replica ({sorted(ports)}) taking over from port {master.port}", promoted, timeout
        )
        wait_until(
            "every node seeing the new master",
            lambda: all(
                master.port not in self.slot_owners(n.port).values() for n in self.running()
            ),
            timeout,
        )
        return new_master

    def hand_over(self, master: PrivateServer, timeout: float = 30.0) -> PrivateServer:
        """A manual failover (CLUSTER FAILOVER on its replica): the master stays up and
        becomes the replica of the one it hands its slots to; returns the new master."""
        replica = self.replicas_of(master)[0]
        with contextlib.closing(_client(replica.port)) as c:
            c.execute_command("CLUSTER", "FAILOVER")
        wait_until(
            f"port {replica.port} taking over from port {master.port}",
            lambda: all(
                replica.port in self.slot_owners(n.port).values()
                and master.port not in self.slot_owners(n.port).values()
                for n in self.running()
            ),
            timeout,
        )
        return replica

    def rejoin(self, node: PrivateServer, timeout: float = 30.0) -> None:
        """Start a stopped node again: it rejoins the cluster (as a replica, if it was a master
        that was failed over) with the identity kept in its ``nodes.conf``."""
        node.start()
        self.wait_healthy(timeout)

    def move_slot(
        self, slot: int, target: PrivateServer, *, batch: int = 10, pause: float = 0.0
    ) -> None:
        """Move ``slot`` to the master ``target`` as ``redis-cli --cluster reshard`` does:
        IMPORTING/MIGRATING, MIGRATE of its keys in batches (``pause`` seconds apart, to
        stretch the time clients meet a slot half moved), then SETSLOT NODE everywhere."""
        source = self.master_of_slot(slot)
        if source.port == target.port:
            return
        source_id, target_id = self.node_id(source.port), self.node_id(target.port)
        with (
            contextlib.closing(_client(source.port, 10.0)) as src,
            contextlib.closing(_client(target.port, 10.0)) as dst,
        ):
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while True:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                time.sleep(pause)
                auth = ["AUTH", self.password] if self.password else []
                src.execute_command(
                    "MIGRATE",
                    "127.0.0.1",
                    target.port,
                    "",
                    0,
                    5000,
                    "REPLACE",
                    *auth,
                    "KEYS",
                    *keys,
                )
            time.sleep(pause)
            dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.masters():
            if node.port not in (source.port, target.port):
                with contextlib.closing(_client(node.port)) as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        wait_until(
            f"every node seeing slot {slot} on port {target.port}",
            lambda: all(self._owner_seen(n.port, slot) == target.port for n in self.running()),
            10.0,
        )

    def _owner_seen(self, port: int, slot: int) -> int | None:
        with contextlib.closing(_client(port)) as c:
            for low, high, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if int(low) <= slot <= int(high):
                    return int(primary[1])
        return None


def _info_cluster(port: int) -> dict[str, str]:
    with contextlib.closing(_client(port)) as c:
        raw = _text(c.execute_command("CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in raw.splitlines() if ":" in line)


class SentinelProcess(PrivateServer):
    """``<server> sentinel.conf --sentinel``: a sentinel watching ``service``."""

    def __init__(
        self,
        master_port: int,
        *,
        service: str,
        binary: str,
        down_after_ms: int,
        failover_timeout_ms: int,
    ) -> None:
        super().__init__(binary=binary)
        self.config = Path(self.dir) / "sentinel.conf"
        self.config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.dir}",
                    f"sentinel monitor {service} 127.0.0.1 {master_port} 2",
                    f"sentinel down-after-milliseconds {service} {down_after_ms}",
                    f"sentinel failover-timeout {service} {failover_timeout_ms}",
                    f"sentinel parallel-syncs {service} 1",
                    "",
                ]
            )
        )

    def command(self) -> list[str]:
        return [self.binary, str(self.config), "--sentinel", "--logfile", "server.log"]


class LocalSentinel:
    """One master, ``replicas`` replicas, ``sentinels`` sentinels (quorum 2) on loopback."""

    def __init__(
        self,
        *,
        service: str = "dnbmaster",
        replicas: int = 1,
        sentinels: int = 3,
        prefer: Kind = "valkey",
        binary: str | None = None,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
    ) -> None:
        self.service = service
        first = PrivateServer(prefer=prefer, binary=binary, args=QUICK_SYNC)
        self.binary = first.binary
        replicaof = [*QUICK_SYNC, "--replicaof", "127.0.0.1", str(first.port)]
        self._data = [first] + [
            PrivateServer(binary=self.binary, args=replicaof) for _ in range(replicas)
        ]
        self.master = first  # the current master: kill_master moves it
        self.sentinels = [
            SentinelProcess(
                self.master.port,
                service=service,
                binary=self.binary,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
            for _ in range(sentinels)
        ]

    @property
    def servers(self) -> list[PrivateServer]:
        """The data nodes (master and replicas), in the order they were made."""
        return list(self._data)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self, timeout: float = 30.0) -> None:
        try:
            for server in self.servers:
                server.start()
            for replica in self.running_replicas():
                wait_until(
                    "the replica syncing",
                    lambda r=replica: (
                        _info(r.port, "replication").get("master_link_status") == "up"
                        and _info(r.port, "replication").get("master_sync_in_progress") == "0"
                    ),
                    timeout,
                )
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_watched(timeout)
        except BaseException:
            self.close()
            raise

    def wait_watched(self, timeout: float = 30.0) -> None:
        """Until every running sentinel knows the master, its replicas and the other
        sentinels (a failover needs the quorum to agree)."""
        want_sentinels = len(self.running_sentinels()) - 1

        def watched() -> bool:
            for sentinel in self.running_sentinels():
                with contextlib.closing(_client(sentinel.port)) as c:
                    state = c.sentinel_master(self.service)
                if int(state.get("num-other-sentinels", 0)) < want_sentinels:
                    return False
                if int(state.get("num-slaves", 0)) < len(self.running_replicas()):
                    return False
                if state.get("is_sdown") or state.get("is_odown"):
                    return False
            return True

        wait_until("the sentinels watching the master", watched, timeout, interval=0.1)

    def running_sentinels(self) -> list[SentinelProcess]:
        return [s for s in self.sentinels if s.proc is not None and s.proc.poll() is None]

    def running_replicas(self) -> list[PrivateServer]:
        return [
            r
            for r in self._data
            if r is not self.master and r.proc is not None and r.proc.poll() is None
        ]

    def master_port(self) -> int:
        """The master's port as the sentinels report it."""
        for sentinel in self.running_sentinels():
            with contextlib.suppress(Exception), contextlib.closing(_client(sentinel.port)) as c:
                _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                return int(port)
        raise RuntimeError("no sentinel answers")

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Until every running replica has acknowledged every write the master has taken."""
        replicas = len(self.running_replicas())
        with contextlib.closing(_client(self.master.port, timeout + 1)) as c:
            acked = int(c.execute_command("WAIT", replicas, int(timeout * 1000)))
        if acked < replicas:
            raise RuntimeError(f"{acked} of {replicas} replicas caught up within {timeout:g} s")

    def kill_master(self, timeout: float = 30.0) -> PrivateServer:
        """SIGKILL the master; returns the replica the sentinels promote."""
        old = self.master
        old.kill()
        new_port = wait_until(
            "the sentinels promoting a replica",
            lambda: (p := self.master_port()) != old.port and p,
            timeout,
            interval=0.05,
        )
        new = next(s for s in self.servers if s.port == new_port)
        wait_until(
            "the new master taking writes",
            lambda: _info(new.port, "replication").get("role") == "master",
            timeout,
        )
        self.master = new
        return new

    def close(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.close()

    def __enter__(self) -> LocalSentinel:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def local_cluster(**kwargs: Any) -> Iterator[LocalCluster]:
    cluster = LocalCluster(**kwargs)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


__all__ = [
    "LocalCluster",
    "LocalSentinel",
    "SentinelProcess",
    "free_port",
    "local_cluster",
    "wait_until",
]
