"""Store URLs made safe to show: passwords masked for ``repr``, logs and error messages."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["mask_url"]


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log).

    Handles ``scheme://user:password@host/...`` URLs (including several hosts, as in
    MongoDB replica-set URLs), secret query options (``password=``, ``token=``,
    ``secret=``, ``...key=``, ``auth=``; not ``authSource=``), and libpq ``key=value`` connection strings.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _SECRET_OPTION.sub(r"\1=***", url)
    if parts.password is None:
        return _SECRET_OPTION.sub(r"\1=***", url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    netloc = f"{user}:***@{host}"
    query = _SECRET_OPTION.sub(r"\1=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_SECRET_OPTION = re.compile(
    r"\b(password|passwd|token|secret|[a-z_]*key|auth|auth_?token|authorization)=[^&\s]+",
    re.IGNORECASE)
