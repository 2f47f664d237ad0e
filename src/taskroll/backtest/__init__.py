"""A daily backtest of a signal: top-k dropout, trading costs, limits and risk analysis.

Qlib's names and meaning (``TopkDropoutStrategy``, ``Exchange``'s cost and limit
settings, ``risk_analysis``), simplified to daily bars from a panel; each module
states what it leaves out. :class:`~taskroll.train.port_record.PortAnaRecord` runs
it on a recorder's predictions.
"""

from taskroll.backtest.exchange import Exchange
from taskroll.backtest.report import cumulative_return_png, excess_return_analysis, risk_analysis
from taskroll.backtest.simulator import backtest_daily, benchmark_returns
from taskroll.backtest.strategy import Decision, TopkDropoutStrategy

__all__ = ["Decision", "Exchange", "TopkDropoutStrategy", "backtest_daily",
           "benchmark_returns", "cumulative_return_png", "excess_return_analysis",
           "risk_analysis"]
