"""``taskroll dashboard``: a web view of task pools, failures, workers and rolling windows.

Run ``taskroll dashboard`` (or ``python -m taskroll.dashboard``) with the extra
``pip install "taskroll[dashboard]"`` (Starlette and uvicorn). Modules:

* :mod:`taskroll.dashboard.data`: what the pages show, read from a task store (no web code);
* :mod:`taskroll.dashboard.html`: the pages' HTML, every value escaped;
* :mod:`taskroll.dashboard.views`: the rolling view;
* :mod:`taskroll.dashboard.ensembles`: IC of the rolling and average ensembles (on demand);
* :mod:`taskroll.dashboard.online_view`: the online view;
* :mod:`taskroll.dashboard.app`: the Starlette application (imports Starlette);
* :mod:`taskroll.dashboard.cli`: the command line.

Importing this package (or :mod:`taskroll`) imports no web framework; only
:mod:`~taskroll.dashboard.app`, :mod:`~taskroll.dashboard.views` and
:mod:`~taskroll.dashboard.online_view` do.
"""
