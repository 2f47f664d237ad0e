"""Online serving left running for months: calendars that grow, foreign signal files, the lock.

* A manager kept in a long-running process, or pickled and loaded each day (Qlib's
  daily script), loaded its calendar from the bar file once; days added to the data
  later were never served (every routine aligned to the old last day, silently).
* A signal file that reads as a table but is not signals (the index written out as
  columns, or another program's file in a wrong ``--output`` folder) was taken as
  signals: its rows became ``1970-01-01`` days and the routine wrote a mixed file
  over it.
* One routine at a time holds the output folder; a killed holder does not block.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from taskroll.config import Settings
from taskroll.errors import RecorderError
from taskroll.online.cli import main
from taskroll.online.files import (
    RoutineLockedError,
    SignalFileError,
    read_signals,
    routine_lock,
    write_signals,
)
from taskroll.online.manager import OnlineManager
from taskroll.online.strategy import RollingStrategy
from taskroll.task.gen import RollingGen
from taskroll.train.experiment import R

from .conftest import make_template, trained_per_window

pytestmark = pytest.mark.filterwarnings("ignore::taskroll.errors.DataQualityWarning")

BEGIN = pd.Timestamp("2019-08-01")
CUT = pd.Timestamp("2019-09-10")  # the data's last day when the manager is built
LATER = pd.Timestamp("2019-09-20")  # a window starts on 2019-08-26 and on 2019-09-23


def _manager(name: str, bars: Path) -> OnlineManager:
    """A manager whose strategy's calendar is the bar file itself (as the online YAML)."""
    strategy = RollingStrategy(name, make_template(bars), RollingGen(step=20, calendar=str(bars)))
    return OnlineManager(strategy, begin_time=BEGIN)


def _runs(experiment: str) -> list[Any]:
    """The experiment's runs (none when it does not exist)."""
    try:
        return list(R.list_recorders(experiment, rtype="list"))
    except RecorderError:
        return []


def _days(signals: pd.Series) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(signals.index.get_level_values("datetime").unique())


def test_pickled_manager_serves_the_days_added_to_the_data(
        tmp_path: Path, module_settings: Settings,
        online_market: tuple[Path, pd.DatetimeIndex]) -> None:
    bars = pd.read_parquet(online_market[0])
    growing = tmp_path / "bars.parquet"
    bars[bars.index.get_level_values("datetime") <= CUT].to_parquet(growing)
    manager = _manager("attack_growing", growing)
    manager.first_train()
    manager.routine(CUT)
    assert _days(manager.get_signals()).max() == CUT
    path = manager.to_pickle(tmp_path / "manager.pkl")
    bars.to_parquet(growing)  # ten more days of bars arrive
    loaded = OnlineManager.load(path)
    new = loaded.routine(LATER)
    assert loaded.cur_time == LATER
    assert _days(new).min() > CUT and _days(new).max() == LATER
    # the same signals as a manager built today on the whole data, skipped days and all
    reference = _manager("attack_growing_reference", growing).simulate(LATER)
    pd.testing.assert_series_equal(loaded.get_signals(), reference)
    assert set(trained_per_window("attack_growing").values()) == {1}
    # a day before the last one served, after the data grew: nothing changes
    served = loaded.get_signals().copy()
    assert len(loaded.routine("2019-09-12")) == 0
    pd.testing.assert_series_equal(loaded.get_signals(), served)


def test_routine_on_a_calendar_that_already_covers_the_data_keeps_it(
        tmp_path: Path, module_settings: Settings,
        online_market: tuple[Path, pd.DatetimeIndex]) -> None:
    """A calendar longer than the data (an exchange calendar) is left as it is."""
    calendar = online_market[1]
    strategy = RollingStrategy("attack_long_calendar", make_template(online_market[0]),
                               RollingGen(step=20, calendar=calendar))
    adjuster = strategy.ta
    assert strategy.refresh_calendar() == 0
    assert strategy.ta is adjuster and strategy.rg.ta is adjuster


def _signals() -> pd.Series:
    index = pd.MultiIndex.from_product([pd.date_range("2019-08-01", periods=3), ["a", "b"]],
                                       names=["datetime", "instrument"])
    return pd.Series([0.5, -0.5, 1.0, -1.0, 0.25, -0.25], index=index, name="score")


