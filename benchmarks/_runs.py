"""Shared by the benchmark scripts: one process per run, and mean ± sd tables of saved
JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np


def run_each(script: str, runs: Iterable[Sequence], options: Sequence[str] = ()) -> None:
    """Run ``script --one <run...> <options...>`` once per run, each in its own process (so
    that its peak RSS is its own), printing the last line of each (one JSON line)."""
    for run in runs:
        cmd = [sys.executable, script, "--one", *map(str, run), *options]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            sys.stderr.write(res.stderr)
            raise SystemExit(f"run {' / '.join(map(str, run))} failed")
        print(res.stdout.strip().splitlines()[-1], flush=True)


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
    """Table cells of ``cols``: mean ± sd over the runs (``seconds``: the mean, rounded;
    "n/a" where a run lacks the value: lines of an older version, or NaN)."""
    cells = []
    for c in cols:
        v = np.array([r.get(c, np.nan) for r in runs], dtype=float)
        if np.isnan(v).any():
            cells.append("n/a")
        else:
            cells.append(f"{v.mean():.0f}" if c == "seconds" else f"{v.mean():.3f} ± {v.std():.3f}")
    return cells
