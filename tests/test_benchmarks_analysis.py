"""Smoke tests of the analysis benchmarks' core functions on tiny simulated data."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:  # the scripts import their shared helpers (_runs.py)
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _summary_rows(bench, lines: list[dict], tmp_path) -> list[str]:
    """The table lines a benchmark module's ``summary`` prints for ``lines`` (saved as JSON
    lines first, as the scripts write them)."""
    import contextlib
    import io
    import json

    (tmp_path / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        bench.summary(str(tmp_path / "runs.jsonl"))
    return buf.getvalue().splitlines()


@pytest.fixture(scope="module")
def a549():
    return _load("a549_translated_analysis")


@pytest.fixture(scope="module")
def tcell():
    return _load("tcell_case_study")


def _counts(rng, labels, n_features=40, shift=8):
    mu = np.full((len(labels), n_features), 5.0)
    mu[labels == "3h", :shift] *= 4.0
    mu[labels == "3h", shift : 2 * shift] /= 4.0
    return rng.poisson(mu).astype(np.float64)


def test_log_normalise(a549):
    x = np.array([[1.0, 3.0], [0.0, 0.0]])
    out = a549.log_normalise(x, 8.0)
    np.testing.assert_allclose(np.expm1(out[0]).sum(), 8.0)
    assert np.all(out[1] == 0)


def test_analyse_and_knn_regression(a549):
    rng = np.random.default_rng(0)
    y_tr = np.array(["0h", "1h", "3h"] * 40)
    y_te = np.array(["0h", "3h", "1h"] * 20)
    real_tr = a549.log_normalise(_counts(rng, y_tr), 200.0)
    real_te = a549.log_normalise(_counts(rng, y_te), 200.0)
    names = [f"g{i}" for i in range(real_tr.shape[1])]
    # a perfect "translation": the real test profiles themselves
    res = a549.analyse(real_tr, y_tr, real_te, real_te, y_te, names, n_top=5)
    assert res["auc"] > 0.95 and res["de_pearson"] == pytest.approx(1.0)
    assert res["overlap_up"] == 5 and res["overlap_both_pval"] < 1e-3
    assert res["n_test"] == 40  # only 3h and 0h cells
    # a paired k-NN regression from a source modality carrying the same signal
    src_tr = a549.log_normalise(_counts(rng, y_tr, 30), 100.0)
    src_te = a549.log_normalise(_counts(rng, y_te, 30), 100.0)
    pred = a549.knn_regression(src_tr, np.expm1(real_tr), src_te, k=10, n_pcs=5)
    assert pred.shape == real_te.shape
    res = a549.analyse(real_tr, y_tr, np.log1p(pred), real_te, y_te, names, n_top=5)
    assert res["auc"] > 0.8 and res["de_pearson"] > 0.5


def test_group_test_and_gene_ratio(tcell):
    labels = np.array(["central"] * 20 + ["peripheral"] * 20)
    values = np.r_[np.zeros(20), np.ones(20)] + np.linspace(0, 0.1, 40)
    res = tcell.group_test(values, labels)
    assert res["n_peripheral"] == 20 and res["mannwhitney_pval"] < 1e-6 and res["welch_pval"] < 1e-6
    x = np.log1p(np.array([[3.0, 1.0, 5.0], [1.0, 3.0, 5.0]]))
    with_genes = AnnData(x, var=pd.DataFrame(index=["CORO1A", "RPL10A", "CD3E"]))
    np.testing.assert_allclose(tcell.translated_gene_ratio(with_genes), [1.0, -1.0])
    assert tcell.translated_gene_ratio(with_genes[:, ["CD3E"]]) is None


def _tcell_toy(seed: int = 0):
    rng = np.random.default_rng(seed)
    n_nuc, n_rna = 80, 40
    cluster = np.array(["central", "peripheral"])[np.arange(n_nuc) % 2]
    shells = np.linspace(1.0, 0.3, 10)[None, :] + 0.2 * (cluster == "peripheral")[:, None] * np.linspace(0, 1, 10)
    nuclei = AnnData(
        (shells + 0.02 * rng.normal(size=(n_nuc, 10))).astype(np.float32),
        obs=pd.DataFrame(
            {"chromatin_cluster": cluster, "log2_coro1a_rpl10a": rng.normal(size=n_nuc)},
            index=[f"nucleus_{i}" for i in range(n_nuc)],
        ),
        var=pd.DataFrame(index=[f"shell_{i}" for i in range(10)]),
    )
    genes = ["CORO1A", "RPL10A"] + [f"g{i}" for i in range(18)]
    rna = AnnData(
        np.log1p(rng.poisson(3.0, size=(n_rna, len(genes)))).astype(np.float32),
        obs=pd.DataFrame({"population": np.array(["naive", "memory"])[np.arange(n_rna) % 2]},
                         index=[f"cell_{i}" for i in range(n_rna)]),
        var=pd.DataFrame(index=genes),
    )
    return nuclei, rna


def test_case_study_runs(tcell):
    nuclei, rna = _tcell_toy()
    row, de, latents = tcell.case_study(nuclei, rna, seed=0, n_latent=2, max_epochs=2, n_top=5, n_show=3)
    for key in ("auc_real", "auc_reconstruction", "auc_cycle", "domain_auc_rna_to_image"):
        assert 0.0 <= row[key] <= 1.0
    assert row["auc_real"] > 0.9  # the toy clusters are separable in the real profiles
    assert set(row["rna_predicted_peripheral_by_population"]) == {"naive", "memory"}
    assert row["translated_rna_coro1a_rpl10a"]["available"] is True
    assert len(de) == rna.n_vars and {"pval", "pval_adj", "mean_diff"} <= set(de.columns)
    assert latents["rna"].shape == (rna.n_obs, 2) and latents["image"].shape == (nuclei.n_obs, 2)
    stab = tcell.seed_stability({0: de, 1: de}, {0: latents, 1: latents}, n_top=5)
    assert stab["pairs"][0]["spearman_mean_diff"] == pytest.approx(1.0)
    assert stab["mean_seed_agreement"] == pytest.approx(1.0)


def test_case_study_refuses_shared_names(tcell):
    nuclei, rna = _tcell_toy()
    rna.obs_names = nuclei.obs_names[: rna.n_obs]
    with pytest.raises(ValueError, match="share obs_names"):
        tcell.case_study(nuclei, rna, max_epochs=1)


def test_a549_pairing_summary_and_figure(tmp_path):
    """The README table and the figure from saved JSON lines (chance levels in brackets)."""
    pairing = _load("a549_pairing")
    rows = []
    for method, fraction in (("transmodal", 0.0), ("transmodal", 1.0), ("cca", 1.0)):
        for seed, acc in ((0, 0.2), (1, 0.4)):
            rows.append({"method": method, "anchor_fraction": fraction, "seed": seed,
                         "foscttm": 0.3, "knn_acc_l1_5": 0.03, "knn_acc_l1_50": acc,
                         "knn_chance_l1_5": 0.01, "knn_chance_l1_50": 0.15,
                         "cluster_accuracy": 0.6, "mixing_accuracy": 0.55, "seconds": 10.0})
    rows[-1].pop("knn_chance_l1_50")  # a line without chance level: no bracket
    table = pairing.summary(rows).splitlines()
    assert len(table) == 2 + 3
    assert table[2].startswith("| transmodal | 0 % | 0.300 ± 0.000 |")
    assert "0.300 ± 0.100 (0.150)" in table[2]
    assert table[4].startswith("| cca | 100 % |") and "(0.150)" not in table[4]
    pairing.plot(rows, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_unpaired_medoid_summary(tmp_path):
    """The medoid of saved runs: the two runs that agree outvote the odd one."""
    import json

    unpaired = _load("unpaired")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    good = {"x": x, "y": x + 0.05 * rng.normal(size=x.shape)}
    odd = {"x": x, "y": x[rng.permutation(120)]}
    lines = []
    for seed, (run, fos) in enumerate(((good, 0.1), (odd, 0.5), (good, 0.1))):
        np.savez(tmp_path / f"a549_transmodal_{seed}.npz", **run)
        lines.append(json.dumps({"dataset": "a549", "method": "transmodal", "seed": seed,
                                 "foscttm": fos}))
    (tmp_path / "runs.jsonl").write_text("\n".join(lines) + "\n")
    table = unpaired.medoid_summary(str(tmp_path / "runs.jsonl"), str(tmp_path), 3).splitlines()
    assert table[2] == "| a549 | transmodal | 3 | 0.233 ± 0.189 | 0.100 ± 0.000 | 1 |"


def _scale_part(*args: str) -> dict:
    """The one JSON line of ``benchmarks/scale.py --parts ...`` (one thread), checked to hold
    no error."""
    import json
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--parts", *args],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    ).stdout
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1 and "error" not in lines[0], out
    return lines[0]


def test_scale_throughput_part_runs():
    """``benchmarks/scale.py --parts a`` on a few hundred cells: one JSON line, library and
    bare loop both timed, with the requested batch size and accelerator."""
    res = _scale_part("a", "--a-cells", "300", "--a-epochs", "1", "--repeats", "1",
                      "--batch-size", "64")
    assert res["batch_size"] == 64 and res["accelerator"] == "cpu" and res["steps"] == 5
    assert res["bare_cells_per_s"] > 0 and res["library_csr_cells_per_s"] > 0


def test_scale_batch_mmd_part_runs():
    """``benchmarks/scale.py --parts batch_mmd`` on a few hundred cells: one JSON line with
    the seconds per epoch of each number of batches, with and without the batch MMD."""
    res = _scale_part("batch_mmd", "--mmd-cells", "200", "--mmd-batches", "2", "7",
                      "--a-epochs", "1", "--repeats", "1")
    for k in (2, 7):
        for lam in ("0", "1"):
            assert res[f"s_per_epoch_{k}_batches_lam{lam}"] > 0


def test_scale_evaluate_part_runs():
    """``benchmarks/scale.py --parts evaluate`` on a few hundred cells: the seconds of
    evaluate_paired and its metrics."""
    res = _scale_part("evaluate", "--eval-cells", "300")
    assert res["n_cells"] == 300 and res["seconds"] > 0
    assert 0 <= res["foscttm"] <= 1 and 0 <= res["cluster_accuracy"] <= 1


def test_batches_benchmark_runs_and_summarises(tmp_path):
    """``benchmarks/batches.py``: one run of each method on a few hundred cells gives every
    metric, and the summary prints the table."""
    batches = _load("batches")
    lines = [
        batches.run_one("imbalanced", method, 0, 1.0, max_epochs=1, n_cells=300)
        for method in batches.METHODS
    ]
    for res in lines:
        assert res["n_batches"] == 2 and res["epochs"] == 1
        for key in ("batch_mixing", "rna_label_purity", "foscttm", "label_transfer",
                    "translation_pearson"):
            assert 0 <= res[key] <= 1, (key, res)
    rows = _summary_rows(batches, lines, tmp_path)
    assert len(rows) == 5 and rows[2].startswith("| imbalanced | none | 1 |")
    # unpaired: no anchors, pairs found again through obs["true_cell"]
    res = batches.run_one("unpaired", "batch_key", 0, 1.0, max_epochs=1, n_cells=300)
    assert res["n_batches"] == 3 and 0 <= res["foscttm"] <= 1


def test_methylation_benchmark_runs_and_summarises(tmp_path):
    """``benchmarks/methylation.py``: one run of each method on a few hundred simulated
    cells gives every metric, the sparse setting thins the coverage, and the summary prints
    the table."""
    meth = _load("methylation")
    lines = [meth.run_one("sparse", method, 0, max_epochs=1, n_cells=300) for method in meth.METHODS]
    for res in lines:
        assert 0.05 < res["covered_fraction"] < 0.15 and res["epochs"] == 1
        for key in ("foscttm", "label_transfer"):
            assert 0 <= res[key] <= 1, (key, res)
        for key in ("pearson_rna_to_met", "pearson_met_to_rna", "region_pearson_rna_to_met"):
            assert -1 <= res[key] <= 1, (key, res)
    rows = _summary_rows(meth, lines, tmp_path)
    assert len(rows) == 2 + len(meth.METHODS) and rows[2].startswith("| sparse | 10% | missing | 1 |")
    # unpaired: the pairs hidden from the model, still scored on the true pairs
    res = meth.run_one("full", "missing", 0, max_epochs=1, n_cells=300, anchor_fraction=0.0)
    assert res["anchor_fraction"] == 0 and 0 <= res["foscttm"] <= 1


def test_benchmark_lines_are_strict_json():
    """A value that does not apply (NaN: a joint model's drift from a reference, a region
    score without enough reads) is written as null, which every JSON parser reads (``NaN``
    is Python's extension); the summaries read null as n/a."""
    runs = _load("_runs")
    line = runs.json_line({"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": np.nan}})
    assert line == '{"a": null, "b": [1.5, null], "c": {"d": null}}'
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in a line")) == {
        "a": None, "b": [1.5, None], "c": {"d": None}}
    assert runs.mean_sd([json.loads(line), {"a": 1.0}], ["a"]) == ["n/a"]


