"""Store URLs made safe to show: passwords masked for ``repr``, logs and error messages."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["mask_url"]


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log).

    Handles ``scheme://user:password@host/...`` URLs (including several hosts, as in
    MongoDB replica-set URLs), ``password=`` query options, and libpq ``key=value``
    connection strings.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"password=\S+", "password=***", url)
    if parts.password is None:
        return re.sub(r"password=[^&\s]+", "password=***", url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    netloc = f"{user}:***@{host}"
    query = re.sub(r"password=[^&]+", "password=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