def test_signal_file_with_the_index_as_columns_is_read_as_signals(tmp_path: Path) -> None:
    signals = _signals()
    signals.reset_index().to_parquet(tmp_path / "signals.parquet")
    pd.testing.assert_series_equal(read_signals(tmp_path), signals)
    write_signals(signals, tmp_path)  # the file the routine writes reads back the same
    pd.testing.assert_series_equal(read_signals(tmp_path), signals)


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"price": [1.0, 2.0]}),
    pd.DataFrame({"a": [1.0], "b": [2.0]},
                 index=pd.MultiIndex.from_tuples([("x", "y")], names=["k", "j"])),
    pd.DataFrame({"score": [1.0]},
                 index=pd.MultiIndex.from_tuples([("not a day", "a")], names=["d", "i"])),
], ids=["flat", "two columns", "no dates"])
def test_foreign_signal_file_is_an_error_never_overwritten(
        frame: pd.DataFrame, tmp_path: Path, isolated_settings: Settings,
        online_market: tuple[Path, pd.DatetimeIndex],
        capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out"
    output.mkdir()
    frame.to_parquet(output / "signals.parquet")
    before = (output / "signals.parquet").read_bytes()
    with pytest.raises(SignalFileError, match="not"):
        read_signals(output)
    config = _config(tmp_path, online_market[0], "attack_foreign")
    code = main(["online", "routine", "--config", str(config), "--output", str(output),
                 "--cur-time", str(BEGIN.date())])
    assert code == 2
    assert "signals.parquet" in capsys.readouterr().err
    assert (output / "signals.parquet").read_bytes() == before
    assert _runs("attack_foreign") == []  # nothing trained


def _config(folder: Path, bars: Path, experiment: str) -> Path:
    template = json.loads(json.dumps(make_template(bars)))
    config = {"experiment": experiment, "task_url": f"sqlite:///{folder / 'tasks.db'}",
              "tracking_uri": f"sqlite:///{folder / 'mlruns.db'}",
              "begin_time": str(BEGIN.date()), "task_template": template,
              "rolling": {"step": 20, "rtype": "expanding", "calendar": str(bars)}}
    path = folder / "online.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


_HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from taskroll.online.files import routine_lock
    with routine_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(600)
""")


def test_lock_held_stops_a_second_routine_and_a_killed_holder_does_not_block(
        tmp_path: Path, isolated_settings: Settings,
        online_market: tuple[Path, pd.DatetimeIndex],
        capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out"
    config = _config(tmp_path, online_market[0], "attack_lock")
    arguments = ["online", "routine", "--config", str(config), "--output", str(output),
                 "--cur-time", str(BEGIN.date())]
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(output)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(arguments) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert _runs("attack_lock") == []  # the second did nothing
        with pytest.raises(RoutineLockedError, match="another routine"), routine_lock(output):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # killed: the system releases its lock
        holder.wait()
    assert main(arguments) == 0
    written = read_signals(output)
    assert written is not None and _days(written).max() == BEGIN
    assert set(trained_per_window("attack_lock").values()) == {1}



def test_corrected_old_bar_leaves_the_served_history_as_served(
        tmp_path: Path, module_settings: Settings,
        online_market: tuple[Path, pd.DatetimeIndex]) -> None:
    """A new data version corrects an old close: the days served and predicted stay."""
    from taskroll.online.update import PRED_FILE

    bars = pd.read_parquet(online_market[0])
    growing = tmp_path / "bars.parquet"
    bars[bars.index.get_level_values("datetime") <= CUT].to_parquet(growing)
    name = "attack_corrected"
    manager = _manager(name, growing)
    manager.first_train()
    manager.routine(CUT)
    served = manager.get_signals().copy()
    predictions = {recorder.id: recorder.load_object(PRED_FILE)
                   for recorder in manager.strategies[0].tool.online_models()}
    corrected = bars.copy()
    old_day = corrected.index[corrected.index.get_level_values(0) == "2019-09-03"][0]
    corrected.loc[old_day, "close"] = corrected.loc[old_day, "close"] * 1.5
    corrected.to_parquet(growing)
    manager.routine(LATER)
    signals = manager.get_signals()
    assert _days(signals).max() == LATER
    pd.testing.assert_series_equal(signals.loc[served.index], served)
    for recorder_id, before in predictions.items():
        after = R.get_recorder(recorder_id=recorder_id,
                               experiment_name=name).load_object(PRED_FILE)
        pd.testing.assert_frame_equal(after.loc[before.index], before)


def test_labels_failing_do_not_hold_back_the_signals(
        tmp_path: Path, module_settings: Settings, monkeypatch: pytest.MonkeyPatch,
        online_market: tuple[Path, pd.DatetimeIndex]) -> None:
    """Filling in realised labels (for reports) fails: the day's signals are still served."""
    from taskroll.online.models import test_start
    from taskroll.online.update import LABEL_FILE, LabelUpdater

    name = "attack_labels_fail"
    manager = _manager(name, online_market[0])
    manager.first_train()
    manager.routine(BEGIN)
    original = LabelUpdater.get_update_data

    def broken(self: LabelUpdater, dataset: Any) -> pd.DataFrame:
        raise OSError("label source unavailable")

    monkeypatch.setattr(LabelUpdater, "get_update_data", broken)
    new = manager.routine("2019-08-09")
    assert _days(new).max() == pd.Timestamp("2019-08-09")
    assert _days(manager.get_signals()).max() == pd.Timestamp("2019-08-09")
    monkeypatch.setattr(LabelUpdater, "get_update_data", original)
    manager.routine("2019-08-16")  # the next routine fills the labels in
    [online] = manager.strategies[0].tool.online_models()
    labels = online.load_object(LABEL_FILE).dropna()
    assert _days(labels).max() >= pd.Timestamp("2019-08-09")
    assert _days(labels).min() == test_start(online.load_object("task"))


def _routine_arguments(config: Path, output: Path, day: str) -> list[str]:
    return ["online", "routine", "--config", str(config), "--output", str(output),
            "--cur-time", day]


def test_unreadable_signal_file_is_kept_aside_not_overwritten(
        tmp_path: Path, isolated_settings: Settings,
        online_market: tuple[Path, pd.DatetimeIndex]) -> None:
    """Its rows may hold days served as no rebuild would serve them: they stay on disk."""
    output = tmp_path / "out"
    config = _config(tmp_path, online_market[0], "attack_unreadable")
    assert main(_routine_arguments(config, output, "2019-08-05")) == 0
    damaged = (output / "signals.parquet").read_bytes()[:-100]  # a cut-short copy
    (output / "signals.parquet").write_bytes(damaged)
    assert main(_routine_arguments(config, output, "2019-08-08")) == 0
    [kept] = output.glob("signals.parquet.unreadable-*")
    assert kept.read_bytes() == damaged
    written = read_signals(output)
    assert written is not None and _days(written).max() == pd.Timestamp("2019-08-08")


def test_disk_full_while_writing_signals_is_one_line_and_caught_up(
        tmp_path: Path, isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch,
        online_market: tuple[Path, pd.DatetimeIndex],
        capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out"
    config = _config(tmp_path, online_market[0], "attack_disk_full")
    assert main(_routine_arguments(config, output, "2019-08-05")) == 0
    before = (output / "signals.parquet").read_bytes()
    original = os.fsync

    def full(descriptor: int) -> None:
        if os.readlink(f"/proc/self/fd/{descriptor}").startswith(str(output)):
            raise OSError(28, "No space left on device")
        original(descriptor)

    monkeypatch.setattr(os, "fsync", full)
    capsys.readouterr()
    assert main(_routine_arguments(config, output, "2019-08-08")) == 2
    error = capsys.readouterr().err.strip()
    assert "No space left on device" in error and len(error.splitlines()) == 1
    assert (output / "signals.parquet").read_bytes() == before
    assert not list(output.glob(".*.tmp"))
    monkeypatch.setattr(os, "fsync", original)
    assert main(_routine_arguments(config, output, "2019-08-08")) == 0
    written = read_signals(output)
    assert written is not None
    assert list(_days(written)[-4:]) == list(pd.DatetimeIndex(
        ["2019-08-05", "2019-08-06", "2019-08-07", "2019-08-08"]))


def test_runs_of_an_older_version_without_chain_names_are_served_not_retrained(
        module_settings: Settings, online_market: tuple[Path, pd.DatetimeIndex]) -> None:
    """Tasks trained before they named their chain (older taskroll): reused after an upgrade."""
    from taskroll.online.models import CHAIN_FIELD
    from taskroll.online.tool import OnlineToolR
    from taskroll.task.gen import task_generator
    from taskroll.train.trainer import TrainerR

    name = "attack_unmarked"
    calendar = online_market[1]
    template = make_template(online_market[0])
    template["dataset"]["kwargs"]["segments"]["test"] = ("2019-07-01", str(BEGIN.date()))
    old_tasks = task_generator([template], RollingGen(step=20, calendar=calendar))
    assert old_tasks and all(CHAIN_FIELD not in task for task in old_tasks)
    old_runs = TrainerR(experiment_name=name).train(old_tasks, experiment_name=name)
    OnlineToolR(name).reset_online_tag(old_runs[-1:])  # as the older routine left them
    strategy = RollingStrategy(name, make_template(online_market[0]),
                               RollingGen(step=20, calendar=calendar))
    manager = OnlineManager(strategy, begin_time=BEGIN)
    manager.routine(LATER)
    reference = OnlineManager(
        RollingStrategy("attack_unmarked_reference", make_template(online_market[0]),
                        RollingGen(step=20, calendar=calendar)), begin_time=BEGIN).simulate(LATER)
    pd.testing.assert_series_equal(manager.get_signals(), reference)
    assert set(trained_per_window(name).values()) == {1}  # no window trained again
    assert (sorted(trained_per_window(name).values())
            == sorted(trained_per_window("attack_unmarked_reference").values()))
    assert {run.id for run in old_runs} <= {run.id for run in _runs(name)}
