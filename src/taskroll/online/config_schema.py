"""The schema of the online YAML config, checked by :func:`check_config`.

It refuses every config that would otherwise run with a silent default or crash
later. The schema (``null`` is accepted only where said)::

    experiment      required, a non-empty string
    task_template   required, a task mapping or a non-empty list of them
    rolling         required mapping:
        step              int >= 1 (trading days) or a period: W, M, Q, Y (also ME, QS, ...)
        rtype             expanding | sliding
        calendar          a file (read from the config's folder), an exchange name
                          (e.g. XSHG), a list of dates, or null (weekdays)
        trunc_days        int >= 0 or null
        label_horizon     int >= 0 or null; trunc_days >= label_horizon + 1 unless
        allow_label_leak  true | false
        refit_per_roll    true | false
    task_url, tracking_uri, task_db_name, artifact_root, task_pool   string or null
    provider_uri, region   string or null (a Qlib data folder; "cn" or "us")
    trainer         TrainerR | TrainerRM | DelayTrainerR | DelayTrainerRM, or a mapping
                    with ``class`` (required) and ``task_pool``
    begin_time      a date or null
    report          mapping: topk (int >= 1)

A task template holds ``model`` and ``dataset`` (required), ``record`` and
``reweighter``; each is a cfg: a ``"module.Name"`` string or a mapping of
``class`` (required), ``module_path`` and ``kwargs``. ``dataset.kwargs.segments``
must hold ``train`` and ``test`` (any other segment too), each a
``[start, end]`` list of dates with start <= end; only the test end may be null.

Messages are one line naming the full dotted key (``unknown key 'rolling.stpe';
did you mean 'rolling.step'?``); :func:`~taskroll.online.config.load_config` puts
the config's path in front.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskroll.errors import CalendarError, TaskConfigError, TaskrollError
from taskroll.task.calendar import to_timestamp
from taskroll.task.periods import PERIOD_ALIASES, PERIODS, parse_step

__all__ = ["TRAINERS", "ConfigSchemaError", "check_config"]

TRAINERS = ("TrainerR", "TrainerRM", "DelayTrainerR", "DelayTrainerRM")
"""The trainer names an online config may choose."""

_TOP_KEYS = ("experiment", "task_template", "rolling", "task_url", "tracking_uri",
             "provider_uri", "region",
             "task_db_name", "artifact_root", "trainer", "task_pool", "begin_time",
             "report")
_TEXT_KEYS = ("task_url", "tracking_uri", "task_db_name", "artifact_root", "task_pool",
              "provider_uri", "region")
_ROLLING_KEYS = ("step", "rtype", "calendar", "trunc_days", "label_horizon",
                 "allow_label_leak", "refit_per_roll")
_TEMPLATE_KEYS = ("model", "dataset", "record", "reweighter")
_CFG_KEYS = ("class", "module_path", "kwargs")
_TEMPLATE = "task_template"
_SEGMENTS = "dataset.kwargs.segments"
_SECTIONS = {"rolling": _ROLLING_KEYS, "report": ("topk",),
             _TEMPLATE: (*_TEMPLATE_KEYS, _SEGMENTS, "dataset.kwargs.handler")}


def _homes() -> dict[str, str]:
    """Where each key belongs: ``trunc_days`` -> ``rolling.trunc_days`` (the first wins)."""
    homes = {key: key for key in _TOP_KEYS}
    for section, keys in _SECTIONS.items():
        for key in keys:
            homes.setdefault(key.rsplit(".", 1)[-1], f"{section}.{key}")
    return homes


_HOMES = _homes()
_CALENDAR_SUFFIXES = (".txt", ".csv", ".parquet", ".pq")
_STEP_TEXT = (f"a positive int (trading days) or a period ({', '.join(map(repr, PERIODS))}; "
              f"also {', '.join(repr(key) for key in PERIOD_ALIASES if key not in PERIODS)})")


class ConfigSchemaError(TaskrollError, ValueError):
    """A config breaks the schema; :func:`~taskroll.online.config.load_config` adds the path."""


def check_config(config: Mapping[Any, Any], base: Path) -> None:
    """Check a loaded online config (YAML dates already turned to text) against the schema.

    Args:
        config: The loaded YAML document.
        base: The config's folder, where a relative calendar file is looked for first.

    Raises:
        ConfigSchemaError: For the first missing or unknown key, or wrong type or value;
            one line naming the full dotted key (without the config's path).
    """
    _Checker(base).check(config)


def _join(where: str, key: Any) -> str:
    return str(key) if not where else f"{where}.{key}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


class _Checker:
    """The checks of :func:`check_config`; each returns or raises :class:`ConfigSchemaError`."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def wrong(self, where: str, expected: str, value: Any, hint: str = "") -> ConfigSchemaError:
        return ConfigSchemaError(f"{where!r} must be {expected}, got {_shown(value)}{hint}")

    def mapping(self, node: Any, where: str, allowed: Sequence[str],
                required: Sequence[str] = ()) -> Mapping[Any, Any]:
        """Check that ``node`` is a mapping of ``allowed`` keys holding ``required`` ones."""
        if not isinstance(node, Mapping):
            raise self.wrong(where, f"a mapping of {', '.join(allowed)}", node)
        for key in node:
            if key not in allowed:
                raise ConfigSchemaError(f"unknown key {_join(where, key)!r}"
                                f"{self._suggestion(str(key), where, allowed)}")
        for key in required:
            self.require(node, where, key, allowed)
        return node

    def require(self, node: Mapping[Any, Any], where: str, key: str,
                allowed: Sequence[str] = ()) -> Any:
        """Return ``node[key]``; when missing, name a present key that looks misspelt."""
        if key not in node:
            others = [str(item) for item in node if item not in allowed]
            close = difflib.get_close_matches(key, others, n=1)
            hint = f" (is {_join(where, close[0])!r} a misspelling?)" if close else ""
            raise ConfigSchemaError(f"missing key {_join(where, key)!r}{hint}")
        return node[key]

    @staticmethod
    def _suggestion(key: str, where: str, allowed: Sequence[str]) -> str:
        home = _HOMES.get(key)
        if home is not None and where.startswith(_TEMPLATE) and home.startswith(_TEMPLATE):
            home = where.split(".")[0] + home[len(_TEMPLATE):]  # keep task_template[1]
        close = difflib.get_close_matches(key, allowed, n=1)
        if home is None and close:
            home = _join(where, close[0])
        if home is None:
            elsewhere = difflib.get_close_matches(key, list(_HOMES), n=1)
            home = _HOMES[elsewhere[0]] if elsewhere else None
        if home is None:
            return f"; valid keys here: {', '.join(allowed)}"
        return f"; did you mean {home!r}?"

    def date(self, value: Any, where: str) -> Any:
        try:
            return to_timestamp(value, where)
        except CalendarError:
            raise self.wrong(where, "a date (e.g. 2019-07-01)", value) from None

    def whole(self, value: Any, where: str, least: int, nullable: bool = True) -> None:
        if value is None and nullable:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise self.wrong(where, f"an int >= {least}" + (" or null" if nullable else ""),
                             value)

    def check(self, config: Mapping[Any, Any]) -> None:
        self.mapping(config, "", _TOP_KEYS, ("experiment", _TEMPLATE, "rolling"))
        experiment = config["experiment"]
        if not isinstance(experiment, str) or not experiment.strip():
            raise self.wrong("experiment", "a non-empty string", experiment)
        for key in _TEXT_KEYS:
            if not isinstance(config.get(key), (str, type(None))):
                raise self.wrong(key, "a string", config[key])
        if config.get("begin_time") is not None:
            self.date(config["begin_time"], "begin_time")
        if "trainer" in config:
            self.trainer(config["trainer"])
        if "report" in config:
            report = self.mapping(config["report"], "report", ("topk",))
            if "topk" in report:
                self.whole(report["topk"], "report.topk", 1, nullable=False)
        self.rolling(config["rolling"])
        templates = config[_TEMPLATE]
        if isinstance(templates, Mapping):
            self.template(templates, _TEMPLATE)
            return
        if not isinstance(templates, list) or not templates:
            raise self.wrong(_TEMPLATE, "a task mapping or a non-empty list of them", templates)
        for index, template in enumerate(templates):
            self.template(template, f"{_TEMPLATE}[{index}]")

    def trainer(self, trainer: Any) -> None:
        where, name = "trainer", trainer
        if isinstance(trainer, Mapping):
            where = "trainer.class"
            name = self.mapping(trainer, "trainer", ("class", "task_pool"), ("class",))["class"]
            if not isinstance(trainer.get("task_pool"), (str, type(None))):
                raise self.wrong("trainer.task_pool", "a string", trainer["task_pool"])
        if name not in TRAINERS:
            close = difflib.get_close_matches(name, TRAINERS, n=1) if isinstance(name, str) else []
            expected = f"one of {', '.join(TRAINERS)}"
            if where == "trainer":
                expected += " (or a mapping of 'class' and 'task_pool')"
            raise self.wrong(where, expected, name, f"; did you mean {close[0]!r}?" if close else "")

    def rolling(self, rolling: Any) -> None:
        self.mapping(rolling, "rolling", _ROLLING_KEYS)
        if "step" in rolling:
            try:
                parse_step(rolling["step"])
            except TaskConfigError:
                raise self.wrong("rolling.step", _STEP_TEXT, rolling["step"]) from None
        rtype = rolling.get("rtype", "expanding")
        if rtype not in ("expanding", "sliding"):
            close = difflib.get_close_matches(rtype, ("expanding", "sliding"), n=1) if isinstance(
                rtype, str) else []
            raise self.wrong("rolling.rtype", "'expanding' or 'sliding'", rtype,
                             f"; did you mean {close[0]!r}?" if close else "")
        self.calendar(rolling.get("calendar"))
        for key in ("trunc_days", "label_horizon"):
            self.whole(rolling.get(key), f"rolling.{key}", 0)
        for key in ("allow_label_leak", "refit_per_roll"):
            if key in rolling and not isinstance(rolling[key], bool):
                raise self.wrong(f"rolling.{key}", "true or false", rolling[key])
        trunc_days, horizon = rolling.get("trunc_days"), rolling.get("label_horizon")
        if (trunc_days is not None and horizon is not None and trunc_days < horizon + 1
                and not rolling.get("allow_label_leak", False)):
            raise ConfigSchemaError(
                f"'rolling.trunc_days' is {trunc_days}, below the gap of {horizon + 1} trading days "
                f"that 'rolling.label_horizon' {horizon} needs (labels would use prices of the "
                "next segment); raise it, remove it to derive the gap, or set "
                "'rolling.allow_label_leak: true' to accept the leak")

    def calendar(self, calendar: Any) -> None:
        where = "rolling.calendar"
        if isinstance(calendar, list) and calendar:
            for index, day in enumerate(calendar):
                self.date(day, f"{where}[{index}]")
        elif isinstance(calendar, str):
            looks_like_path = ("/" in calendar or os.sep in calendar
                               or Path(calendar).suffix.lower() in _CALENDAR_SUFFIXES)
            # today a path missing next to the config is still read from the working folder
            if looks_like_path and not ((self.base / calendar).exists() or Path(calendar).exists()):
                raise ConfigSchemaError(f"{where!r}: calendar file {calendar!r} does not exist (relative "
                                "paths are read from the config's folder)")
        elif calendar is not None:
            raise self.wrong(where, "a file, an exchange name, a list of dates or null", calendar)

    def cfg(self, cfg: Any, where: str) -> None:
        if isinstance(cfg, str) and cfg.strip():
            return
        if not isinstance(cfg, Mapping):
            raise self.wrong(where, "a cfg ('module.Name' or a mapping of class, module_path, "
                             "kwargs)", cfg)
        self.mapping(cfg, where, _CFG_KEYS, ("class",))
        if not isinstance(cfg["class"], str) or not cfg["class"].strip():
            raise self.wrong(_join(where, "class"), "a class name", cfg["class"])
        for key, kind, expected in (("module_path", str, "a module path or null"),
                                    ("kwargs", Mapping, "a mapping or null")):
            if cfg.get(key) is not None and not isinstance(cfg[key], kind):
                raise self.wrong(_join(where, key), expected, cfg[key])

    def template(self, template: Any, where: str) -> None:
        self.mapping(template, where, _TEMPLATE_KEYS, ("model", "dataset"))
        for key in ("model", "dataset", "reweighter"):
            if key in template and not (key == "reweighter" and template[key] is None):
                self.cfg(template[key], _join(where, key))
        records = template.get("record") or []
        for index, record in enumerate(records if isinstance(records, list) else [records]):
            self.cfg(record, f"{where}.record" + (f"[{index}]" if isinstance(records, list) else ""))
        node: Any = template
        for key in _SEGMENTS.split("."):
            if not isinstance(node, Mapping):
                raise self.wrong(where, "a mapping holding kwargs.segments", node)
            node = self.require(node, where, key)
            where = _join(where, key)
        if not isinstance(node, Mapping):
            raise self.wrong(where, "a mapping of segment: [start, end]", node)
        for key in ("train", "test"):
            self.require(node, where, key)
        for key, segment in node.items():
            self.segment(segment, _join(where, key), open_end=key == "test")

    def segment(self, segment: Any, where: str, open_end: bool) -> None:
        if not isinstance(segment, list) or len(segment) != 2:
            raise self.wrong(where, "a [start, end] list of two dates", segment)
        start = self.date(segment[0], f"{where}[0]")
        if segment[1] is None and open_end:
            return
        end = self.date(segment[1], f"{where}[1]")
        if start > end:
            raise ConfigSchemaError(f"{where!r}: start {_shown(segment[0])} is after end "
                                    f"{_shown(segment[1])}")
