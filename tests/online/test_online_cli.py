"""``taskroll online simulate`` / ``routine`` on a YAML config."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from taskroll.config import Settings
from taskroll.online.cli import add_online_parser, main, run_online
from taskroll.online.strategy import RollingStrategy


def _write_config(tmp_path: Path, template: dict[str, Any], trainer: str) -> Path:
    template = json.loads(json.dumps(template))  # tuples to lists for YAML
    template["dataset"]["kwargs"]["handler"]["kwargs"]["data_loader"]["kwargs"]["path"] = (
        "bars.parquet")  # relative to the config's folder
    config = {
        "experiment": "cli_online",
        "task_url": f"sqlite:///{tmp_path / 'tasks.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlruns.db'}",
        "trainer": trainer,
        "task_pool": "cli_pool",
        "begin_time": "2019-08-01",
        "rolling": {"step": 20, "rtype": "expanding", "calendar": "bars.parquet"},
        "task_template": template,
    }
    path = tmp_path / "online.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_parser_and_simulate_then_routine(isolated_settings: Settings, tmp_path: Path,
                                          online_market: tuple[Path, pd.DatetimeIndex],
                                          online_template: Callable[[], dict[str, Any]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    market_path, calendar = online_market
    (tmp_path / "bars.parquet").write_bytes(market_path.read_bytes())
    config = _write_config(tmp_path, online_template(), "DelayTrainerRM")
    parser = argparse.ArgumentParser(prog="taskroll")
    add_online_parser(parser.add_subparsers(dest="command"))
    output = tmp_path / "out"
    arguments = parser.parse_args(["online", "simulate", "--config", str(config),
                                   "--end-time", "2019-08-30", "--output", str(output)])
    assert arguments.online_command == "simulate"
    assert run_online(arguments) == 0
    assert "signals:" in capsys.readouterr().out
    signals = pd.read_parquet(output / "signals.parquet")
    days = signals.index.get_level_values("datetime").unique()
    expected = calendar[(calendar >= pd.Timestamp("2019-08-01"))
                        & (calendar <= pd.Timestamp("2019-08-30"))]
    assert set(expected) <= set(days) and days.max() == expected[-1]

    # the next day's routine finds the online models in the MLflow store and appends
    next_day = calendar[calendar.get_loc(expected[-1]) + 1]
    assert main(["online", "routine", "--config", str(config), "--cur-time", str(next_day.date()),
                 "--output", str(output)]) == 0
    assert f"routine {next_day.date()}" in capsys.readouterr().out
    extended = pd.read_parquet(output / "signals.parquet")
    pd.testing.assert_frame_equal(extended.loc[signals.index], signals)
    assert extended.index.get_level_values("datetime").max() == next_day

    # the report: the served signals against the labels realised since, from the bars
    # (the handler computes in float32, hence the tolerance)
    assert main(["online", "report", "--config", str(config), "--output", str(output),
                 "--topk", "5"]) == 0
    assert "ic_mean" in capsys.readouterr().out
    daily = pd.read_csv(output / "report" / "report.csv", index_col=0, parse_dates=True)
    summary = json.loads((output / "report" / "report.json").read_text())
    assert (output / "report" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    close = pd.read_parquet(market_path)["close"].unstack("instrument").reindex(calendar)
    label = (close.shift(-2) / close.shift(-1) - 1).stack().rename("label")
    served = extended["score"]
    joined = pd.concat([served, label.reindex(served.index)], axis=1).dropna()
    expected_ic = joined.groupby(level="datetime").apply(
        lambda day: day["score"].corr(day["label"]))
    assert summary["days"] == len(daily) == expected_ic.index.nunique() > 20
    assert summary["topk"] == 5
    pd.testing.assert_series_equal(daily["ic"], expected_ic, check_names=False,
                                   check_index_type=False, check_freq=False, rtol=1e-6, atol=1e-5)


def test_bad_config_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("experiment: x\n")
    assert main(["online", "simulate", "--config", str(path), "--end-time", "2019-01-01"]) == 2
    assert "missing key 'task_template'" in capsys.readouterr().err


def test_routine_first_call_in_a_subprocess(tmp_path: Path,
                                            online_market: tuple[Path, pd.DatetimeIndex],
                                            online_template: Callable[[], dict[str, Any]]
                                            ) -> None:
    (tmp_path / "bars.parquet").write_bytes(online_market[0].read_bytes())
    config = _write_config(tmp_path, online_template(), "TrainerR")
    code = ("import sys; from taskroll.online.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    result = subprocess.run(
        [sys.executable, "-c", code, "online", "routine", "--config", str(config),
         "--cur-time", "2019-08-01", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert "routine 2019-08-01" in result.stdout
    signals = pd.read_parquet(tmp_path / "out" / "signals.parquet")
    assert signals.index.get_level_values("datetime").max() == pd.Timestamp("2019-08-01")


def test_rolling_settings_reach_the_generator(tmp_path: Path) -> None:
    """A period step, the horizon and the refit flag pass from the config to RollingGen."""
    from taskroll.online.cli import build_manager

    config = {"experiment": "periods", "task_url": f"sqlite:///{tmp_path / 'tasks.db'}",
              "tracking_uri": f"sqlite:///{tmp_path / 'mlruns.db'}", "trainer": "TrainerR",
              "rolling": {"step": "M", "label_horizon": 5, "refit_per_roll": False},
              "task_template": {"model": {}, "dataset": {}}}
    manager = build_manager(config, begin_time="2020-01-02")
    strategy = manager.strategies[0]
    assert isinstance(strategy, RollingStrategy)
    generator = strategy.rg
    assert (generator.step, generator.label_horizon, generator.refit_per_roll) == ("M", 5, False)


def test_readme_daily_jobs_run_real_commands() -> None:
    """The cron line and the Kubernetes CronJob of the README parse as online commands."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Online serving"):readme.index("## Cluster backends")]
    blocks = section.split("```")
    cron = next(block for block in blocks if block.startswith("cron"))
    job = yaml.safe_load(next(block for block in blocks
                              if block.startswith("yaml") and "CronJob" in block)[4:])
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    [container] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    cron_command = cron.split("&& ", 1)[1].split(">>")[0].split()
    parser = argparse.ArgumentParser(prog="taskroll")
    add_online_parser(parser.add_subparsers(dest="command"))
    for command in (cron_command, container["command"]):
        assert command[0] == "taskroll"
        arguments = parser.parse_args(command[1:])
        assert (arguments.command, arguments.online_command) == ("online", "routine")


