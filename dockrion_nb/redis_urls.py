"""Which Redis deployment a URL names: one server, a Redis Cluster or a Sentinel-managed master.

- ``redis://``, ``rediss://``, ``unix://``: one server (redis-py parses these itself).
- ``redis+cluster://[user:password@]host:port,host:port[/][?pubsub=auto|sharded|classic]``:
  a Redis Cluster (or Valkey cluster); the hosts are startup nodes, any reachable one is
  enough to find the rest. A cluster has one database, so the path is empty, ``/`` or ``/0``.
- ``redis+sentinel://[user:password@]host:port,host:port/service_name[/db][?sentinel_password=..]``:
  the master that the sentinels at those addresses name ``service_name``; the user and
  password are the master's, ``sentinel_password`` (and ``sentinel_username``) the sentinels'.

Ports default to 6379 (cluster) and 26379 (sentinel). Everything else is refused with a
message that names what is wrong and shows the URL with its passwords masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote

from .redaction import mask_url, remember, scrub

Topology = Literal["single", "cluster", "sentinel"]
PubSubMode = Literal["auto", "sharded", "classic"]

CLUSTER_SCHEME = "redis+cluster"
SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_PORTS = {CLUSTER_SCHEME: 6379, SENTINEL_SCHEME: 26379}
CLUSTER_OPTIONS = ("pubsub",)
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
PUBSUB_MODES: tuple[PubSubMode, ...] = ("auto", "sharded", "classic")

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_HOST = re.compile(
    r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>\d*))?$"
)
_SERVICE = re.compile(r"^[A-Za-z0-9._-]+$")


class RedisURLError(ValueError):
    """A Redis URL that names no deployment we can reach; the message masks passwords."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(scrub(message, url))


@dataclass(frozen=True)
class RedisTarget:
    """A parsed cluster or Sentinel URL (a single server's URL is left to redis-py)."""

    topology: Topology
    url: str = field(repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    pubsub: PubSubMode = "auto"
    sentinel_username: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)


def topology_of(url: str) -> Topology:
    """``single``, ``cluster`` or ``sentinel``, from the scheme alone (no validation)."""
    match = _SCHEME.match(url.strip())
    scheme = match["scheme"].lower() if match else ""
    if scheme == CLUSTER_SCHEME:
        return "cluster"
    if scheme == SENTINEL_SCHEME:
        return "sentinel"
    return "single"


def parse_redis_url(url: str) -> RedisTarget:
    """The deployment ``url`` names; raises ``RedisURLError`` saying what is wrong."""
    url = url.strip()
    remember(url)  # its password is masked in any text from now on, however it is quoted
    match = _SCHEME.match(url)
    scheme = match["scheme"].lower() if match else ""
    if scheme not in DEFAULT_PORTS:
        if scheme.endswith(("+cluster", "+sentinel")):
            raise RedisURLError(
                f"unsupported Redis URL scheme {scheme!r} in {mask_url(url)}: use "
                "redis+cluster:// or redis+sentinel:// (TLS to a cluster or Sentinel is not "
                "supported yet)",
                url,
            )
        return RedisTarget("single", url)
    assert match is not None
    # As in any URL (and redis-py's own parsing): the authority ends at the first / ? or #,
    # so a password with those characters in it must be percent-encoded.
    rest = url[match.end() :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    tail = tail.partition("#")[0]
    pathpart, _, query = tail.partition("?")
    userinfo, at, hosts_text = authority.rpartition("@")
    if not at:
        userinfo, hosts_text = "", authority
    slash, path = pathpart[:1], pathpart[1:]
    username, password = _credentials(userinfo)
    nodes = _nodes(hosts_text, DEFAULT_PORTS[scheme], url)
    options = _options(
        query, CLUSTER_OPTIONS if scheme == CLUSTER_SCHEME else SENTINEL_OPTIONS, url
    )
    if scheme == CLUSTER_SCHEME:
        if path not in ("", "0"):
            raise RedisURLError(
                f"a Redis Cluster has one database (0), not {path!r}, in {mask_url(url)}: "
                "end the URL after the hosts (redis+cluster://h1:7000,h2:7001/)",
                url,
            )
        mode = options.get("pubsub", "auto")
        if mode not in PUBSUB_MODES:
            raise RedisURLError(
                f"pubsub={mode!r} in {mask_url(url)} is not a Pub/Sub mode: use auto "
                "(sharded where the servers support it), sharded or classic",
                url,
            )
        return RedisTarget(
            "cluster",
            url,
            nodes,
            username=username,
            password=password,
            pubsub=mode,
        )
    service, _, db_text = path.partition("/")
    if not slash or not service:
        raise RedisURLError(
            f"no service name in {mask_url(url)}: a Sentinel URL names the master's service "
            "after the hosts (redis+sentinel://h1:26379,h2:26379/mymaster/0)",
            url,
        )
    if not _SERVICE.fullmatch(service):
        raise RedisURLError(
            f"service name {service!r} in {mask_url(url)} is not a name sentinels use "
            "(letters, digits, '.', '_' or '-')",
            url,
        )
    db_text = db_text.rstrip("/")
    if db_text and not db_text.isdigit():
        raise RedisURLError(
            f"database {db_text!r} in {mask_url(url)} is not a number: end with /0, /1, ...",
            url,
        )
    return RedisTarget(
        "sentinel",
        url,
        nodes,
        service=service,
        db=int(db_text or 0),
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, sep, password = userinfo.partition(":")
    if not sep:  # redis://secret@host: redis-py takes a lone part as the password
        return None, unquote(user)
    return unquote(user) or None, unquote(password)


def _nodes(text: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise RedisURLError(
            f"no host list in {mask_url(url)}: give host:port pairs separated by commas "
            "(redis+cluster://h1:7000,h2:7001/)",
            url,
        )
    nodes = []
    for part in parts:
        found = _HOST.fullmatch(part)
        port_text = found["port"] if found else None
        if found is None or port_text == "":
            raise RedisURLError(f"{part!r} in {mask_url(url)} is not host:port", url)
        port = int(port_text) if port_text else default_port
        if not 0 < port < 65536:
            raise RedisURLError(
                f"port {port} of {part!r} in {mask_url(url)} is out of range (1..65535)", url
            )
        nodes.append((found["ipv6"] or found["name"], port))
    return tuple(nodes)


def _options(query: str, allowed: tuple[str, ...], url: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise RedisURLError(
                f"unknown option {key!r} in {mask_url(url)}: this kind of URL takes "
                + ", ".join(allowed),
                url,
            )
        out[key] = value
    return out


__all__ = [
    "PUBSUB_MODES",
    "PubSubMode",
    "RedisTarget",
    "RedisURLError",
    "Topology",
    "parse_redis_url",
    "topology_of",
]
