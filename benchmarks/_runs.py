"""Shared by the benchmark scripts: one process per run, and mean ± sd tables of saved
JSON lines."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


def json_line(record: Any, **kwargs: Any) -> str:
    """``record`` as one line of strict JSON: a NaN or an infinity (a value that does not
    apply, e.g. a joint model's drift from a reference it does not have) is written as
    ``null``, which every JSON parser reads (``NaN`` is Python's extension)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(record), allow_nan=False, **kwargs)


def run_each(script: str, runs: Iterable[Sequence], options: Sequence[str] = ()) -> None:
    """Run ``script --one <run...> <options...>`` once per run, each in its own process (so
    that its peak RSS is its own), printing the last line of each (one JSON line)."""
    for run in runs:
        cmd = [sys.executable, script, "--one", *map(str, run), *options]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            sys.stderr.write(res.stderr)
            raise SystemExit(f"run {' / '.join(map(str, run))} failed")
        lines = res.stdout.strip().splitlines()
        if not lines:
            sys.stderr.write(res.stderr)
            raise SystemExit(f"run {' / '.join(map(str, run))} printed no result")
        print(lines[-1], flush=True)


def grid_parser(
    doc: str, axis: str, values: Sequence[str], methods: Sequence[str],
    max_epochs: int | None = 60, epochs_help: str | None = None,
) -> argparse.ArgumentParser:
    """The options of a benchmark over a grid of ``axis`` values (``--{axis}s``), methods
    and seeds: ``--max-epochs`` (default ``max_epochs``; ``None``: the script chooses, as
    ``epochs_help`` says), ``--summary FILE`` and the internal ``--one`` of
    :func:`run_each`; a script adds its own before :func:`grid_main`."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(f"--{axis}s", nargs="+", choices=list(values), default=list(values),
                        help=f"{axis}s to run (default: all)")
    parser.add_argument("--methods", nargs="+", choices=list(methods), default=list(methods),
                        help="methods to run (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="seeds, one run each (default: 0 1 2)")
    parser.add_argument("--max-epochs", type=int, default=max_epochs,
                        help=epochs_help or f"epochs per run (default {max_epochs})")
    parser.add_argument("--summary", metavar="FILE", help="print the table of saved lines")
    parser.add_argument("--one", nargs=3, metavar=(axis.upper(), "METHOD", "SEED"),
                        help=argparse.SUPPRESS)
    return parser


def grid_main(
    parser: argparse.ArgumentParser,
    script: str,
    axis: str,
    summary: Callable[[str], None],
    run_one: Callable[[argparse.Namespace, str, str, int], dict],
    options: Callable[[argparse.Namespace], Sequence[str]],
) -> None:
    """Parse the options of :func:`grid_parser`; then print the summary table of saved
    lines, one run's JSON line (``--one``), or run every (value, seed, method) of the grid
    in its own process, passing on ``options(args)``."""
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return
    if args.one:
        value, method, seed = args.one
        print(json_line(run_one(args, value, method, int(seed))))
        return
    runs = [(value, method, seed) for value in getattr(args, f"{axis}s") for seed in args.seeds
            for method in args.methods]
    epochs = [] if args.max_epochs is None else ["--max-epochs", str(args.max_epochs)]
    run_each(script, runs, [*epochs, *options(args)])


def grouped(path: str, key: Callable[[dict], tuple]) -> dict[tuple, list[dict]]:
    """The JSON lines of ``path`` grouped by ``key(line)``."""
    runs: dict[tuple, list[dict]] = defaultdict(list)
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                runs[key(rec)].append(rec)
    return runs


def mean_sd(runs: list[dict], cols: Sequence[str]) -> list[str]:
    """Table cells of ``cols``: mean ± sd over the runs (``seconds``, ``*_seconds``: the
    mean, rounded; "n/a" where a run lacks the value: lines of an older version, or NaN)."""
    cells = []
    for c in cols:
        v = np.array([r.get(c, np.nan) for r in runs], dtype=float)
        if np.isnan(v).any():
            cells.append("n/a")
        else:
            cells.append(f"{v.mean():.0f}" if c == "seconds" or c.endswith("_seconds")
                         else f"{v.mean():.3f} ± {v.std():.3f}")
    return cells


def scenario_table(path: str, scenarios: Sequence[str], methods: Sequence[str],
                   cols: Sequence[str]) -> None:
    """Print the README table of a (scenario, method) grid: mean ± sd of ``cols`` over the
    seeds of each, in the order of ``scenarios`` and ``methods``."""
    runs = grouped(path, lambda r: (r["scenario"], r["method"]))
    print("| scenario | method | seeds | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 3) + "|")
    for (scenario, method), rs in sorted(runs.items(), key=lambda kv: (
            scenarios.index(kv[0][0]), methods.index(kv[0][1]))):
        print(f"| {scenario} | {method} | {len(rs)} | " + " | ".join(mean_sd(rs, cols)) + " |")
