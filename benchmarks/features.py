"""Benchmark Alpha158 feature building on the demo's market, against an earlier commit.

Builds the demo's synthetic market (150 instruments, 2017-2022, windows 5/10/20/60) and
times :func:`taskroll.data.compute_alpha158` on it (best and median of ``--repeat``
runs, after one warm-up). With ``--baseline REF`` the same measurement runs on a
checkout of git ``REF`` (a temporary worktree, in a subprocess), so both figures and
their ratio come from one run on one machine. Run::

    python benchmarks/features.py [--baseline HEAD~5] [--repeat 5] [--instruments 150]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import baseline


def measure(instruments: int, repeat: int, windows: tuple[int, ...]) -> dict[str, float]:
    """Time compute_alpha158 of the demo market in this interpreter; seconds per build."""
    from taskroll.data import SyntheticMarket, compute_alpha158

    bars = SyntheticMarket(seed=0, n_instruments=instruments, start="2017-01-01",
                           end="2022-12-31").bars()
    compute_alpha158(bars, windows)  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        compute_alpha158(bars, windows)
        times.append(time.perf_counter() - started)
    return {"rows": float(len(bars)), "best": min(times), "median": statistics.median(times)}


def measure_at(ref: str, instruments: int, repeat: int, windows: tuple[int, ...]) -> dict[str, float]:
    """Run :func:`measure` on a temporary worktree of git ``ref``."""
    return baseline.measure_at(ref, "features", "measure", [instruments, repeat, list(windows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git ref to compare with (e.g. HEAD~3)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--instruments", type=int, default=150)
    parser.add_argument("--windows", default="5,10,20,60")
    args = parser.parse_args(argv)
    windows = tuple(int(window) for window in args.windows.split(","))
    rows = [("this tree", measure(args.instruments, args.repeat, windows))]
    if args.baseline:
        rows.append((f"baseline {args.baseline}",
                     measure_at(args.baseline, args.instruments, args.repeat, windows)))
    print(f"Alpha158 on {args.instruments} instruments x 2017-2022, windows {list(windows)}, "
          f"{args.repeat} runs each")
    print(f"{'code':<24}{'rows':>10}{'best s':>10}{'median s':>10}{'vs this tree':>14}")
    mine = rows[0][1]["median"]
    for name, figures in rows:
        print(f"{name:<24}{int(figures['rows']):>10}{figures['best']:>10.3f}"
              f"{figures['median']:>10.3f}{figures['median'] / mine:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
