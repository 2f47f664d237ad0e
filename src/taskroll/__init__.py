"""taskroll: generate, store, train, collect and serve many models over rolling windows."""

from taskroll.config import get_settings, init
from taskroll.errors import TaskrollError

__version__ = "0.1.0"
__all__ = ["TaskrollError", "__version__", "get_settings", "init"]
