"""Masking credentials: a password in a Redis URL never reaches output, logs or errors.

One function, ``mask_url``, for every form redis-py (and valkey-py) accepts, parsed the way a
leak would need it, not the way a valid URL is parsed: everything between ``scheme://`` and
the last ``@`` is the userinfo (so unencoded ``/``, ``#``, ``?`` or ``@`` in a generated
password are still inside it), and ``password=`` query arguments are masked too. A URL that
cannot be parsed at all is masked the same way. ``scrub`` applies it to any text; errors,
``repr``\\s and log lines of this package pass through it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")
# A URL inside a longer text: up to whitespace, a quote or an angle bracket.
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]*")
_SECRET_ARG = re.compile(
    r"(?P<key>[?&;](?:[a-z_]*_)?(?:password|passwd|pass|pwd|auth|token|access_token)=)"
    r"(?P<value>[^&#;\s]*)",
    re.IGNORECASE,
)
_PLAIN_USER = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=-]+")
# Where a URL parser would cut a password with unencoded delimiters in it; a parser's error may
# quote any of the pieces (as a "port", say).
_DELIMITERS = re.compile(r"[/#?@:\[\]]")
MASK = "***"
KNOWN_SECRETS_MAX = 64
"""Passwords remembered from the URLs this process has seen (``remember``), oldest dropped."""
_MIN_KNOWN = 4  # shorter secrets would mask ordinary words in unrelated log lines
_known: dict[str, None] = {}  # insertion-ordered set


def _mask_args(text: str) -> str:
    return _SECRET_ARG.sub(lambda m: m["key"] + MASK, text)


def mask_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0``.

    A userinfo with no password part (``redis://secret@host``) or an empty user
    (``redis://:secret@host``) is masked whole (``redis://***@host``): redis-py may send a lone
    user part as the credential. ``?password=...`` becomes ``?password=***``.
    """
    match = _SCHEME.match(url)
    head, rest = (url[: match.end()], url[match.end() :]) if match else ("", url)
    at = rest.rfind("@")
    if at >= 0:
        userinfo, host = rest[:at], rest[at + 1 :]
        user, sep, _ = userinfo.partition(":")
        keep_user = bool(sep) and _PLAIN_USER.fullmatch(user) is not None
        rest = f"{user}:{MASK}@{host}" if keep_user else f"{MASK}@{host}"
    return head + _mask_args(rest)


def secrets_of(url: str) -> list[str]:
    """The password (as written and decoded) and query secrets of ``url``, longest first."""
    found: list[str] = []
    match = _SCHEME.match(url)
    rest = url[match.end() :] if match else url
    at = rest.rfind("@")
    if at >= 0:
        user, sep, password = rest[:at].partition(":")
        secret = password if sep else user
        found += [secret, *_DELIMITERS.split(secret)]
    found += [m["value"] for m in _SECRET_ARG.finditer(rest)]
    out = {s for s in found if len(s) >= 3} | {unquote(s) for s in found if len(unquote(s)) >= 3}
    return sorted(out, key=len, reverse=True)


def remember(url: str) -> None:
    """Keep ``url``'s password, so ``scrub`` removes it from any later text even where no URL
    pattern finds it (a password with a quote or a space in it, quoted in a ``repr``, cuts the
    URL short). Called for every Redis URL the package parses or is given to mask."""
    match = _SCHEME.match(url)
    rest = url[match.end() :] if match else url
    user, sep, password = rest[: max(rest.rfind("@"), 0)].partition(":")
    found = [password if sep else user] + [m["value"] for m in _SECRET_ARG.finditer(rest)]
    for secret in found:
        for form in (secret, unquote(secret)):
            if len(form) >= _MIN_KNOWN and form not in _known:
                _known[form] = None
                if len(_known) > KNOWN_SECRETS_MAX:
                    del _known[next(iter(_known))]


def scrub(text: str, *urls: str) -> str:
    """``text`` with every URL in it masked, and the secrets of each given URL (and of every
    URL remembered earlier) removed wherever else they appear (an error that quotes a
    password on its own)."""
    for url in urls:
        if not url:
            continue
        remember(url)
        masked = mask_url(url)
        if masked != url:
            text = text.replace(url, masked)
        for secret in secrets_of(url):
            text = text.replace(secret, MASK)
    text = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return _mask_args(text)


class ScrubbingFilter(logging.Filter):
    """Masks URLs in a log record's message and arguments before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = record.getMessage()
            except (TypeError, ValueError):
                record.msg = str(record.msg)
            record.args = None
        record.msg = scrub(str(record.msg))
        return True


_FILTER = ScrubbingFilter()


def masked_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records are scrubbed: what the package's modules log
    with, so no log line shows a password."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


__all__ = [
    "MASK",
    "ScrubbingFilter",
    "mask_url",
    "masked_logger",
    "remember",
    "scrub",
    "secrets_of",
]
