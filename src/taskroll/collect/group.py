"""Groups: split collected artifacts into groups and reduce each with an ensemble.

Qlib's ``qlib.model.ens.group``. A :class:`Group` is used as a processor of a
collector: ``{key: artifact}`` goes in, ``{group_key: ensemble(group)}`` comes out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from taskroll.collect.ensemble import Ensemble, RollingEnsemble

_logger = logging.getLogger(__name__)
GroupFunction = Callable[..., dict[Any, Any]]
EnsembleFunction = Callable[..., Any]


class Group:
    """Group a dict, then reduce every group with an ensemble.

    Args:
        group_func: ``group_func(ungrouped_dict) -> {group_key: {key: artifact}}``;
            subclasses may override :meth:`group` instead.
        ens: Applied to each group's dict (an :class:`Ensemble` or any callable).
        n_jobs: Default processes used to reduce groups in parallel (``1``: in this
            process; ``-1``: one per CPU). Parallel reduction needs a picklable ``ens``.
    """

    def __init__(self, group_func: GroupFunction | None = None,
                 ens: Ensemble | EnsembleFunction | None = None, n_jobs: int = 1):
        self._group_func = group_func
        self._ens_func = ens
        self.n_jobs = n_jobs

    def group(self, ungrouped_dict: Mapping[Any, Any], *args: Any,
              **kwargs: Any) -> dict[Any, Any]:
        """Split ``ungrouped_dict`` into ``{group_key: {key: artifact}}``.

        Raises:
            NotImplementedError: When no ``group_func`` was given and it is not overridden.
        """
        if self._group_func is None:
            raise NotImplementedError(f"{type(self).__name__}: give group_func or override group")
        return self._group_func(ungrouped_dict, *args, **kwargs)

    def reduce(self, *args: Any, **kwargs: Any) -> Any:
        """Reduce one group's dict to one value with the ensemble (Qlib's signature).

        ``{C1: a, C2: b}`` becomes ``ens({C1: a, C2: b})``. :meth:`__call__` calls it once
        per group, so a subclass that overrides ``reduce(self, group_value)`` (as Qlib
        subclasses do) is used for every group. (Qlib's ``__call__`` calls the base
        ``Group.reduce`` instead, which ignores such an override; here it is honoured.)

        Args:
            *args: Passed to the ensemble (the group's dict first).
            **kwargs: Passed to the ensemble.

        Returns:
            The reduced value.

        Raises:
            NotImplementedError: When no ensemble was given and it is not overridden.
        """
        if self._ens_func is None:
            raise NotImplementedError(f"{type(self).__name__}: give ens or override reduce")
        return self._ens_func(*args, **kwargs)

    def __call__(self, ungrouped_dict: Mapping[Any, Any], n_jobs: int | None = None,
                 verbose: int = 0, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        """Group, then :meth:`reduce` every group (Qlib's signature).

        Args:
            ungrouped_dict: ``{key: artifact}``.
            n_jobs: Processes reducing groups in parallel; ``None`` for the instance's
                ``n_jobs``, ``-1`` for one per CPU. Parallel reduction pickles ``self``.
            verbose: Above 0, log each group as it is reduced (Qlib passes it to joblib).
            *args: Passed to :meth:`group`.
            **kwargs: Passed to :meth:`group`.

        Returns:
            ``{group_key: reduce(group)}`` in the order of :meth:`group`'s result.
        """
        grouped = self.group(ungrouped_dict, *args, **kwargs)
        jobs = self.n_jobs if n_jobs is None else n_jobs
        if jobs < 0:
            jobs = os.cpu_count() or 1
        keys = list(grouped)
        values = [grouped[key] for key in keys]
        if verbose > 0:
            _logger.info("%s: reducing %d group(s) with %d process(es): %s", type(self).__name__,
                         len(keys), max(1, min(jobs, len(keys))), keys)
        if jobs <= 1 or len(values) <= 1:
            return {key: self.reduce(value) for key, value in zip(keys, values, strict=True)}
        with ProcessPoolExecutor(max_workers=min(jobs, len(values))) as executor:
            reduced = list(executor.map(self.reduce, values))
        return dict(zip(keys, reduced, strict=True))


class RollingGroup(Group):
    """Group rolling models: keys are tuples whose last element is the rolling key.

    ``{("Linear", seg1): a, ("Linear", seg2): b}`` groups to
    ``{("Linear",): {seg1: a, seg2: b}}``, reduced by :class:`RollingEnsemble`.

    Args:
        ens: Ensemble for each group (default: a new :class:`RollingEnsemble`).
        n_jobs: Processes for parallel reduction.
    """

    def __init__(self, ens: Ensemble | EnsembleFunction | None = None, n_jobs: int = 1):
        super().__init__(ens=ens if ens is not None else RollingEnsemble(), n_jobs=n_jobs)

    def group(self, ungrouped_dict: Mapping[Any, Any], *args: Any,
              **kwargs: Any) -> dict[Any, Any]:
        """Group by every key element but the last.

        Raises:
            TypeError: When a key is not a non-empty tuple.
        """
        grouped: dict[Any, dict[Any, Any]] = {}
        for key, value in ungrouped_dict.items():
            if not isinstance(key, tuple) or not key:
                raise TypeError(f"RollingGroup expects tuple keys ending with the rolling key, "
                                f"got {key!r}")
            grouped.setdefault(key[:-1], {})[key[-1]] = value
        return grouped
