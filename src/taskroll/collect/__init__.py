"""taskroll.collect: gather the artifacts of trained models and merge them.

Collectors (:mod:`~taskroll.collect.collector`) load ``{key: artifact}`` dicts from
recorders; groups (:mod:`~taskroll.collect.group`) split them and ensembles
(:mod:`~taskroll.collect.ensemble`) merge each group, as in Qlib's
``qlib.workflow.task.collect`` and ``qlib.model.ens``.
"""

from taskroll.collect.collector import (
    Collector,
    MergeCollector,
    RecorderCollector,
    default_rec_key,
    model_and_test_segment_key,
    recorder_id_key,
)
from taskroll.collect.ensemble import (
    AverageEnsemble,
    Ensemble,
    RollingEnsemble,
    SingleKeyEnsemble,
    flatten_dict,
)
from taskroll.collect.group import Group, RollingGroup

__all__ = [
    "AverageEnsemble",
    "Collector",
    "Ensemble",
    "Group",
    "MergeCollector",
    "RecorderCollector",
    "RollingEnsemble",
    "RollingGroup",
    "SingleKeyEnsemble",
    "default_rec_key",
    "flatten_dict",
    "model_and_test_segment_key",
    "recorder_id_key",
]
