"""Inert references to things that live outside a task pool, and credential-free URLs.

A task result may name an MLflow run (a trained recorder). The pool stores it as a
:class:`RecorderReference`: a run id and the tracking URI *without credentials*.
Decoding a pool gives back this inert object; it opens nothing, imports nothing
from :mod:`taskroll.train` and is safe to print. The train layer turns it into a
live recorder (``Recorder.from_reference``), and only for tracking stores the
reading process is configured for, with the reader's own credentials.

:func:`strip_credentials` removes the user/password part of a URL and query
options that look like secrets (``password=``, ``token=``, ``secret=``, ``...key=``):
what is left is stored in pools and compared against configured URIs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from taskroll.errors import SerializationError
from taskroll.store.urls import mask_url

__all__ = ["RecorderReference", "strip_credentials"]

#: Query option names (lower case, substring match) treated as secrets.
_SECRET_OPTION = re.compile(r"pass|pwd|secret|token|key|credential|auth", re.IGNORECASE)
#: Longest run id and tracking URI accepted from a pool.
MAX_RUN_ID_LENGTH = 256
MAX_URI_LENGTH = 4096


def strip_credentials(url: str) -> str:
    """Return ``url`` without ``user:password@`` and without secret-looking query options.

    Only those parts are cut; the rest of the string is kept byte for byte (so
    ``sqlite:////abs/path.db`` stays as it is).

    Args:
        url: Any URL or plain path.

    Returns:
        The URL with credentials removed (unchanged when it has none).
    """
    head, separator, tail = url.partition("://")
    if not separator:
        return url
    end = len(tail)
    for stop in "/?#":
        position = tail.find(stop)
        if position != -1:
            end = min(end, position)
    netloc, rest = tail[:end], tail[end:]
    netloc = netloc.rpartition("@")[2]
    path, question, query = rest.partition("?")
    if question:
        query, hash_mark, fragment = query.partition("#")
        options = [option for option in query.split("&")
                   if option and not _SECRET_OPTION.search(option.partition("=")[0])]
        rest = path + ("?" + "&".join(options) if options else "") + hash_mark + fragment
    return f"{head}://{netloc}{rest}"


@dataclass(frozen=True)
class RecorderReference:
    """An MLflow run named by a task result: run id and credential-free tracking URI.

    Inert: building, comparing or printing it opens no store. Turn it into a live
    recorder with ``taskroll.train.recorder.Recorder.from_reference(reference)``,
    which accepts only the tracking stores this process is configured for.

    Attributes:
        run_id: The MLflow run id.
        tracking_uri: The store holding the run, without credentials; ``None`` means
            "the reader's configured store".
    """

    run_id: str
    tracking_uri: str | None = None

    #: Codec tag; any class with this attribute and ``to_reference()`` is stored as one.
    __taskroll_reference__: ClassVar[str] = "recorder"

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not 0 < len(self.run_id) <= MAX_RUN_ID_LENGTH:
            raise SerializationError("a recorder reference needs a run id: a string of 1 to "
                                     f"{MAX_RUN_ID_LENGTH} characters")
        if self.tracking_uri is not None:
            if not isinstance(self.tracking_uri, str) or len(self.tracking_uri) > MAX_URI_LENGTH:
                raise SerializationError("a recorder reference's tracking URI must be a string of "
                                         f"at most {MAX_URI_LENGTH} characters")
            object.__setattr__(self, "tracking_uri", strip_credentials(self.tracking_uri))

    @property
    def id(self) -> str:
        """The run id (as ``Recorder.id``)."""
        return self.run_id

    def to_reference(self) -> dict[str, str | None]:
        """Return the JSON form stored in pools."""
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri}

    @classmethod
    def from_payload(cls, payload: Any) -> RecorderReference:
        """Validate the JSON form of a reference (from a pool, so untrusted).

        Args:
            payload: ``{"run_id": str, "tracking_uri": str | None}``.

        Returns:
            The reference, its URI stripped of credentials.

        Raises:
            SerializationError: When the payload has another shape.
        """
        if not isinstance(payload, dict) or not set(payload) <= {"run_id", "tracking_uri"}:
            raise SerializationError("a recorder reference must be {'run_id', 'tracking_uri'}, "
                                     f"got {type(payload).__name__}")
        return cls(payload.get("run_id"), payload.get("tracking_uri"))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        uri = None if self.tracking_uri is None else mask_url(self.tracking_uri)
        return f"RecorderReference(run_id={self.run_id!r}, tracking_uri={uri!r})"

    __str__ = __repr__
