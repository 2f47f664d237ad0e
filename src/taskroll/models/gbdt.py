"""A LightGBM model (``pip install "taskroll[lgb]"``), imported lazily."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from taskroll.errors import DataError, TaskConfigError, require
from taskroll.models.base import (
    Model,
    NotFittedError,
    Reweighter,
    as_scores,
    infer_features,
    learn_data,
)

_LOSSES = {"mse": "regression", "mae": "regression_l1", "huber": "huber",
           "binary": "binary"}
_OWN_NAMES = ("loss", "early_stopping_rounds", "num_boost_round", "base_params")


class LGBModel(Model):
    """Gradient-boosted trees with LightGBM (Qlib's ``LGBModel``, same keyword arguments).

    Trains on the ``train`` segment and, when the dataset has a ``valid`` segment,
    stops early on it. ``num_boost_round`` (1000) and ``early_stopping_rounds`` (50)
    default to Qlib's values. Every other keyword argument is a LightGBM parameter,
    passed through under any of LightGBM's names for it (``colsample_bytree`` or
    ``feature_fraction``, ``subsample``, ``lambda_l1``, ``max_depth``, ``num_threads``,
    ...); a name LightGBM does not know is refused, never ignored, and values are
    checked by LightGBM when training starts.

    Under those parameters lie ``base_params``: by default :attr:`DEFAULT_PARAMS`, set
    for speed and reproducibility (one thread, so that parallel workers do not
    oversubscribe the cores; 63 bins; a fixed seed; bagging every round); a default is
    dropped when the task sets the same parameter under any alias. Qlib's
    ``LGBModel`` passes nothing but the objective, i.e. ``base_params={"verbosity": -1}``
    (LightGBM's own defaults), which is what a task naming
    ``qlib.contrib.model.gbdt`` gets when Qlib is not installed.

    Args:
        loss: ``"mse"`` or ``"binary"`` (as Qlib), or ``"mae"``, ``"huber"``.
        early_stopping_rounds: Rounds without improvement on ``valid`` before stopping
            (0: never stop early).
        num_boost_round: Maximum number of boosting rounds.
        base_params: LightGBM parameters under the given ones (``None``:
            :attr:`DEFAULT_PARAMS`).
        **params: LightGBM parameters, overriding ``base_params`` and the loss's objective.

    Raises:
        TaskConfigError: For an unknown loss, a negative round count, or a keyword
            argument that is no LightGBM parameter (the message names the closest one).
    """

    DEFAULT_PARAMS: Mapping[str, Any] = MappingProxyType({
        "num_leaves": 31, "learning_rate": 0.05, "num_threads": 1, "min_data_in_leaf": 100,
        "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "max_bin": 63,
        "seed": 0, "deterministic": True, "verbosity": -1,
    })

    def __init__(self, loss: str = "mse", early_stopping_rounds: int = 50,
                 num_boost_round: int = 1000, base_params: Mapping[str, Any] | None = None,
                 **params: Any) -> None:
        if loss not in _LOSSES:
            raise TaskConfigError(f"LGBModel loss must be one of {sorted(_LOSSES)}, got {loss!r}")
        for name, value in (("num_boost_round", num_boost_round),
                            ("early_stopping_rounds", early_stopping_rounds)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise TaskConfigError(f"LGBModel {name} must be an integer >= 0, got {value!r}")
        self.loss = loss
        self.num_boost_round = int(num_boost_round)
        self.early_stopping_rounds = int(early_stopping_rounds)
        base = dict(self.DEFAULT_PARAMS if base_params is None else base_params)
        aliases = lightgbm_parameter_aliases()
        if aliases is not None:
            check_parameter_names(params, aliases)
            check_parameter_names(base, aliases, "base_params")
            given = {canonical for canonical, names in aliases.items()
                     if any(name in params for name in names)}
            base = {name: value for name, value in base.items()
                    if not any(name in aliases.get(canonical, ()) for canonical in given)}
        self.params: dict[str, Any] = {**base, "objective": _LOSSES[loss], **params}
        self.model: Any = None
        self.evals_result: dict[str, Any] = {}
        self.feature_names_: list[str] = []

    def _datasets(self, lgb: Any, dataset: Any, reweighter: Reweighter | None
                  ) -> list[tuple[Any, str]]:
        names = ["train", *(["valid"] if "valid" in getattr(dataset, "segments", {}) else [])]
        built: list[tuple[Any, str]] = []
        for name in names:
            features, label, weights, columns = learn_data(dataset, name, reweighter)
            self.feature_names_ = columns
            reference = built[0][0] if built else None
            built.append((lgb.Dataset(features, label=label, weight=weights,
                                      reference=reference, free_raw_data=True), name))
        return built

    def fit(self, dataset: Any, reweighter: Reweighter | None = None,
            num_boost_round: int | None = None, early_stopping_rounds: int | None = None,
            verbose_eval: int = 0, evals_result: dict[str, Any] | None = None) -> None:
        """Train on ``train``, early-stopping on ``valid`` when the dataset has one.

        Args:
            dataset: The dataset.
            reweighter: Optional per-row training weights.
            num_boost_round: Overrides the constructor's value.
            early_stopping_rounds: Overrides the constructor's value.
            verbose_eval: Log the evaluation every this many rounds (0: silent).
            evals_result: A dict to fill with the evaluation history, as Qlib's (it is
                also kept as ``self.evals_result``).

        Raises:
            MissingDependencyError: When lightgbm is not installed.
            DataError: When a segment has no complete rows.
            TaskConfigError: When LightGBM refuses a parameter's value.
        """
        lgb: Any = require("lightgbm", "lgb")
        sets = self._datasets(lgb, dataset, reweighter)
        self.evals_result = {} if evals_result is None else evals_result
        self.evals_result.clear()
        callbacks = [lgb.record_evaluation(self.evals_result)]
        if verbose_eval:
            callbacks.append(lgb.log_evaluation(period=verbose_eval))
        rounds = self.num_boost_round if num_boost_round is None else num_boost_round
        patience = (self.early_stopping_rounds if early_stopping_rounds is None
                    else early_stopping_rounds)
        if len(sets) > 1 and patience > 0:
            callbacks.append(lgb.early_stopping(patience, verbose=False))
        try:
            self.model = lgb.train(self.params, sets[0][0], num_boost_round=rounds,
                                   valid_sets=[data for data, _ in sets],
                                   valid_names=[name for _, name in sets], callbacks=callbacks)
        except lgb.basic.LightGBMError as error:
            raise TaskConfigError(f"LGBModel: LightGBM refused the parameters {self.params}: "
                                  f"{error}") from error

    def finetune(self, dataset: Any, num_boost_round: int = 10,
                 reweighter: Reweighter | None = None) -> None:
        """Continue boosting the fitted model on ``train`` for ``num_boost_round`` rounds.

        Raises:
            NotFittedError: When the model is not fitted.
        """
        if self.model is None:
            raise NotFittedError("LGBModel is not fitted yet; call fit(dataset) first")
        lgb: Any = require("lightgbm", "lgb")
        train, _ = self._datasets(lgb, dataset, reweighter)[0]
        self.model = lgb.train(self.params, train, num_boost_round=num_boost_round,
                               init_model=self.model, keep_training_booster=True)

    def predict(self, dataset: Any, segment: str | slice = "test") -> pd.Series:
        """Return the boosted trees' predictions for the rows of ``segment``.

        Raises:
            NotFittedError: When called before :meth:`fit`.
            DataError: When the features differ in number from those fitted on.
        """
        if self.model is None:
            raise NotFittedError("LGBModel is not fitted yet; call fit(dataset) first")
        features = infer_features(dataset, segment)
        expected = self.model.num_feature()
        if features.shape[1] != expected:
            raise DataError(f"LGBModel was fitted on {expected} features but segment "
                            f"{segment!r} has {features.shape[1]}")
        values = self.model.predict(features.to_numpy(dtype=np.float64))
        return as_scores(values, features.index)

    def get_feature_importance(self, importance_type: str = "split") -> pd.Series:
        """Return feature importances, largest first.

        Raises:
            NotFittedError: When the model is not fitted.
        """
        if self.model is None:
            raise NotFittedError("LGBModel is not fitted yet; call fit(dataset) first")
        values = self.model.feature_importance(importance_type=importance_type)
        names = self.feature_names_ or [f"f{index}" for index in range(len(values))]
        return pd.Series(values, index=names).sort_values(ascending=False)


def lightgbm_parameter_aliases() -> dict[str, list[str]] | None:
    """Return LightGBM's parameters, each with all its names, or ``None`` without LightGBM.

    The table comes from LightGBM itself (``LGBM_DumpParamAliases`` through its Python
    package), so it always matches the installed version; it is read once per process
    and must not be changed.
    """
    if not _Aliases.loaded:
        _Aliases.table = _load_aliases()
        _Aliases.loaded = True
    return _Aliases.table


class _Aliases:
    """LightGBM's parameter table, read once per process."""

    loaded = False
    table: dict[str, list[str]] | None = None


def _load_aliases() -> dict[str, list[str]] | None:
    try:
        from lightgbm.basic import _ConfigAliases
    except ImportError:
        return None
    try:
        table = _ConfigAliases._get_all_param_aliases()
    except Exception:  # a LightGBM without the table: names are left to LightGBM
        return None
    return {str(name): [str(alias) for alias in names] for name, names in table.items()}


def check_parameter_names(params: Mapping[str, Any], aliases: Mapping[str, Sequence[str]],
                          where: str = "LGBModel") -> None:
    """Raise for a name in ``params`` that is no LightGBM parameter (nor an alias of one).

    Raises:
        TaskConfigError: Naming the unknown keyword argument and the closest valid name.
    """
    known = {alias for names in aliases.values() for alias in names}
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known | set(_OWN_NAMES)), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TaskConfigError(f"{where}: unknown keyword argument {name!r}: it is neither an "
                                  f"LGBModel argument ({', '.join(_OWN_NAMES)}) nor a LightGBM "
                                  f"parameter{hint}")
