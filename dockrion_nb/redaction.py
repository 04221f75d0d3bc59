"""Masking credentials: a password in a Redis URL never reaches output, logs or errors."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]*)@"
)


def mask_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0``.

    A URL with only a user part (``redis://secret@host``) is masked whole, since redis-py
    reads a lone user part as a password.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username if parts.password is not None else ""
    netloc = f"{user}:***@{host}" if user else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scrub(text: str, *urls: str) -> str:
    """Replace every given URL's secret, and any ``scheme://user:pw@`` form, in ``text``."""
    for url in urls:
        masked = mask_url(url)
        if masked != url:
            text = text.replace(url, masked)
            parts = urlsplit(url)
            if parts.password:
                text = text.replace(parts.password, "***")
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