def test_simulate_on_a_qlib_data_folder(tmp_path: Path, isolated_settings: Settings,
                                        online_market: tuple[Path, pd.DatetimeIndex],
                                        online_template: Callable[[], dict[str, Any]],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """provider_uri in the YAML (relative to it): the handler and the calendar read it."""
    from taskroll.data import write_qlib_data

    market_path, calendar = online_market
    write_qlib_data(pd.read_parquet(market_path), tmp_path / "qlib_data")
    template = json.loads(json.dumps(online_template()))
    del template["dataset"]["kwargs"]["handler"]["kwargs"]["data_loader"]
    config = {"experiment": "qlib_folder", "provider_uri": "qlib_data", "region": "cn",
              "task_url": f"sqlite:///{tmp_path / 'tasks.db'}",
              "tracking_uri": f"sqlite:///{tmp_path / 'mlruns.db'}",
              "begin_time": "2019-08-01", "rolling": {"step": 20},
              "task_template": template}
    path = tmp_path / "online.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["online", "simulate", "--config", str(path), "--end-time", "2019-08-09",
                 "--output", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    signals = pd.read_parquet(tmp_path / "out" / "signals.parquet")
    days = signals.index.get_level_values("datetime").unique()
    assert list(days) == list(calendar[(calendar >= pd.Timestamp("2019-07-01"))
                                       & (calendar <= pd.Timestamp("2019-08-09"))])
