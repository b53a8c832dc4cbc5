"""How low can held-out FOSCTTM go on sci-CAR A549 when every training pair is known?

Supervised references fitted on all 1,534 paired train cells of the paper's split, scored on
its 340 test cells: ridge regression from one modality's principal components to the
other's (both directions), k-NN and MLP regression ATAC -> RNA. Every setting of a small grid
is scored on the *test* cells and the best is reported, so these numbers are optimistic upper
bounds of what a supervised map of this kind reaches, not fair competitors. One JSON line
per model family and direction.

    .venv/bin/python benchmarks/a549_foscttm_ceiling.py
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor

import transmodal as tm
from _runs import json_line


def lognorm(x) -> np.ndarray:
    x = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
    lib = np.maximum(x.sum(1, keepdims=True), 1.0)
    return np.log1p(x / lib * np.median(lib))


def main() -> None:
    import argparse

    # (no options: --help says what it does, anything else is refused)
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    d = tm.datasets.scicar_a549()
    train = (d["rna"].obs["yang2021_split"] == "train").to_numpy()
    test = ~train
    x = {"rna": lognorm(d["rna"].X), "atac": lognorm(d["atac"].X)}
    pcs = {
        (m, k): PCA(k, random_state=0).fit(x[m][train]).transform(x[m])
        for m in x
        for k in (10, 20, 50, 100)
    }
    models = {
        "ridge": [Ridge(alpha=a) for a in (1, 10, 100, 1000)],
        "knn": [KNeighborsRegressor(k) for k in (10, 30, 100)],
        "mlp": [
            MLPRegressor(hidden_layer_sizes=h, alpha=1.0, max_iter=500, random_state=0)
            for h in ((64,), (256, 64))
        ],
    }
    for family, regs in models.items():
        for src, tgt in (("atac", "rna"), ("rna", "atac")):
            if family != "ridge" and src == "rna":
                continue
            best = (np.inf, None)
            for (ms, ks), xs in pcs.items():
                if ms != src:
                    continue
                for kt in (10, 20, 50):
                    yt = pcs[(tgt, kt)]
                    for reg in regs:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", ConvergenceWarning)
                            reg.fit(xs[train], yt[train])
                        f = tm.metrics.foscttm(reg.predict(xs[test]), yt[test])
                        if f < best[0]:
                            best = (f, f"{src} PCs {ks} -> {tgt} PCs {kt}, {reg!r}")
            print(json_line({"model": family, "direction": f"{src}_to_{tgt}",
                              "best_test_foscttm": round(float(best[0]), 4),
                              "setting": best[1]}), flush=True)


if __name__ == "__main__":
    main()
