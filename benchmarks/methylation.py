"""DNA methylation as a modality: unmeasured regions skipped (``Modality(missing=True)``)
against the usual ways of filling them in.

Simulated RNA counts + single-cell methylation rates (:func:`transmodal.datasets.synthetic`,
kind ``"methylation"``: 4 clusters, 2,400 cells measured in both, 500 genes, 1,000 regions;
a region's rate is its methylated / covering reads, NaN where no read covers it, about 36 %
of entries covered, most of them by one read). Coverage settings: ``full`` (as simulated),
``sparse`` (each covered entry kept with probability 0.25: about 9 % covered, closer to
single-cell bisulfite data over small regions) and ``deep`` (ten times the reads,
``methylation_coverage=5``: 94 % covered, by 1 to 14 reads (5th to 95th percentile), as for
larger regions or deeper sequencing, where entries differ most in how much they are worth). 80 % of the cells (seeded) train the model,
10 % of them as anchor pairs (``--anchor-fraction``; 0: unpaired, the pairs hidden from the
model, which then uses its shape-based pseudo-pairs); the other 20 % are scored, never seen
in training.

Methods (same networks and epochs; ``continuous_bernoulli`` on the rates unless said):

- ``missing``: ``Modality("continuous_bernoulli", missing=True)``, the library's way: the
  encoder sees an unmeasured region as its training mean, which the per-region scaling (on
  by default with ``missing``) makes 0, and the reconstruction loss skips it;
- ``missing_unscaled``: the same with ``scale=False`` (the rates enter the encoder as they
  are, the continuous Bernoulli's default);
- ``mean_scaled``: NaN replaced by the region's mean over the training cells beforehand,
  scaled (the encoder input of ``missing``, up to the standard deviations, which now count
  the imputed values), and the imputed values reconstructed as if measured;
- ``mean``: the same without scaling;
- ``zero``: NaN replaced by 0 (an uncovered region read as unmethylated), not scaled;
- ``binomial``: ``Modality("binomial", layer="methylated", total_layer="coverage")`` on the
  read counts: the encoder input of ``missing`` (the rates, scaled, unmeasured as 0), the
  loss a binomial of the methylated reads out of the covering ones, so that every read
  counts (a region covered by 5 reads weighs 5 times one covered by 1);
- ``betabinomial``: the same with a beta-binomial (a learned per-region overdispersion,
  MethylVI's default likelihood).

Per run one JSON line, on the held-out cells: ``foscttm`` (true pairs), ``label_transfer``
(5-NN, methylation -> RNA), ``pearson_rna_to_met`` (RNA -> methylation translations against
the measured rates, each cell over its covered regions), ``region_pearson_rna_to_met`` (the
same per region, across the held-out cells covering it: the cell-to-cell variation, which
the per-cell correlation mostly misses since regions differ far more in their mean level
than cells do), ``region_pearson_5reads`` (the same over the entries covered by at least 5
reads, whose measured rates are close to the truth: mostly for ``deep``),
``pearson_met_to_rna`` (methylation -> RNA translations against the
measured counts, log1p) and the mean-profile baselines of both, ``seconds`` (model creation
+ training), ``peak_rss_mib``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/methylation.py --seeds 0 1 2 | tee benchmarks/out/methylation.jsonl
    .venv/bin/python benchmarks/methylation.py --summary benchmarks/out/methylation.jsonl
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from _runs import grid_main, grid_parser, grouped, mean_sd

# setting: (mean reads per cell and region as simulated, share of covered entries kept)
COVERAGES = {"full": (0.5, 1.0), "sparse": (0.5, 0.25), "deep": (5.0, 1.0)}
METHODS = ("missing", "missing_unscaled", "mean_scaled", "mean", "zero", "binomial",
           "betabinomial")
N_CELLS = 2400
N_FEATURES = {"rna": 500, "met": 1000}
TEST_FRACTION = 0.2
ANCHOR_FRACTION = 0.1
N_LATENT = 16


def make_data(coverage: str, seed: int, n_cells: int = N_CELLS):
    """Paired ``{"rna", "met"}`` data (methylation thinned to the coverage setting) and
    the boolean mask of test cells."""
    import transmodal as tm

    reads, keep = COVERAGES[coverage]
    data = tm.datasets.synthetic(
        n_cells, modalities={"rna": "nb", "met": "methylation"}, n_features=N_FEATURES,
        seed=seed, methylation_coverage=reads,
    )
    rng = np.random.default_rng(seed + 1000)
    met = data["met"]
    drop = rng.random(met.shape) >= keep
    met.X[drop] = np.nan
    for key in ("coverage", "methylated"):  # the dropped entries' reads too
        met.layers[key][drop] = 0
    test = np.zeros(n_cells, dtype=bool)
    test[rng.choice(n_cells, int(TEST_FRACTION * n_cells), replace=False)] = True
    return data, test


def region_pearson(pred: np.ndarray, observed: np.ndarray, min_cells: int = 10) -> float:
    """Mean over regions of the Pearson correlation, across the cells that cover the region
    (at least ``min_cells``), of translated and measured rates: does the translation follow
    the cell-to-cell variation (0 for any profile that is the same in every cell)?"""
    out = []
    for j in range(observed.shape[1]):
        keep = ~np.isnan(observed[:, j])
        if keep.sum() >= min_cells and np.ptp(observed[keep, j]) > 0 and np.ptp(pred[keep, j]) > 0:
            out.append(np.corrcoef(pred[keep, j], observed[keep, j])[0, 1])
    return float(np.mean(out)) if out else float("nan")


def run_one(
    coverage: str, method: str, seed: int, max_epochs: int, n_cells: int = N_CELLS,
    anchor_fraction: float = ANCHOR_FRACTION,
) -> dict:
    """Train one model and score it on the held-out cells (see the module docstring)."""
    import transmodal as tm
    from transmodal.workflows import comparison_space
    from transmodal.workflows._demo import peak_rss_mib

    warnings.filterwarnings("ignore")
    data, test = make_data(coverage, seed, n_cells)
    rna, met = data["rna"], data["met"]
    measured = met.X.copy()  # NaN = unmeasured: what translations are scored against
    missing = method.startswith("missing")
    reads = method in ("binomial", "betabinomial")
    if not (missing or reads):
        fill = np.nanmean(measured[~test], 0) if "mean" in method else np.zeros(met.n_vars)
        fill = np.nan_to_num(fill, nan=0.0).astype(np.float32)
        met.X = np.where(np.isnan(measured), fill, measured).astype(np.float32)
    specs = {
        "rna": tm.Modality("nb"),
        "met": tm.Modality(method, layer="methylated", total_layer="coverage") if reads
        else tm.Modality(
            "continuous_bernoulli", missing=missing,
            scale={"missing_unscaled": False, "mean_scaled": True}.get(method),
        ),
    }
    train = {"rna": rna[~test].copy(), "met": met[~test].copy()}
    if anchor_fraction == 0:  # unpaired: the pairs hidden, so the model cannot see them
        train["met"].obs_names = [f"met_{name}" for name in train["met"].obs_names]
    t0 = time.perf_counter()
    model = tm.CrossModalAE(
        train, specs, n_latent=N_LATENT, anchor_fraction=anchor_fraction, seed=seed
    )
    model.train(max_epochs=max_epochs, progress_bar=False)
    seconds = time.perf_counter() - t0
    rna_t, met_t = rna[test].copy(), met[test].copy()
    zr = model.get_latent_representation("rna", rna_t)
    zm = model.get_latent_representation("met", met_t)
    labels = rna_t.obs["label"].to_numpy()
    to_met = model.translate(rna_t, source="rna", target="met").X
    to_rna = model.translate(met_t, source="met", target="rna").X
    to_units = comparison_space(model, "rna")[0]  # counts at translate's library size
    counts, train_counts = (to_units(x.X.toarray()) for x in (rna_t, train["rna"]))
    r = tm.metrics
    observed = measured[test]
    # the same per region over well-measured entries only (>= 5 reads: rates known to
    # +-0.22 or better), where a measured rate is close to the truth
    well = np.where(met.layers["coverage"][test] >= 5, observed, np.nan)
    return {
        "coverage": coverage,
        "anchor_fraction": anchor_fraction,
        "method": method,
        "seed": seed,
        "covered_fraction": float(np.mean(~np.isnan(measured))),
        "foscttm": float(r.foscttm(zr, zm)),
        "label_transfer": float(r.label_transfer(zm, labels, zr, labels)),
        "pearson_rna_to_met": float(np.nanmean(
            r.translation_pearson(to_met, observed, missing=True))),
        "baseline_rna_to_met": float(np.nanmean(
            r.mean_profile_baseline(measured[~test], observed, missing=True))),
        "region_pearson_rna_to_met": region_pearson(to_met, observed),
        "region_pearson_5reads": region_pearson(to_met, well),
        "pearson_met_to_rna": float(np.nanmean(
            r.translation_pearson(to_rna, counts, transform=np.log1p))),
        "baseline_met_to_rna": float(np.nanmean(
            r.mean_profile_baseline(train_counts, counts, transform=np.log1p))),
        "epochs": int(model.train_params_["epochs_run"]),
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def summary(path: str) -> None:
    """Print the README table (mean ± sd over seeds) from saved JSON lines."""
    runs = grouped(path, lambda r: (
        r["coverage"], r.get("anchor_fraction", ANCHOR_FRACTION), r["method"]))
    cols = ("covered_fraction", "foscttm", "label_transfer", "pearson_rna_to_met",
            "baseline_rna_to_met", "region_pearson_rna_to_met", "region_pearson_5reads",
            "pearson_met_to_rna", "baseline_met_to_rna", "seconds")
    print("| coverage | anchors | method | seeds | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 4) + "|")
    for (coverage, anchors, method), rs in sorted(runs.items(), key=lambda kv: (
            list(COVERAGES).index(kv[0][0]), -kv[0][1], METHODS.index(kv[0][2]))):
        print(f"| {coverage} | {anchors:.0%} | {method} | {len(rs)} | "
              + " | ".join(mean_sd(rs, cols)) + " |")


def main() -> None:
    parser = grid_parser(__doc__, "coverage", COVERAGES, METHODS)
    parser.add_argument("--anchor-fraction", type=float, default=ANCHOR_FRACTION,
                        help="share of the training cells used as anchor pairs (0: unpaired, "
                        "the pairs hidden; the library's shape-based pseudo-pairs)")
    parser.add_argument("--n-cells", type=int, default=N_CELLS,
                        help="simulated cells, measured in both modalities; 20 %% of them held "
                        f"out and scored (default {N_CELLS})")
    grid_main(
        parser, __file__, "coverage", summary,
        lambda a, coverage, method, seed: run_one(
            coverage, method, seed, a.max_epochs, a.n_cells, a.anchor_fraction),
        lambda a: ["--n-cells", str(a.n_cells), "--anchor-fraction", str(a.anchor_fraction)],
    )


if __name__ == "__main__":
    main()