def test_reference_benchmark_runs_and_summarises(tmp_path):
    """``benchmarks/reference.py``: one run of each method on a few hundred simulated cells
    gives every metric (the reference's RNA embedding kept exactly by from_reference), and
    the summary prints the table."""
    ref = _load("reference")
    lines = [ref.run_one("anchors10", method, 0, max_epochs=1, n_cells=300)
             for method in ref.METHODS]
    for res in lines:
        assert res["epochs"] == 1 and res["seconds"] > 0
        for key in ("foscttm_protein_rna", "foscttm_protein_atac", "foscttm_protein_rna_all",
                    "label_transfer"):
            assert 0 <= res[key] <= 1, (key, res)
    assert lines[0]["rna_drift"] == 0 and lines[0]["reference_seconds"] > 0
    assert np.isnan(lines[1]["rna_drift"])
    rows = _summary_rows(ref, lines, tmp_path)
    assert len(rows) == 4 and rows[2].startswith("| anchors10 | from_reference | 1 |")
    assert "n/a" in rows[3]  # (the joint model has no reference to drift from)


def _needs(*datasets):
    from transmodal.datasets import data_dir

    missing = [d for d in datasets if not (data_dir() / d).is_dir()]
    return pytest.mark.skipif(bool(missing), reason=f"$TRANSMODAL_DATA lacks {missing}")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["a549_demo.py", "--seeds", "0", "--max-epochs", "1", "--out", "demo"],
                     marks=_needs("scicar_a549")),
        pytest.param(["a549_validation.py", "--seeds", "0", "--fractions", "1", "--train",
                      '{"max_epochs": 1}'], marks=_needs("scicar_a549")),
        pytest.param(["a549_translated_analysis.py", "--seeds", "0", "--fractions", "0",
                      "--max-epochs", "1"], marks=_needs("scicar_a549")),
        pytest.param(["tcell_case_study.py", "--seeds", "0", "--populations", "cd4",
                      "--max-epochs", "1", "--out", "tcell"],
                     marks=_needs("tcell_chromatin_radial", "pbmc")),
        pytest.param(["tcell_radial_clusters.py", "--n-resamples", "1"],
                     marks=_needs("tcell_chromatin_radial")),
        pytest.param(["pbmc_shared_classes.py", "--seeds", "0", "--max-epochs", "2",
                      "--holdout", "0.2"], marks=_needs("pbmc_rna_atac_unpaired")),
        ["scale.py", "--parts", "wide", "--wide-cells", "300", "--wide-features", "2000",
         "--wide-pca", "5"],  # simulated
        ["methylation.py", "--coverages", "deep", "--methods", "binomial", "--seeds", "0",
         "--max-epochs", "1", "--n-cells", "300"],  # simulated; the grid runner of _runs.py
        ["latent_calibration.py", "--dropouts", "0.5", "--epochs", "1", "--cells", "60"],
    ],
    ids=lambda argv: argv[0],
)
def test_benchmark_script_runs_on_real_data(argv, tmp_path):
    """Each script in its smallest setting, on the real data, from an empty folder: it exits
    0 and prints JSON lines without an error (guards the scripts against API changes)."""
    import json
    import os
    import subprocess

    from transmodal.datasets import data_dir

    # the default data root is relative to the working folder, which is tmp_path here
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSMODAL_DATA": str(data_dir().resolve())}
    proc = subprocess.run([sys.executable, str(BENCH / argv[0]), *argv[1:]], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout[-2000:]
    assert not any("error" in ln for ln in lines), lines
