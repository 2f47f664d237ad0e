"""Reference models: ``taskroll.models.linear.LinearModel`` (numpy) and
``taskroll.models.gbdt.LGBModel`` (LightGBM, imported only when used)."""

from taskroll.models.base import Model, NotFittedError, Reweighter
from taskroll.models.gbdt import LGBModel
from taskroll.models.linear import LinearModel

__all__ = ["LGBModel", "LinearModel", "Model", "NotFittedError", "Reweighter"]
