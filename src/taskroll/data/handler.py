"""Data handlers: load a panel, run processors, serve slices (Qlib's ``DataHandlerLP``).

A handler keeps three views of its rows between ``start_time`` and ``end_time``:

* ``raw`` (``DK_R``): as loaded;
* ``infer`` (``DK_I``): after the inference processors (used for prediction);
* ``learn`` (``DK_L``): after the inference then the learning processors (``process_type
  "append"``, the default) or the learning processors alone on raw data
  (``"independent"``); used for training.

Columns are 2-level, ``("feature", name)`` and ``("label", "LABEL0")``; the index is
``(datetime, instrument)``, sorted. Processors are fitted on rows between
``fit_start_time`` and ``fit_end_time`` (the whole range when not given).

Pickling a handler keeps its configuration and fitted processors but drops the
data; the data is rebuilt on the next fetch (as Qlib's ``dump_all=False``).

A handler declares its label horizon (``LABEL_HORIZON``, or the ``label_horizon``
argument where it has one): the label at day ``t`` uses bars up to ``t + horizon``
trading days. :class:`~taskroll.task.gen.RollingGen` reads it to keep a gap between
segments, so no training or validation label reaches into the next segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from taskroll.config import get_settings
from taskroll.data.features import (
    DEFAULT_WINDOWS,
    LABEL_HORIZON,
    REQUIRED_COLUMNS,
    cached_alpha158,
)
from taskroll.data.loader import DataLoader, slice_panel
from taskroll.data.processors import (
    CSZScoreNorm,
    DropnaLabel,
    Processor,
    check_fit_end,
    check_for_infer,
)
from taskroll.data.qlib_bin import NO_DATA_HINT, QlibDataLoader
from taskroll.data.quality import DataQualityReport
from taskroll.errors import DataError, TaskConfigError
from taskroll.task.spec import init_instance_by_config

_PROCESSOR_MODULE = "taskroll.data.processors"
_LOADER_MODULE = "taskroll.data.loader"


def _timestamp(value: Any, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError) as error:
        raise TaskConfigError(f"{name}: cannot parse date {value!r}") from error


def fetch_df_by_col(df: pd.DataFrame, col_set: str | Sequence[str]) -> pd.DataFrame:
    """Select columns as Qlib does.

    Args:
        df: A frame with 2-level columns.
        col_set: ``"__raw"`` (all columns, 2 levels), ``"__all"`` (all columns, group
            level dropped), a group name (that group, group level dropped) or a list of
            group names (2 levels kept).

    Returns:
        The selected columns.

    Raises:
        TaskConfigError: For an unknown group.
    """
    if not isinstance(df.columns, pd.MultiIndex) or col_set == DataHandlerLP.CS_RAW:
        return df
    if col_set == DataHandlerLP.CS_ALL:
        return df.droplevel(axis=1, level=0)
    groups = [col_set] if isinstance(col_set, str) else list(col_set)
    known = set(df.columns.get_level_values(0))
    unknown = [group for group in groups if group not in known]
    if unknown:
        raise TaskConfigError(f"unknown column group(s) {unknown}; the data has {sorted(known)}")
    return df.loc[:, col_set]


class DataHandlerLP:
    """A handler with learn/infer processors over a 2-level-column panel.

    Args:
        instruments: ``"all"`` or a list of instrument names.
        start_time: First date served (inclusive), or ``None``.
        end_time: Last date served (inclusive), or ``None``.
        data_loader: A :class:`~taskroll.data.loader.DataLoader` or its cfg; it must return a
            frame with ``("feature", ...)``/``("label", ...)`` columns (subclasses may load
            other data, e.g. bars).
        infer_processors: Processors (instances or cfgs) for inference data; not one
            whose ``is_for_infer()`` is false (``DropnaLabel``: the rows served for a day
            would depend on whether its label, made of later prices, is known yet).
        learn_processors: Processors (instances or cfgs) for learning data.
        fit_start_time: First date of the processors' fit range.
        fit_end_time: Last date of the processors' fit range. A processor that learns
            state (``ZScoreNorm``...) needs an end, here or in its own kwargs: fitted on
            every row it would normalise each day with statistics of later days.
        process_type: ``"append"`` (learn = learn_processors(infer)) or ``"independent"``.
        init_data: Load and process now (otherwise on the first fetch).

    Raises:
        TaskConfigError: For malformed cfgs or dates, or a processor that would look
            ahead (see ``infer_processors`` and ``fit_end_time``).
    """

    DK_R = "raw"
    DK_I = "infer"
    DK_L = "learn"
    CS_ALL = "__all"
    CS_RAW = "__raw"
    PTYPE_A = "append"
    PTYPE_I = "independent"
    IT_FIT_SEQ = "fit_seq"
    IT_LS = "load_and_setup"
    LABEL_HORIZON: int | None = None
    """Trading days after ``t`` whose bars the label at ``t`` uses; ``None``: unknown."""

    def __init__(self, instruments: str | Sequence[str] = "all", start_time: Any = None,
                 end_time: Any = None, data_loader: Any = None,
                 infer_processors: Sequence[Any] = (), learn_processors: Sequence[Any] = (),
                 fit_start_time: Any = None, fit_end_time: Any = None,
                 process_type: str = "append", init_data: bool = True) -> None:
        if process_type not in (self.PTYPE_A, self.PTYPE_I):
            raise TaskConfigError(f"process_type must be 'append' or 'independent', "
                                  f"got {process_type!r}")
        self.instruments = instruments
        self.start_time = _timestamp(start_time, "start_time")
        self.end_time = _timestamp(end_time, "end_time")
        self.fit_start_time = _timestamp(fit_start_time, "fit_start_time")
        self.fit_end_time = _timestamp(fit_end_time, "fit_end_time")
        self.process_type = process_type
        self._loader_from_provider = data_loader is None
        self.data_loader: DataLoader = self._build_loader(data_loader)
        self.infer_processors = [self._build_processor(cfg, f"infer_processors[{index}]")
                                 for index, cfg in enumerate(infer_processors)]
        self.learn_processors = [self._build_processor(cfg, f"learn_processors[{index}]")
                                 for index, cfg in enumerate(learn_processors)]
        for index, processor in enumerate(self.infer_processors):
            check_for_infer(processor, f"handler.infer_processors[{index}]")
        self._data: dict[str, pd.DataFrame] | None = None
        self._fitted = False
        self._quality: DataQualityReport | None = None
        if init_data:
            self.setup_data()

    # -- construction ---------------------------------------------------------------------------

    def _default_loader(self) -> DataLoader:
        raise TaskConfigError(f"{type(self).__name__} needs a data_loader")

    def _build_loader(self, config: Any) -> DataLoader:
        if config is None:
            return self._default_loader()
        loader = init_instance_by_config(config, default_module=_LOADER_MODULE,
                                         accept_types=DataLoader, where="handler.data_loader")
        if not isinstance(loader, DataLoader):
            raise TaskConfigError(f"handler.data_loader: expected a DataLoader, got "
                                  f"{type(loader).__name__}")
        return loader

    @staticmethod
    def _build_processor(config: Any, where: str) -> Processor:
        processor = init_instance_by_config(config, default_module=_PROCESSOR_MODULE,
                                            accept_types=Processor, where=f"handler.{where}")
        if not callable(processor) or not hasattr(processor, "fit"):
            raise TaskConfigError(f"handler.{where}: expected a processor, got "
                                  f"{type(processor).__name__}")
        return processor  # type: ignore[no-any-return]

    # -- data -----------------------------------------------------------------------------------

    def load_raw(self) -> pd.DataFrame:
        """Return the raw rows for the handler's instruments and dates (2-level columns).

        Raises:
            DataError: When the loader fails or returns a frame without 2-level columns.
        """
        frame = self.data_loader.load(self.instruments, self.start_time, self.end_time)
        if not isinstance(frame.columns, pd.MultiIndex):
            raise DataError(f"{type(self.data_loader).__name__} returned single-level columns; "
                            "DataHandlerLP needs ('feature', name) / ('label', name) columns")
        return frame

    def _fit_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        if self.fit_start_time is None and self.fit_end_time is None:
            return df
        return slice_panel(df, "all", self.fit_start_time, self.fit_end_time)

    def _run(self, processors: Sequence[Processor], df: pd.DataFrame,
             fit: bool) -> pd.DataFrame:
        for processor in processors:
            if fit:
                processor.fit(self._fit_rows(df))
            df = processor(df)
        return df

    def setup_data(self, init_type: str = IT_FIT_SEQ) -> None:
        """Load the raw data and run the processors.

        Args:
            init_type: ``"fit_seq"`` fits each processor on the fit range (after the
                previous one ran) before applying it; ``"load_and_setup"`` reuses the
                processors' fitted state (e.g. to extend an online dataset with the same
                normalisation).

        Raises:
            TaskConfigError: For an unknown ``init_type``.
            DataError: When loading or processing fails.
        """
        if init_type not in (self.IT_FIT_SEQ, self.IT_LS):
            raise TaskConfigError(f"init_type must be 'fit_seq' or 'load_and_setup', "
                                  f"got {init_type!r}")
        fit = init_type == self.IT_FIT_SEQ or not self._is_fitted()
        if fit:
            self._check_fit_range()
        raw = self.load_raw()
        infer = self._run(self.infer_processors, raw, fit)
        learn_input = infer if self.process_type == self.PTYPE_A else raw
        learn = self._run(self.learn_processors, learn_input, fit)
        self._data = {self.DK_I: infer, self.DK_L: learn}
        self._fitted = True
        if fit:
            self._quality = self._check_quality(infer)

    def _check_fit_range(self) -> None:
        """Refuse to fit, on a range without an end, a processor that learns state.

        Raises:
            TaskConfigError: See :func:`~taskroll.data.processors.check_fit_end`.
        """
        for key in ("infer_processors", "learn_processors"):
            for index, processor in enumerate(getattr(self, key)):
                check_fit_end(processor, self.fit_end_time, f"handler.{key}[{index}]")

    def _check_quality(self, processed: pd.DataFrame) -> DataQualityReport | None:
        """Count constant and all-NaN features of the processed data; warn once per kind."""
        report = self.data_loader.quality_report()
        if report is None:  # e.g. precomputed features: no bars to count
            report = DataQualityReport(
                rows=len(processed), instruments=processed.index.get_level_values(-1).nunique(),
                invalid_price_bars=0, zero_volume_bars=0, duplicated_rows=0, suspended_days=0,
                late_listings=0)
        if isinstance(processed.columns, pd.MultiIndex) and "feature" in set(
                processed.columns.get_level_values(0)):
            report = report.with_features(processed)
            report.warn(f"{type(self).__name__}", kinds=("constant_features", "all_nan_features"))
        return report

    def quality_report(self) -> DataQualityReport | None:
        """The data quality report: the loader's counts of bad bars, gaps and late listings,
        plus the constant and all-NaN features of the processed data.

        Loads and processes the data when that has not happened yet.

        Returns:
            The report, or ``None`` for a handler whose data was never processed here.
        """
        if self._quality is None:
            self._frame(self.DK_I)
        return self._quality

    @property
    def label_horizon(self) -> int | None:
        """Trading days the label looks ahead (``LABEL_HORIZON``); ``None``: unknown."""
        return self.LABEL_HORIZON

    def config(self, **kwargs: Any) -> None:
        """Change ``instruments``, ``start_time``, ``end_time`` or the fit range in place.

        Call :meth:`setup_data` afterwards (Qlib's online flow:
        ``config(...)`` then ``setup_data()``).

        Raises:
            TaskConfigError: For an unknown setting.
        """
        for name, value in kwargs.items():
            if name == "instruments":
                self.instruments = value
                if (getattr(self, "_loader_from_provider", False)
                        and isinstance(self.data_loader, QlibDataLoader)):
                    # its universe was this handler's instruments
                    self.data_loader = QlibDataLoader(self.data_loader.provider_uri,
                                                      self.data_loader.freq, universe=value)
            elif name in ("start_time", "end_time", "fit_start_time", "fit_end_time"):
                setattr(self, name, _timestamp(value, name))
            else:
                raise TaskConfigError(f"{type(self).__name__}.config: unknown setting {name!r}")
        self._data = None

    def _frame(self, data_key: str) -> pd.DataFrame:
        if data_key == self.DK_R:
            return self.load_raw()
        if data_key not in (self.DK_I, self.DK_L):
            raise TaskConfigError(f"data_key must be 'raw', 'infer' or 'learn', got {data_key!r}")
        if self._data is None:
            self.setup_data(self.IT_LS)
        assert self._data is not None
        return self._data[data_key]

    def _is_fitted(self) -> bool:
        return self._fitted

    def fetch(self, selector: Any = slice(None, None), level: str | int = "datetime",
              col_set: str | Sequence[str] = CS_ALL, data_key: str = DK_I,
              squeeze: bool = False) -> pd.DataFrame | pd.Series:
        """Return rows selected by date (or instrument) and columns selected by group.

        Args:
            selector: A ``slice(start, end)`` of dates (inclusive; strings or Timestamps), a
                single date, or, with ``level="instrument"``, instrument name(s).
            level: Index level the selector applies to.
            col_set: See :func:`fetch_df_by_col` (``"__all"`` drops the group level, a group
                name like ``"feature"`` returns that group with the level dropped).
            data_key: ``"infer"``, ``"learn"`` or ``"raw"``.
            squeeze: Return a Series when a single column is selected.

        Returns:
            The selected frame (or Series with ``squeeze``).

        Raises:
            TaskConfigError: For an unknown data key, level or column group.
        """
        df = self._frame(data_key)
        df = _select_rows(df, selector, level)
        df = fetch_df_by_col(df, col_set)
        if squeeze and df.shape[1] == 1:
            return df.iloc[:, 0]
        return df

    def get_cols(self, col_set: str | Sequence[str] = CS_ALL, data_key: str = DK_I) -> list[Any]:
        """Return the column names :meth:`fetch` gives for ``col_set``."""
        return list(fetch_df_by_col(self._frame(data_key).iloc[:0], col_set).columns)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_data"] = None
        return state


def _select_rows(df: pd.DataFrame, selector: Any, level: str | int) -> pd.DataFrame:
    if level in ("datetime", 0):
        if isinstance(selector, slice):
            if selector.step is not None:
                raise TaskConfigError("a date slice cannot have a step")
            start = _timestamp(selector.start, "selector.start")
            stop = _timestamp(selector.stop, "selector.stop")
            return slice_panel(df, "all", start, stop)
        date = _timestamp(selector, "selector")
        return slice_panel(df, "all", date, date)
    if level in ("instrument", 1):
        if isinstance(selector, slice):
            if selector != slice(None):
                raise TaskConfigError("instruments are selected by name or list, not by slice")
            return df
        return slice_panel(df, selector)
    raise TaskConfigError(f"level must be 'datetime' or 'instrument', got {level!r}")


class Alpha158(DataHandlerLP):
    """Qlib's Alpha158 handler: bars → 158 price/volume features + ``LABEL0``.

    Features are computed on the loader's whole history (cached per process by loader
    identity and windows, and for file-backed loaders on disk, shared by every worker
    process: see :mod:`taskroll.data.feature_store` and ``TASKROLL_FEATURE_CACHE``), then
    sliced to ``instruments`` and ``[start_time, end_time]``, so early rows of the range
    have complete windows and the result does not depend on the range asked for.

    Args:
        instruments: ``"all"`` or a list of instrument names.
        start_time: First date served (inclusive).
        end_time: Last date served (inclusive).
        fit_start_time: First date of the processors' fit range.
        fit_end_time: Last date of the processors' fit range.
        data_loader: A bar loader or its cfg. Without one, the Qlib data folder of
            ``taskroll.init(provider_uri=...)`` is read (a
            :class:`~taskroll.data.qlib_bin.QlibDataLoader` of ``instruments``); with no
            folder configured either, :class:`~taskroll.errors.DataError` says how to point
            taskroll at data (there is no silent synthetic default: pass
            ``{"class": "SyntheticLoader"}`` for demos).
        infer_processors: Default none, as Qlib (features keep their NaN; LightGBM
            handles them, :class:`~taskroll.models.linear.LinearModel` counts them as 0).
            ``[ProcessInf(), CSZScoreNorm("feature"), Fillna("feature")]`` suits linear
            models (raw Alpha158 ratios have very different scales).
        learn_processors: Default ``[DropnaLabel(), CSZScoreNorm("label")]`` (as Qlib):
            only rows without a label are dropped.
        windows: Rolling windows of the features.
        rolling_operators: Rolling operators to include (default: all 29).
        process_type: ``"append"`` or ``"independent"``.
        init_data: Load and process now.
        label_horizon: Trading days the label looks ahead: ``LABEL0`` is
            ``Ref($close, -h) / Ref($close, -1) - 1`` on the market calendar (h = 2, Qlib's
            label, by default; 1 gives the next day's return). The market calendar is the
            loader's (:meth:`~taskroll.data.loader.DataLoader.calendar`: a Qlib folder's
            ``day.txt``), so a day on which every instrument loaded was suspended still
            counts, and the label is NaN, as Qlib's, never a price from a later day.

    Raises:
        TaskConfigError: For malformed cfgs or dates.
        DataError: When there is no data source (no ``data_loader``, no configured data
            folder), or the bars cannot be loaded or lack a required column.
    """

    LABEL_HORIZON = LABEL_HORIZON

    def __init__(self, instruments: str | Sequence[str] = "all", start_time: Any = None,
                 end_time: Any = None, fit_start_time: Any = None, fit_end_time: Any = None,
                 data_loader: Any = None, infer_processors: Sequence[Any] | None = None,
                 learn_processors: Sequence[Any] | None = None,
                 windows: Sequence[int] = DEFAULT_WINDOWS,
                 rolling_operators: Sequence[str] | None = None,
                 process_type: str = "append", init_data: bool = True,
                 label_horizon: int = LABEL_HORIZON) -> None:
        self.windows = tuple(int(window) for window in windows)
        self.rolling_operators = None if rolling_operators is None else tuple(rolling_operators)
        if (isinstance(label_horizon, bool) or not isinstance(label_horizon, int)
                or label_horizon < 1):
            raise TaskConfigError(f"Alpha158: label_horizon must be an int >= 1, "
                                  f"got {label_horizon!r}")
        self._label_horizon = label_horizon
        if infer_processors is None:
            infer_processors = []
        if learn_processors is None:
            learn_processors = [DropnaLabel(), CSZScoreNorm(fields_group="label")]
        super().__init__(instruments, start_time, end_time, data_loader, infer_processors,
                         learn_processors, fit_start_time, fit_end_time, process_type,
                         init_data)

    def _default_loader(self) -> DataLoader:
        provider = get_settings().provider_uri
        if not provider:
            raise DataError(f"{type(self).__name__} has no data source: {NO_DATA_HINT}")
        return QlibDataLoader(provider, universe=self.instruments)

    @property
    def label_horizon(self) -> int | None:
        """Trading days the label looks ahead (the ``label_horizon`` argument)."""
        return self._label_horizon

    def load_raw(self) -> pd.DataFrame:
        """Return Alpha158 features and label for the handler's instruments and dates.

        Raises:
            DataError: When the bars cannot be loaded or lack a required column.
        """
        loader = self.data_loader

        def bars() -> pd.DataFrame:
            frame = loader.load_all()
            missing = [name for name in REQUIRED_COLUMNS if name not in frame.columns]
            if missing:
                raise DataError(f"{loader!r}: bars lack column(s) {missing} needed by Alpha158")
            return frame

        # the label counts the loader's market calendar (a Qlib folder's day.txt), not the
        # dates of the instruments loaded, which lack the days all of them were suspended
        features = cached_alpha158(loader.cache_key, bars, self.windows, self.rolling_operators,
                                   self._label_horizon, calendar=loader.calendar)
        frame = loader.select(features, self.instruments, self.start_time, self.end_time)
        if frame.empty:
            dates = features.index.get_level_values(0)
            span = (f"{dates.min().date()}..{dates.max().date()}" if len(dates) else "nothing")
            raise DataError(f"Alpha158: no rows for instruments={self.instruments!r} between "
                            f"{self.start_time} and {self.end_time}; the data covers {span}")
        return frame


