"""Save an object to a file and load it back (Qlib's ``qlib.utils.serial.Serializable``).

``to_pickle`` writes atomically (a reader or a crash sees the old file or the new
one, never a part); ``load`` unpickles, so load only files you wrote yourself:
unpickling runs code chosen by whoever wrote the file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Self


class Serializable:
    """Mixin giving :meth:`to_pickle` and :meth:`load` to an object that pickles."""

    def to_pickle(self, path: str | os.PathLike[str]) -> Path:
        """Save the object to ``path`` atomically.

        Returns:
            The path written.
        """
        target = Path(path)
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with staging.open("wb") as handle:
                pickle.dump(self, handle, protocol=pickle.HIGHEST_PROTOCOL)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, target)
        finally:
            staging.unlink(missing_ok=True)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Load an object saved by :meth:`to_pickle` (a trusted file only: it is unpickled).

        Raises:
            TypeError: When the file holds an object of another class.
        """
        with Path(path).open("rb") as handle:
            loaded = pickle.load(handle)  # the user's own file, by contract
        if not isinstance(loaded, cls):
            raise TypeError(f"{path} holds a {type(loaded).__name__}, not an {cls.__name__}")
        return loaded
