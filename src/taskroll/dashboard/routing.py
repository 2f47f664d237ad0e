"""Routing on the path as the browser sent it, so that a pool name may hold a ``/``.

Servers hand an application the percent-decoded path, where ``/pool/a%2Fb`` has become
``/pool/a/b`` and no longer matches ``/pool/{pool}``. :class:`EncodedPathRouting` routes
on the received path instead (``raw_path``), each segment re-encoded in one canonical
form, so a path parameter is one encoded segment; :func:`path_value` decodes it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send


def encoded_path(scope: Scope) -> str:
    """The request path with each segment percent-encoded (``/`` inside a name stays ``%2F``)."""
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes):  # a server without raw_path: the decoded path, re-encoded
        return "/".join(quote(part, safe="") for part in str(scope["path"]).split("/"))
    return "/".join(quote(unquote_to_bytes(part).decode("utf-8", "replace"), safe="")
                    for part in raw.split(b"/"))


class EncodedPathRouting:
    """ASGI middleware: route on :func:`encoded_path` instead of the decoded path.

    Args:
        app: The application to call.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the application with ``path`` replaced by its encoded form."""
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "path": encoded_path(scope)}
        await self.app(scope, receive, send)


def path_value(request: Request, name: str) -> str:
    """The decoded value of the path parameter ``name`` (a pool name, a task id)."""
    value: Any = request.path_params[name]
    return unquote(str(value))
