"""taskroll.online: serve rolling models online (Qlib's ``qlib.workflow.online``).

:class:`OnlineManager` runs the daily routine of one or more strategies
(:class:`RollingStrategy`) and replays history with ``simulate``;
:class:`OnlineToolR` keeps the online/offline tags and extends predictions.
"""

from taskroll.online.manager import OnlineManager
from taskroll.online.strategy import OnlineStrategy, RollingStrategy
from taskroll.online.tool import OnlineTool, OnlineToolR

__all__ = ["OnlineManager", "OnlineStrategy", "OnlineTool", "OnlineToolR", "RollingStrategy"]
