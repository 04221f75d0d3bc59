"""No secret is ever shown: every form of Redis URL is masked in every message, repr and log.

One masking function (``dockrion_nb.redaction.mask_url``) covers every form redis-py accepts:
a password in the userinfo (with or without a user, percent-encoded or with unencoded ``/``,
``#``, ``?`` or ``@`` in it), a ``password=`` query argument, unix sockets, URLs redis-py
cannot even parse. ``scrub`` applies it to any text.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from dockrion_nb import cli
from dockrion_nb.backends.base import BackendConnectionError
from dockrion_nb.config import ConfigError, RedisStreamingConfig, StreamingConfig, load_dockfile
from dockrion_nb.redaction import mask_url, scrub

PW = "Zx9-s3cr3t"

URL_FORMS = [
    (f"redis://user:{PW}@host:6379/0", "redis://user:***@host:6379/0"),
    (f"redis://:{PW}@host:6379/0", "redis://***@host:6379/0"),
    (f"rediss://default:{PW}@host:6380", "rediss://default:***@host:6380"),
    (f"redis://{PW}@host", "redis://***@host"),  # a lone user part: redis-py may send it
    (f"redis://host:6379/0?password={PW}", "redis://host:6379/0?password=***"),
    (f"redis://host/0?db=1&password={PW}&x=1", "redis://host/0?db=1&password=***&x=1"),
    (f"redis://u:{PW}@host/0?password={PW}", "redis://u:***@host/0?password=***"),
    ("redis://:ab/c#d?e@host:6379/0", "redis://***@host:6379/0"),  # unencoded / # ?
    ("redis://:p@ss@host:6379", "redis://***@host:6379"),  # unencoded @
    ("redis://:pa%2Fss@host", "redis://***@host"),
    (f"unix://:{PW}@/tmp/redis.sock?db=0", "unix://***@/tmp/redis.sock?db=0"),
    (f"unix:///tmp/redis.sock?password={PW}", "unix:///tmp/redis.sock?password=***"),
    (
        f"redis+sentinel://:{PW}@h1:26379,h2:26379/mymaster/0",
        "redis+sentinel://***@h1:26379,h2:26379/mymaster/0",
    ),
    (
        f"redis+sentinel://u:{PW}@h1,h2/mymaster/0?sentinel_password={PW}",
        "redis+sentinel://u:***@h1,h2/mymaster/0?sentinel_password=***",
    ),
    (
        f"redis+cluster://app:{PW}@10.0.0.1:7000,10.0.0.2:7001/",
        "redis+cluster://app:***@10.0.0.1:7000,10.0.0.2:7001/",
    ),
    (
        f"redis+cluster://:{PW}@h1:7000,[::1]:7001/?pubsub=classic",
        "redis+cluster://***@h1:7000,[::1]:7001/?pubsub=classic",
    ),
    (f"redis://[::1:{PW}@host", "redis://***@host"),  # not parsable at all
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
]


@pytest.mark.parametrize(("url", "shown"), URL_FORMS)
def test_every_url_form_is_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize(("url", "shown"), URL_FORMS)
def test_scrub_masks_any_url_inside_a_message(url: str, shown: str) -> None:
    text = f"cannot reach Redis at {url} while connecting (timeout)"
    assert scrub(text) == f"cannot reach Redis at {shown} while connecting (timeout)"


def test_scrub_removes_a_known_urls_password_wherever_it_appears() -> None:
    url = f"redis://u:{PW}@host"
    assert PW not in scrub(f"AUTH {PW} failed for {url}", url)


def test_config_repr_and_str_mask_the_url() -> None:
    cfg = StreamingConfig.from_mapping(
        {"backend": "redis", "redis": {"url": f"redis://default:{PW}@h:6379/0"}}
    )
    for text in (repr(cfg), str(cfg), repr(cfg.redis), str(cfg.redis)):
        assert PW not in text and "redis://default:***@h:6379/0" in text
    assert cfg.redis is not None and cfg.redis.url.endswith(f"{PW}@h:6379/0")  # data kept


def test_config_errors_never_echo_a_password(tmp_path: Path) -> None:
    dockfile = tmp_path / "Dockfile.yaml"
    dockfile.write_text(f"streaming:\n  backend: redis\n  redis: redis://:{PW}@host:6379\n")
    with pytest.raises(ConfigError) as info:
        load_dockfile(dockfile)
    assert PW not in str(info.value) and "redis://***@host:6379" in str(info.value)
    with pytest.raises(ValueError) as err:
        RedisStreamingConfig(url=f"redis://:{PW}@h", stream_ttl_seconds=1)
    assert PW not in str(err.value)


def test_backend_errors_mask_whatever_they_are_given() -> None:
    error = BackendConnectionError(f"cannot reach redis://:{PW}@h:1 (refused)", backend="redis")
    assert PW not in str(error) and PW not in error.message


def test_an_invalid_url_error_never_shows_the_password() -> None:
    from dockrion_nb.backends.redis import RedisBackend

    for url in (f"redis://:{PW}/x#y@host:notaport/0", f"redis://[::1:{PW}@host"):
        with pytest.raises(BackendConnectionError) as info:
            RedisBackend(url)
        assert PW not in str(info.value)
        assert "invalid Redis URL" in str(info.value)


def test_the_cli_never_prints_a_query_password() -> None:
    out, err = io.StringIO(), io.StringIO()
    url = f"redis://127.0.0.1:1/0?password={PW}"
    code = cli.main(["runs", "--url", url], environ={}, stdout=out, stderr=err)
    assert code == 2
    assert PW not in out.getvalue() + err.getvalue()
    assert "password=***" in err.getvalue()


@pytest.fixture
def ip(ipython: Any) -> Iterator[object]:
    shell = ipython
    shell.run_line_magic("load_ext", "dockrion_nb")
    try:
        yield shell
    finally:
        shell.run_line_magic("unload_ext", "dockrion_nb")


def test_stream_backend_never_shows_a_query_password(
    ip: object, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{redis_url}?password=" if "?" not in redis_url else f"{redis_url}&password="
    # the machine's Redis has no password: a wrong one is refused, and must not be shown
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("stream_backend", f"redis --url {url}{PW}")  # type: ignore[attr-defined]
    assert PW not in str(info.value)
    assert PW not in capsys.readouterr().out


def test_log_lines_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    from dockrion_nb.redaction import masked_logger

    log = masked_logger("dockrion_nb.test-secrets")
    with caplog.at_level(logging.INFO, logger="dockrion_nb.test-secrets"):
        log.info("connecting to %s", f"redis://:{PW}@host")
        log.warning(f"retrying redis://u:{PW}@host?password={PW}")
    assert PW not in caplog.text and "redis://***@host" in caplog.text


@pytest.mark.parametrize("password", [f"a'{PW}", f'a"{PW}', f"a {PW}", f"a`{PW}"])
def test_a_password_that_cuts_a_url_short_is_still_scrubbed_from_log_lines(
    password: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A quote or space in a password ends the URL where a text scan looks for it; the
    password of a URL the package has parsed is removed from any later text all the same."""
    from dockrion_nb.backends.redis import RedisBackend
    from dockrion_nb.redaction import masked_logger

    url = f"redis://:{password}@127.0.0.1:1/0"
    RedisBackend(url)
    cfg = StreamingConfig.from_mapping({"backend": "redis", "redis": {"url": url}})
    log = masked_logger("dockrion_nb.test-secrets")
    with caplog.at_level(logging.INFO, logger="dockrion_nb.test-secrets"):
        log.info("settings %r", {"url": url})
        log.info("plain %s and alone %s", url, password)
    for text in (caplog.text, scrub(f"cfg(url={url!r})"), scrub(str(cfg.redis.__dict__))):
        assert PW not in text


def test_cluster_and_sentinel_backends_never_show_a_password() -> None:
    from dockrion_nb.backends.redis import RedisBackend

    cluster = RedisBackend(f"redis+cluster://app:{PW}@127.0.0.1:1,127.0.0.1:2/")
    sentinel = RedisBackend(f"redis+sentinel://:{PW}@127.0.0.1:1/mymaster/0?sentinel_password={PW}")
    for backend in (cluster, sentinel):
        assert PW not in repr(backend.describe()) and PW not in backend.masked_url
    with pytest.raises(BackendConnectionError) as info:
        RedisBackend(f"redis+cluster://:{PW}@127.0.0.1:bad/")
    assert PW not in str(info.value) and "is not host:port" in str(info.value)


async def test_a_cluster_that_cannot_be_reached_is_one_masked_message() -> None:
    from servers import free_port

    from dockrion_nb.backends.redis import RedisBackend

    backend = RedisBackend(f"redis+cluster://:{PW}@127.0.0.1:{free_port()}/", connect_timeout=0.5)
    try:
        with pytest.raises(BackendConnectionError) as info:
            await backend.ping()
        assert PW not in str(info.value) and "redis+cluster://***@127.0.0.1" in str(info.value)
    finally:
        await backend.close()
