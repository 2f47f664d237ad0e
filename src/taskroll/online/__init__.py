"""taskroll.online: serve rolling models online (Qlib's ``qlib.workflow.online``).

:class:`OnlineManager` runs the daily routine of one or more strategies
(:class:`RollingStrategy`) and replays history with ``simulate``;
:class:`OnlineToolR` keeps the online/offline tags; :class:`PredUpdater` and
:class:`LabelUpdater` extend a model's predictions and labels to new data;
:func:`served_report` evaluates what was served.
"""

from taskroll.online.evaluation import ServedReport, evaluate_signals
from taskroll.online.manager import OnlineManager
from taskroll.online.report import realised_labels, served_report
from taskroll.online.strategy import OnlineStrategy, RollingStrategy
from taskroll.online.tool import OnlineTool, OnlineToolR
from taskroll.online.update import LabelUpdater, PredUpdater

__all__ = ["LabelUpdater", "OnlineManager", "OnlineStrategy", "OnlineTool", "OnlineToolR",
           "PredUpdater", "RollingStrategy", "ServedReport", "evaluate_signals",
           "realised_labels", "served_report"]
