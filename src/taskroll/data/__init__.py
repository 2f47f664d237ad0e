"""Reference data: a synthetic market, panel loaders (files, Qlib data folders), Alpha158
features, handlers, datasets.

Task cfgs name the classes by their modules, e.g. ``taskroll.data.dataset.DatasetH``,
``taskroll.data.handler.Alpha158``, ``taskroll.data.loader.FileLoader``.
"""

from taskroll.data.dataset import DatasetH
from taskroll.data.features import (
    DEFAULT_WINDOWS,
    LABEL_NAME,
    alpha158_names,
    clear_feature_cache,
    compute_alpha158,
)
from taskroll.data.handler import Alpha158, DataHandlerLP, fetch_df_by_col
from taskroll.data.loader import (
    DataLoader,
    FileLoader,
    StaticLoader,
    SyntheticLoader,
    clear_caches,
    load_panel,
    validate_panel,
)
from taskroll.data.processors import (
    CSRankNorm,
    CSZScoreNorm,
    DropnaFeature,
    DropnaLabel,
    Fillna,
    ProcessInf,
    Processor,
    RobustZScoreNorm,
    ZScoreNorm,
)
from taskroll.data.qlib_bin import (
    QlibDataLoader,
    read_qlib_calendar,
    read_qlib_feature,
    read_qlib_instruments,
)
from taskroll.data.qlib_writer import write_qlib_data
from taskroll.data.quality import DataQualityReport, clean_bars
from taskroll.data.synthetic import SyntheticMarket, generate_market, trading_calendar

__all__ = [
    "DEFAULT_WINDOWS",
    "LABEL_NAME",
    "Alpha158",
    "CSRankNorm",
    "CSZScoreNorm",
    "DataHandlerLP",
    "DataLoader",
    "DataQualityReport",
    "DatasetH",
    "DropnaFeature",
    "DropnaLabel",
    "FileLoader",
    "Fillna",
    "ProcessInf",
    "Processor",
    "QlibDataLoader",
    "RobustZScoreNorm",
    "StaticLoader",
    "SyntheticLoader",
    "SyntheticMarket",
    "ZScoreNorm",
    "alpha158_names",
    "clean_bars",
    "clear_caches",
    "clear_feature_cache",
    "compute_alpha158",
    "fetch_df_by_col",
    "generate_market",
    "load_panel",
    "read_qlib_calendar",
    "read_qlib_feature",
    "read_qlib_instruments",
    "trading_calendar",
    "validate_panel",
    "write_qlib_data",
]
