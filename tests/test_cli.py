"""The ``transmodal`` command line: train / embed / translate / evaluate, help, config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

import transmodal as tm
from transmodal.cli import main

N_CELLS, N_RNA, N_ATAC, N_TRAIN = 120, 30, 20, 90
SUBCOMMANDS = ("train", "embed", "translate", "evaluate", "demo")


# ------------------------------------------------------------------------------ fixtures
def _simulate(seed: int = 0) -> dict[str, ad.AnnData]:
    """Paired Poisson counts of two modalities with a shared 2-cluster structure."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N_CELLS) % 2
    rng.shuffle(labels)
    obs = pd.DataFrame(
        {
            "label": pd.Categorical(np.where(labels == 0, "a", "b")),
            "split": np.where(np.arange(N_CELLS) < N_TRAIN, "train", "test"),
        },
        index=[f"cell{i}" for i in range(N_CELLS)],
    )
    out = {}
    for name, n_vars in (("rna", N_RNA), ("atac", N_ATAC)):
        rates = rng.gamma(2.0, 2.0, size=(2, n_vars))
        X = rng.poisson(rates[labels]).astype(np.float32)
        var = pd.DataFrame(index=[f"{name}_{j}" for j in range(n_vars)])
        out[name] = ad.AnnData(X=X, obs=obs.copy(), var=var)
    return out


def _config(tmp: Path, **overrides) -> dict:
    cfg = {
        "data": {"rna": "rna.h5ad", "atac": "atac.h5ad"},
        "modalities": {"rna": {"likelihood": "nb"}, "atac": {"likelihood": "poisson"}},
        "model": {
            "n_latent": 4,
            "hidden": [16],
            "labels_key": "label",
            "validation_fraction": 0.2,
            "seed": 0,
        },
        "train": {"max_epochs": 2, "batch_size": 32, "progress_bar": False, "lr": 1e-3},
        "subset": {"obs_key": "split", "value": "train"},
        "out": "model",
    }
    cfg.update(overrides)
    return cfg


def _write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    for name, adata in _simulate().items():
        adata.write_h5ad(d / f"{name}.h5ad")
    return d


@pytest.fixture(scope="module")
def trained(workdir: Path) -> Path:
    """Train once through the CLI (config `out:` relative to the config file)."""
    cfg = _write_config(workdir / "run.yaml", _config(workdir))
    assert main(["train", "--config", str(cfg)]) == 0
    return workdir / "model"


def _data_args(workdir: Path) -> list[str]:
    return ["--data", f"rna={workdir / 'rna.h5ad'}", f"atac={workdir / 'atac.h5ad'}"]


def _assert_one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("transmodal: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------------- train
def test_train_writes_model_history_and_config(trained: Path, capsys):
    assert (trained / "model.safetensors").is_file()
    assert (trained / "config.json").is_file()
    hist = pd.read_csv(trained / "history.csv")
    assert len(hist) == 2 and "epoch" in hist.columns
    run = yaml.safe_load((trained / "run_config.yaml").read_text())
    assert run["subset"] == {"obs_key": "split", "value": "train"}
    assert Path(run["data"]["rna"]).is_absolute()
    saved = json.loads((trained / "config.json").read_text())
    assert saved["init_params"]["n_latent"] == 4
    assert saved["modalities"]["atac"]["likelihood"] == "poisson"


def test_train_that_diverges_is_one_line_and_writes_nothing(workdir: Path, capsys):
    cfg = _config(workdir, out="diverged")
    cfg["train"]["lr"] = 1e30
    path = _write_config(workdir / "diverge.yaml", cfg)
    assert main(["train", "--config", str(path)]) == 2
    _assert_one_line_error(capsys, "training diverged", "Lower lr")
    assert not (workdir / "diverged").exists()


def test_train_refuses_existing_output(workdir: Path, trained: Path, capsys):
    cfg = _write_config(workdir / "run_again.yaml", _config(workdir))
    assert main(["train", "--config", str(cfg), "--out", str(trained)]) == 2
    _assert_one_line_error(capsys, str(trained), "--overwrite")


def test_warnings_are_one_line_each(workdir: Path, tmp_path: Path):
    # the training cells are paired and the config leaves anchor_fraction at its default;
    # run as a user does (pytest records warnings itself)
    path = _write_config(workdir / "run_warn.yaml", _config(workdir))  # data beside it
    exe = Path(sys.executable).parent / "transmodal"
    res = subprocess.run([str(exe), "train", "--config", str(path), "--out", str(tmp_path / "m")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "known pairs unused" in ln]
    assert len(lines) == 1 and lines[0].startswith("transmodal: warning: known pairs unused")
    assert ".py:" not in res.stderr  # no file and line of the library
    # a caller that records warnings still gets them; the formatting is put back
    before = warnings.formatwarning
    with pytest.warns(UserWarning, match="known pairs unused"):
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "m2")]) == 0
    assert warnings.formatwarning is before


# ------------------------------------------------------------------------- embed / translate
def test_embed_all_modalities_to_directory(workdir: Path, trained: Path):
    out = workdir / "embedded"
    assert main(["embed", "--model", str(trained), *_data_args(workdir), "--out", str(out)]) == 0
    for name, n_vars in (("rna", N_RNA), ("atac", N_ATAC)):
        a = ad.read_h5ad(out / f"{name}.h5ad")
        assert a.shape == (N_CELLS, n_vars)
        assert a.obsm["X_transmodal"].shape == (N_CELLS, 4)
        assert np.isfinite(a.obsm["X_transmodal"]).all()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_embed_writes_old_names_with_a_slash_inside_the_out_directory(
    workdir: Path, tmp_path: Path, monkeypatch
):
    """Models saved before '/' was refused in names still load; a name such as "/x/rna"
    (or one crafted so) made `embed --out DIR` write /x/rna.h5ad, outside DIR."""
    import transmodal.model._model as model_module

    data = {"/x/rna": ad.read_h5ad(workdir / "rna.h5ad"), "atac": ad.read_h5ad(workdir / "atac.h5ad")}
    specs = {"/x/rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli")}
    with monkeypatch.context() as mp:  # (as the earlier version built it)
        mp.setattr(model_module, "check_modality_name", lambda name, new=True: None)
        model = tm.CrossModalAE(data, specs, n_latent=4, geometric_pairs=False, seed=0)
    model.train(max_epochs=1, progress_bar=False)
    model.save(tmp_path / "old")
    out = tmp_path / "embedded"
    assert main(["embed", "--model", str(tmp_path / "old"), "--data",
                 f"/x/rna={workdir / 'rna.h5ad'}", f"atac={workdir / 'atac.h5ad'}",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["%2Fx%2Frna.h5ad", "atac.h5ad"]


def test_cli_reads_an_ensemble_whose_first_member_is_not_member0(workdir: Path, tmp_path: Path):
    data = {n: ad.read_h5ad(workdir / f"{n}.h5ad") for n in ("rna", "atac")}
    specs = {"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli")}
    models = [tm.CrossModalAE(data, specs, n_latent=4, geometric_pairs=False, seed=s)
              .train(max_epochs=1, progress_bar=False) for s in (0, 1)]
    path = tmp_path / "ens"
    tm.Ensemble(models).save(path)
    (path / "member0").rename(path / "member2")  # a manifest naming other directories
    manifest = json.loads((path / "ensemble.json").read_text())
    manifest["members"] = ["member2", "member1"]
    (path / "ensemble.json").write_text(json.dumps(manifest))
    out = tmp_path / "rna.h5ad"
    assert main(["embed", "--model", str(path), *_data_args(workdir), "--modality", "rna",
                 "--out", str(out)]) == 0
    assert ad.read_h5ad(out).obsm["X_transmodal"].shape == (N_CELLS, 8)


def test_embed_writes_all_files_or_none(workdir: Path, trained: Path, tmp_path: Path,
                                        monkeypatch, capsys):
    from transmodal.cli import _commands

    written = []
    write = _commands._write_embedded

    def second_fails(adata, latent, key, path):
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        write(adata, latent, key, path)

    monkeypatch.setattr(_commands, "_write_embedded", second_fails)
    out = tmp_path / "emb"
    assert main(["embed", "--model", str(trained), *_data_args(workdir), "--out", str(out)]) == 2
    assert "No space left" in capsys.readouterr().err
    assert written and not [p for p in out.rglob("*") if p.is_file()]
    # another process writes the first output meanwhile: its file stays, and the output
    # committed before that one failed is removed (not a partial set)
    names = []

    def other_writes_the_first(adata, latent, key, path):
        write(adata, latent, key, path)
        names.append(path)
        if len(names) == 2:
            (out / names[0].name.split(".")[1]).with_suffix(".h5ad").write_text("other")

    monkeypatch.setattr(_commands, "_write_embedded", other_writes_the_first)
    assert main(["embed", "--model", str(trained), *_data_args(workdir), "--out", str(out)]) == 2
    assert "was written while this was" in capsys.readouterr().err
    left = [p for p in out.rglob("*") if p.is_file()]
    assert len(left) == 1 and left[0].read_text() == "other"


def test_embed_copies_the_input_file_and_adds_the_embedding(workdir: Path, trained: Path,
                                                             tmp_path: Path):
    """An .h5ad input is read block by block and copied as stored, with the embedding added
    (an existing obsm key replaced); an .h5ad with CSC matrices is read whole, to the same
    result."""
    import scipy.sparse as sp

    rna = ad.read_h5ad(workdir / "rna.h5ad")
    rna.uns["note"] = {"kept": 1}
    rna.obsm["X_transmodal"] = np.zeros((rna.n_obs, 2))
    rna.obsm["X_umap"] = np.ones((rna.n_obs, 2))
    rna.obsp["connectivities"] = sp.identity(rna.n_obs, format="csr")
    rna.write_h5ad(tmp_path / "rna.h5ad")
    csc = rna.copy()
    csc.X = sp.csc_matrix(csc.X)
    for k in csc.layers:
        csc.layers[k] = sp.csc_matrix(csc.layers[k])
    assert not (sp.issparse(rna.X) and rna.X.format == "csc")
    csc.write_h5ad(tmp_path / "rna_csc.h5ad")
    expected = tm.CrossModalAE.load(trained).get_latent_representation("rna", rna)
    for name in ("rna.h5ad", "rna_csc.h5ad"):
        out = tmp_path / f"emb_{name}"
        assert main(["embed", "--model", str(trained), "--data", f"rna={tmp_path / name}",
                     "--modality", "rna", "--out", str(out)]) == 0
        a = ad.read_h5ad(out)
        np.testing.assert_allclose(a.obsm["X_transmodal"], expected, rtol=1e-6, atol=1e-6)
        assert a.uns["note"] == {"kept": 1} and (a.obsm["X_umap"] == 1).all()
        assert a.obsp["connectivities"].nnz == rna.n_obs
        dense = [m.toarray() if sp.issparse(m) else m for m in (a.X, rna.X)]
        np.testing.assert_array_equal(*dense)
        assert list(a.obs_names) == list(rna.obs_names) and list(a.layers) == list(rna.layers)


def test_embed_refuses_an_input_changed_while_it_was_embedded(workdir: Path, trained: Path,
                                                               tmp_path: Path, capsys,
                                                               monkeypatch):
    """The input file is copied by its name once its cells are embedded: replaced
    meanwhile (the same cells in another order), the embeddings would have landed on other
    cells, silently."""
    import shutil

    rna = ad.read_h5ad(workdir / "rna.h5ad")
    rna.write_h5ad(tmp_path / "rna.h5ad")
    rna[::-1].copy().write_h5ad(tmp_path / "reversed.h5ad")
    copy = shutil.copyfile
    monkeypatch.setattr(shutil, "copyfile",  # (another process replaced it meanwhile)
                        lambda src, dst: copy(tmp_path / "reversed.h5ad", dst))
    out = tmp_path / "emb.h5ad"
    assert main(["embed", "--model", str(trained), "--data", f"rna={tmp_path / 'rna.h5ad'}",
                 "--modality", "rna", "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "rna.h5ad was changed while its cells were embedded")
    assert not out.exists()


def test_embed_one_modality_to_file(workdir: Path, trained: Path):
    out = workdir / "rna_embedded.h5ad"
    args = ["embed", "--model", str(trained), *_data_args(workdir), "--modality", "rna"]
    assert main([*args, "--out", str(out)]) == 0
    a = ad.read_h5ad(out)
    assert a.obsm["X_transmodal"].shape == (N_CELLS, 4)
    assert list(a.obs_names) == [f"cell{i}" for i in range(N_CELLS)]
    # existing output: refused without --overwrite, replaced with it
    assert main([*args, "--out", str(out)]) == 2
    assert main([*args, "--out", str(out), "--overwrite"]) == 0
    # the file is .h5ad whatever its name says: a wrong suffix is refused, nothing written
    assert main([*args, "--out", str(workdir / "e.txt")]) == 2
    assert not (workdir / "e.txt").exists()


def test_paths_given_as_option_equals_tilde_are_expanded(workdir: Path, trained: Path,
                                                         tmp_path: Path, monkeypatch):
    """The shell leaves "~" in --out=~/x as it is: --model and --out expanded it not (a
    folder named "~" in the working directory), --data did."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "run"
    model.symlink_to(trained)
    assert main(["embed", "--model=~/run", *_data_args(workdir), "--modality", "rna",
                 "--out=~/e.h5ad"]) == 0
    assert (tmp_path / "e.h5ad").is_file() and not (tmp_path / "~").exists()


def test_embed_and_translate_need_only_the_modalities_used(workdir: Path, trained: Path, capsys):
    rna_only = ["--model", str(trained), "--data", f"rna={workdir / 'rna.h5ad'}"]
    full = workdir / "full.h5ad"
    assert main(["embed", *rna_only, "--out", str(workdir / "x.h5ad"), "--modality", "rna"]) == 0
    assert main(["embed", "--model", str(trained), *_data_args(workdir), "--out", str(full),
                 "--modality", "rna"]) == 0
    np.testing.assert_allclose(ad.read_h5ad(workdir / "x.h5ad").obsm["X_transmodal"],
                               ad.read_h5ad(full).obsm["X_transmodal"], atol=1e-6)
    assert main(["embed", *rna_only, "--out", str(workdir / "dir")]) == 0
    assert sorted(p.name for p in (workdir / "dir").iterdir()) == ["rna.h5ad"]
    out = workdir / "t.h5ad"
    assert main(["translate", *rna_only, "--source", "rna", "--target", "atac", "--out", str(out)]) == 0
    assert ad.read_h5ad(out).shape == (N_CELLS, N_ATAC)
    capsys.readouterr()
    code = main(["embed", *rna_only, "--out", str(workdir / "y.h5ad"), "--modality", "atac"])
    assert code == 2
    _assert_one_line_error(capsys, "missing: atac")
    code = main(["translate", *rna_only, "--source", "atac", "--target", "rna", "--out", str(workdir / "u.h5ad")])
    assert code == 2
    _assert_one_line_error(capsys, "missing: atac")


def test_embed_translate_evaluate_read_mudata_files(workdir: Path, trained: Path, tmp_path: Path,
                                                    capsys):
    import mudata as md

    (tmp_path / "seed=1").mkdir()  # an "=" in a folder name (pipelines' partitions)
    h5mu = tmp_path / "seed=1" / "cells.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md.MuData({n: ad.read_h5ad(workdir / f"{n}.h5ad") for n in ("rna", "atac")}).write(h5mu)
    model = ["--model", str(trained)]
    # a bare .h5mu: every modality of the model it holds; NAME=PATH.h5mu: that one
    assert main(["embed", *model, "--data", str(h5mu), "--out", str(tmp_path / "mu")]) == 0
    assert main(["embed", *model, *_data_args(workdir), "--out", str(tmp_path / "ad")]) == 0
    for name in ("rna", "atac"):
        np.testing.assert_array_equal(
            ad.read_h5ad(tmp_path / "mu" / f"{name}.h5ad").obsm["X_transmodal"],
            ad.read_h5ad(tmp_path / "ad" / f"{name}.h5ad").obsm["X_transmodal"],
        )
    out = tmp_path / "t.h5ad"
    args = ["translate", *model, "--data", f"rna={h5mu}", "--source", "rna", "--target", "atac"]
    assert main([*args, "--out", str(out)]) == 0
    assert ad.read_h5ad(out).shape == (N_CELLS, N_ATAC)
    metrics = tmp_path / "m.json"
    assert main(["evaluate", *model, "--data", str(h5mu), "--source", "rna", "--target", "atac",
                 "--train-data", str(h5mu), "--out", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["n_cells"] == N_CELLS
    capsys.readouterr()
    # a modality the file lacks, and a file with none of the model's
    rna_only = tmp_path / "rna_only.h5mu"
    other = tmp_path / "other.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md.MuData({"rna": ad.read_h5ad(workdir / "rna.h5ad")}).write(rna_only)
        md.MuData({"prot": ad.read_h5ad(workdir / "rna.h5ad")}).write(other)
    args = ["embed", *model, "--modality", "atac", "--out", str(tmp_path / "a.h5ad")]
    assert main([*args, "--data", f"atac={rna_only}"]) == 2
    _assert_one_line_error(capsys, "--data atac", "rna_only.h5mu", "no modality 'atac'", "rna")
    assert main([*args, "--data", str(other)]) == 2
    _assert_one_line_error(capsys, "--data", "other.h5mu", "prot", "none of the model's")
    assert main([*args, "--data", str(h5mu), f"atac={h5mu}"]) == 2
    _assert_one_line_error(capsys, "modality 'atac' given twice")


def test_translate(workdir: Path, trained: Path):
    out = workdir / "atac_from_rna.h5ad"
    args = ["translate", "--model", str(trained), *_data_args(workdir),
            "--source", "rna", "--target", "atac", "--out", str(out), "--library-size", "50"]
    assert main(args) == 0
    t = ad.read_h5ad(out)
    atac = ad.read_h5ad(workdir / "atac.h5ad")
    assert t.shape == (N_CELLS, N_ATAC)
    assert list(t.var_names) == list(atac.var_names)
    assert np.allclose(np.asarray(t.X).sum(1), 50, rtol=1e-3)
    # the cells are read from the file block by block (backed), sparse by rows or by
    # columns (then read whole): the same translation as the Python API's, with the cells'
    # annotations
    import scipy.sparse as sp

    model = tm.CrossModalAE.load(trained)
    rna = ad.read_h5ad(workdir / "rna.h5ad")
    want = model.translate(rna, source="rna", target="atac")
    for fmt in (sp.csr_matrix, sp.csc_matrix):
        src = workdir / f"rna_{fmt.__name__}.h5ad"
        stored = rna.copy()
        stored.X = fmt(stored.X)
        stored.write_h5ad(src)
        out = workdir / f"t_{fmt.__name__}.h5ad"
        assert main(["translate", "--model", str(trained), "--data", f"rna={src}", "--source",
                     "rna", "--target", "atac", "--out", str(out)]) == 0
        got = ad.read_h5ad(out)
        np.testing.assert_allclose(np.asarray(got.X), np.asarray(want.X), rtol=1e-5)
        assert list(got.obs["label"]) == list(rna.obs["label"])
        assert got.uns["transmodal"]["units"] == want.uns["transmodal"]["units"]


def test_translate_refuses_to_write_over_its_input(workdir: Path, trained: Path, capsys):
    rna = workdir / "rna.h5ad"
    before = rna.read_bytes()
    args = ["translate", "--model", str(trained), "--data", f"rna={rna}", "--source", "rna",
            "--target", "atac", "--out", str(rna), "--overwrite"]
    assert main(args) == 2
    _assert_one_line_error(capsys, "rna.h5ad is the file of --data rna", "write the output elsewhere")
    assert rna.read_bytes() == before


def test_translate_unknown_modality(workdir: Path, trained: Path, capsys):
    args = ["translate", "--model", str(trained), *_data_args(workdir),
            "--source", "rna", "--target", "protein", "--out", str(workdir / "p.h5ad")]
    assert main(args) == 2
    _assert_one_line_error(capsys, "--target", "'protein'")


def test_evaluate(workdir: Path, trained: Path, capsys):
    out = workdir / "metrics.json"
    args = ["evaluate", "--model", str(trained), *_data_args(workdir),
            "--source", "rna", "--target", "atac", "--labels-key", "label", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "foscttm" in printed
    metrics = json.loads(out.read_text())
    assert metrics["n_cells"] == N_CELLS
    assert 0.0 <= metrics["foscttm"] <= 1.0
    assert "cluster_accuracy" in metrics and "translation_pearson_rna_to_atac" in metrics
    # --train-data is checked under its own name
    capsys.readouterr()
    code = main([*args[:-2], "--train-data", f"rna={workdir / 'rna.h5ad'}"])
    assert code == 2
    _assert_one_line_error(capsys, "--train-data: the model")


def test_evaluate_unpaired_cells_by_their_labels(workdir: Path, trained: Path, capsys):
    import anndata as ad

    atac = ad.read_h5ad(workdir / "atac.h5ad")
    atac.obs_names = [f"a{i}" for i in range(atac.n_obs)]  # measured apart from the RNA cells
    atac.write_h5ad(workdir / "atac_apart.h5ad")
    args = ["evaluate", "--model", str(trained), "--data", f"rna={workdir / 'rna.h5ad'}",
            f"atac={workdir / 'atac_apart.h5ad'}", "--source", "rna", "--target", "atac"]
    assert main(args) == 0  # the model's labels_key, which both files hold
    res = capsys.readouterr()
    printed = res.out
    assert "label_transfer_rna_to_atac" in printed and "foscttm" not in printed
    assert "share 0 cell name(s): scored as cells measured apart, by their labels\n" in res.err
    # names decorated by a converter (a suffix): said so, with the renaming that pairs them
    renamed = ad.read_h5ad(workdir / "atac.h5ad")
    renamed.obs_names = renamed.obs_names + "-1"
    renamed.write_h5ad(workdir / "atac_renamed.h5ad")
    assert main([*args[:5], f"atac={workdir / 'atac_renamed.h5ad'}", *args[6:]]) == 0
    assert ("share 0 cell name(s): scored as cells measured apart, by their labels ('rna' and "
            "'atac' share no cell name, but") in capsys.readouterr().err
    atac.obs = atac.obs.drop(columns="label")
    atac.write_h5ad(workdir / "atac_apart.h5ad")
    assert main(args) == 2
    _assert_one_line_error(capsys, "share 0 cell(s)", "--labels-key")
    # names that are numbers (AnnData's default row numbers) say nothing: scored by labels
    rna = ad.read_h5ad(workdir / "rna.h5ad")
    for name, a in (("rna", rna), ("atac", ad.read_h5ad(workdir / "atac.h5ad"))):
        a.obs_names = [str(i) for i in range(a.n_obs)]
        a.write_h5ad(workdir / f"{name}_numbers.h5ad")
    assert main([*args[:4], f"rna={workdir / 'rna_numbers.h5ad'}",
                 f"atac={workdir / 'atac_numbers.h5ad'}", *args[6:]]) == 0
    res = capsys.readouterr()
    assert "label_transfer_rna_to_atac" in res.out and "foscttm" not in res.out
    assert "are numbers" in res.err
    # a partial overlap of named cells: the shared cells are scored, and the counts said
    ad.read_h5ad(workdir / "rna.h5ad")[:50].write_h5ad(workdir / "rna_part.h5ad")
    assert main([*args[:4], f"rna={workdir / 'rna_part.h5ad'}",
                 f"atac={workdir / 'atac.h5ad'}", *args[6:]]) == 0
    res = capsys.readouterr()
    assert "scoring the 50 cells present in both --data rna (50 cells) and atac" in res.err
    assert "foscttm" in res.out


# --------------------------------------------------------------------- several seeds
def _runs_config(workdir: Path, name: str, combine: str) -> Path:
    cfg = _config(workdir, runs={"seeds": [0, 1], "combine": combine, "k": 10}, out=name)
    cfg["model"].pop("seed")
    return _write_config(workdir / f"{name}.yaml", cfg)


def test_train_checkpoints_and_resume(workdir: Path, capsys):
    """train: checkpoint_dir (relative to the config); a job submitted again is refused
    without --resume (its first checkpoint replaced the earlier run's), goes on with it."""
    cfg = _config(workdir, out="ckpt_model")
    cfg["train"].update(checkpoint_dir="ckpt", checkpoint_every=1, adv_warmup_epochs=1)
    config = _write_config(workdir / "ckpt.yaml", cfg)
    assert main(["train", "--config", str(config)]) == 0
    assert list(tm.CrossModalAE.load(workdir / "ckpt").history.index) == [0, 1]
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--overwrite"]) == 2
    assert "holds a checkpoint of an earlier run; pass --resume" in capsys.readouterr().err
    cfg["train"]["max_epochs"] = 4  # the whole training: 2 more epochs
    config = _write_config(workdir / "ckpt.yaml", cfg)
    assert main(["train", "--config", str(config), "--overwrite", "--resume"]) == 0
    assert "going on from the checkpoint" in capsys.readouterr().err
    resumed = tm.CrossModalAE.load(workdir / "ckpt_model")
    assert list(resumed.history.index) == [0, 1, 2, 3]
    assert resumed.train_params_["adv_warmup_epochs"] == 0  # (the config's 1 was over)
    # the job submitted once more, after it finished: its output is refused as any, saying so
    assert main(["train", "--config", str(config), "--resume"]) == 2
    _assert_one_line_error(capsys, "ckpt_model exists (the output of a finished run? --resume "
                           "goes on only where a run stopped before saving its model); pass "
                           "--overwrite")
    # a job array's task of another seed, sharing the checkpoint_dir, is refused (it went
    # on from the other task's checkpoint, saving it under its own config)
    other = dict(cfg, model={**cfg["model"], "seed": 1}, out="ckpt_other")
    assert main(["train", "--config", str(_write_config(workdir / "o.yaml", other)),
                 "--resume"]) == 2
    _assert_one_line_error(capsys, "--resume", "built with other settings",
                           "model: seed 1 (checkpoint: 0)")
    assert not (workdir / "ckpt_other").exists()
    # a setting left at its default is compared too (n_latent 32 against the checkpoint's 4),
    # and the modalities' (a field the config leaves out)
    other = dict(cfg, model={k: v for k, v in cfg["model"].items() if k != "n_latent"},
                 out="ckpt_other")
    assert main(["train", "--config", str(_write_config(workdir / "o.yaml", other)),
                 "--resume"]) == 2
    _assert_one_line_error(capsys, "model: n_latent 32 (checkpoint: 4)")
    other = dict(cfg, modalities={**cfg["modalities"], "atac": {"likelihood": "nb"}},
                 out="ckpt_other")
    assert main(["train", "--config", str(_write_config(workdir / "o.yaml", other)),
                 "--resume"]) == 2
    _assert_one_line_error(capsys, "modalities: atac: likelihood 'nb' (checkpoint: 'poisson')")
    # other cells (another task's subset) are refused by resume_training itself
    other = dict(cfg, subset={"obs_key": "split", "value": "test"}, out="ckpt_other")
    assert main(["train", "--config", str(_write_config(workdir / "o.yaml", other)),
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert "not the cells its training ran on" in err
    assert "given to load()" not in err  # (no warning of a training that does not happen)
    # the checkpoints' directory is not the output's; several runs would each write it
    for inside in ("ckpt_model", "ckpt_model/ckpt"):
        bad = dict(cfg, train={**cfg["train"], "checkpoint_dir": inside})
        assert main(["train", "--config", str(_write_config(workdir / "b.yaml", bad)),
                     "--overwrite"]) == 2
        assert "is, holds or lies in the output directory" in capsys.readouterr().err
    cfg["runs"] = {"seeds": [0, 1]}
    cfg["model"].pop("seed")
    assert main(["train", "--config", str(_write_config(workdir / "ckpt2.yaml", cfg))]) == 2
    assert "checkpoint_dir saves one model's training" in capsys.readouterr().err


def test_train_sigterm_saves_the_epochs_done(workdir: Path, tmp_path: Path, capsys,
                                              monkeypatch):
    """SIGTERM (a scheduler pre-empting the job) during `transmodal train` stops it as
    Ctrl+C does: the epochs done are saved to checkpoint_dir, exit code 143 (the training
    restored the weights from before it and saved nothing)."""
    import os
    import signal

    from transmodal.train._plan import CrossModalPlan

    plan_end = CrossModalPlan.on_train_epoch_end

    def pre_empted(self):
        plan_end(self)
        if len(self.history_rows) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(CrossModalPlan, "on_train_epoch_end", pre_empted)
    cfg = _config(workdir, out=str(tmp_path / "m"))
    cfg["data"] = {n: str(workdir / p) for n, p in cfg["data"].items()}
    cfg["train"].update(max_epochs=6, checkpoint_dir=str(tmp_path / "ckpt"),
                        checkpoint_every=100, early_stopping=False)
    assert main(["train", "--config", str(_write_config(tmp_path / "r.yaml", cfg))]) == 143
    err = capsys.readouterr().err  # (how far it came, and how to go on)
    assert "transmodal: training terminated (SIGTERM) after 2 complete epoch(s) of 6" in err
    assert f"they are saved in {tmp_path / 'ckpt'} (go on with " in err and "--resume" in err
    assert list(tm.CrossModalAE.load(tmp_path / "ckpt").history.index) == [0, 1]
    assert not (tmp_path / "m").exists()


@pytest.mark.filterwarnings("ignore:.*(separable|disagree).*:UserWarning")
def test_train_consensus_keeps_one_seed(workdir: Path, capsys):
    assert main(["train", "--config", str(_runs_config(workdir, "consensus", "consensus"))]) == 0
    out = workdir / "consensus"
    saved = json.loads((out / "config.json").read_text())  # an ordinary model directory
    table = pd.read_csv(out / "agreement.csv")
    assert list(table.columns) == ["run_a", "run_b", "seed_a", "seed_b", "agreement"]
    assert saved["init_params"]["seed"] in (0, 1)
    assert "kept seed" in capsys.readouterr().err
    assert yaml.safe_load((out / "run_config.yaml").read_text())["runs"]["combine"] == "consensus"


@pytest.mark.filterwarnings("ignore:.*(separable|disagree).*:UserWarning")
def test_train_ensemble_then_embed_translate_evaluate(workdir: Path, capsys):
    assert main(["train", "--config", str(_runs_config(workdir, "ensemble", "ensemble"))]) == 0
    model = workdir / "ensemble"
    assert (model / "ensemble.json").is_file() and (model / "member1" / "config.json").is_file()
    hist = pd.read_csv(model / "history.csv")
    assert sorted(hist["seed"].unique()) == [0, 1]
    out = workdir / "ens_rna.h5ad"
    assert main(["embed", "--model", str(model), *_data_args(workdir), "--modality", "rna",
                 "--out", str(out)]) == 0
    assert ad.read_h5ad(out).obsm["X_transmodal"].shape == (N_CELLS, 8)  # 2 members x 4
    out = workdir / "ens_atac_from_rna.h5ad"
    assert main(["translate", "--model", str(model), *_data_args(workdir), "--source", "rna",
                 "--target", "atac", "--out", str(out)]) == 0
    assert ad.read_h5ad(out).shape == (N_CELLS, N_ATAC)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model), *_data_args(workdir), "--source", "rna",
                 "--target", "atac"]) == 0
    assert "foscttm" in capsys.readouterr().out
    from transmodal import CrossModalAE

    with pytest.raises(FileNotFoundError, match="holds an ensemble.*tm.Ensemble.load"):
        CrossModalAE.load(model)


# ---------------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(command: str, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: transmodal {command}" in out
    assert "examples:" in out


def test_version(capsys):
    """One version, that of the code that runs: written once (transmodal/_version.py, which
    pyproject.toml reads), printed by --version (it came from whichever installed
    distribution was called transmodal, 'unknown' from a source tree)."""
    import tomllib

    from transmodal._version import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"transmodal {__version__}\n"
    assert tm.__version__ == __version__
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "transmodal._version.__version__"}
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["transmodal"]
    assert (Path(tm.__file__).parent / "py.typed").is_file()  # (PEP 561: typed)


def test_broken_pipe_leaves_a_calling_program_its_stdout(monkeypatch, tmp_path):
    """main() called from a program whose stdout's reader has gone returns 1 and leaves the
    program's file descriptor 1 as it was (it pointed it at /dev/null for good, and leaked
    the descriptor opened for it)."""
    import transmodal.cli._main as cli

    def broken(args):
        raise BrokenPipeError

    monkeypatch.setattr(cli, "_run", broken)
    before = os.readlink("/proc/self/fd/1") if Path("/proc/self/fd/1").exists() else None
    fds = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").exists() else None
    assert main(["demo", "--out", str(tmp_path / "d")]) == 1
    if before is not None:
        assert os.readlink("/proc/self/fd/1") == before
        assert len(os.listdir("/proc/self/fd")) == fds


def test_the_executable_exits_quietly_into_a_closed_pipe(tmp_path):
    """`transmodal ... | head -c 1`: exit code 1 and no broken-pipe error at exit."""
    script = (
        "import transmodal.cli._main as cli, sys\n"
        "cli._run = lambda args: print('x' * 2_000_000) or 0\n"
        f"sys.argv = ['transmodal', 'demo', '--out', {str(tmp_path / 'd')!r}]\n"
        "cli.console()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.read(1) == b"x"
    proc.stdout.close()  # the reader goes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, err
    assert "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_console_script_help():
    exe = Path(sys.executable).parent / "transmodal"
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "usage: transmodal" in res.stdout
    for command in SUBCOMMANDS:
        assert command in res.stdout


def test_import_and_help_do_not_load_torch():
    """``import transmodal`` and the CLI's help import the subpackages only when used (they
    took 5-9 s, mostly torch and scipy.stats); every public name still resolves."""
    code = (
        "import sys, transmodal as tm\n"
        "from transmodal.cli import build_parser\n"
        "try:\n    build_parser().parse_args(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "for name in tm.__all__:\n    assert getattr(tm, name) is not None, name\n"
        "assert tm.pl is tm.plotting and tm.tl is tm.tools and tm.pp is tm.preprocessing\n"
        "from transmodal import CrossModalAE, Modality, register_likelihood\n"
        "assert CrossModalAE is tm.CrossModalAE and 'torch' in sys.modules\n"
        "assert tm.model is sys.modules['transmodal.model'] and 'CrossModalAE' in dir(tm)\n"
        "try:\n    tm.CrossModalAEE\nexcept AttributeError as e:\n    print(e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "module 'transmodal' has no attribute 'CrossModalAEE'" in res.stdout


# ---------------------------------------------------------------------------- bad configs
def _bad(cfg: dict, edit) -> dict:
    edit(cfg)
    return cfg


BAD_CONFIGS = {
    "unknown model key": (
        lambda c: c["model"].update(n_latnt=8),
        ("model", "unknown key 'n_latnt'", "did you mean 'n_latent'"),
    ),
    "unknown train key": (
        lambda c: c["train"].update(epochs=3),
        ("train", "unknown key 'epochs'"),
    ),
    # other tools' names get the transmodal spelling, as in Python (not 'num_nodes' for
    # num_workers, 'devices' for device, 'early_stopping' for early_stopping_patience)
    "other tools' train keys": (
        lambda c: c["train"].update(num_workers=4),
        ("train", "unknown key 'num_workers' (rows are read by the training process"),
    ),
    "device as a train key": (
        lambda c: c["train"].update(device="cuda"),
        ("train", "unknown key 'device' (choose the device with accelerator="),
    ),
    "early stopping patience": (
        lambda c: c["train"].update(early_stopping_patience=3),
        ("train", "(the epochs without improvement are patience=)"),
    ),
    "scvi-tools model key": (
        lambda c: c["model"].update(gene_likelihood="nb"),
        ("model", "unknown key 'gene_likelihood' (the likelihood is each modality's"),
    ),
    "scvi-tools modality key": (
        lambda c: c["modalities"]["rna"].update(gene_likelihood="nb"),
        ("modalities", "gene_likelihood: the likelihood is the field 'likelihood' (e.g. "
         "likelihood: nb)"),
    ),
    "a short key's spelling": (  # (as difflib finds it: out is shorter than the rules')
        lambda c: c.update(output="run"),
        ("top level", "unknown key 'output' (did you mean 'out'?)"),
    ),
    "unknown top-level key": (
        lambda c: c.update(trainer={"max_epochs": 2}),
        ("top level", "unknown key 'trainer'"),
    ),
    "missing data file": (
        lambda c: c["data"].update(atac="nope/atac.h5ad"),
        ("data", "'atac'", "file not found", "atac.h5ad"),
    ),
    "modality without data": (
        lambda c: c["modalities"].update(protein={"likelihood": "gaussian"}),
        ("modalities", "'protein'", "no data path"),
    ),
    "data without modality": (
        lambda c: c["data"].update(prot="rna.h5ad"),
        ("data", "'prot'", "no spec"),
    ),
    "missing modalities section": (
        lambda c: c.pop("modalities"),
        ("missing section 'modalities'",),
    ),
    "string instead of number": (
        lambda c: c["model"].update(n_latent="eight"),
        ("model", "'n_latent'", "must be an integer", "'eight'"),
    ),
    "unknown accelerator": (
        lambda c: c["train"].update(accelerator="tpu"),
        ("train", "accelerator must be one of", "'tpu'"),
    ),
    "accelerator not on this machine": (
        lambda c: c["train"].update(accelerator="mps"),
        ("train", "accelerator 'mps' requested but MPS"),
    ),
    "string instead of float": (
        lambda c: c["train"].update(lr="fast"),
        ("train", "'lr'", "must be a number"),
    ),
    "bad modality field": (
        lambda c: c["modalities"]["rna"].update(likelyhood="nb"),
        ("modalities", "'rna'", "likelyhood"),
    ),
    "bad likelihood": (
        lambda c: c["modalities"]["rna"].update(likelihood="gamma-ray"),
        ("modalities", "'rna'", "likelihood"),
    ),
    "bad prior": (
        lambda c: c["model"].update(prior="anchor:protein"),
        ("model", "protein"),
    ),
    "runs with a model seed": (
        lambda c: c.update(runs={"seeds": [0, 1]}),
        ("model", "'seed'", "conflicts with section 'runs'"),
    ),
    "runs with a train seed": (
        lambda c: (c["model"].pop("seed"), c.update(runs={"seeds": [0, 1]}),
                   c["train"].update(seed=4)),
        ("train", "'seed'", "conflicts with section 'runs'"),
    ),
    "negative learning rate": (
        lambda c: c["train"].update(lr=-1),
        ("train", "lr must be a finite number > 0", "-1"),
    ),
    "negative adversarial weight": (
        lambda c: c["train"].update(lam_adv=-0.5),
        ("train", "lam_adv must be a finite number >= 0"),
    ),
    "bad anchor distance": (
        lambda c: c["train"].update(anchor_distance="cosine"),
        ("train", "anchor_distance must be", "'cosine'"),
    ),
    "runs with one seed": (
        lambda c: (c["model"].pop("seed"), c.update(runs={"seeds": [3]})),
        ("runs", "'seeds'", "at least two distinct integers"),
    ),
    "runs with a negative seed": (
        lambda c: (c["model"].pop("seed"), c.update(runs={"seeds": [0, -1]})),
        ("runs", "'seeds'", "in [0, 2**63)", "-1"),
    ),
    "runs with a bad combine": (
        lambda c: (c["model"].pop("seed"), c.update(runs={"seeds": [0, 1], "combine": "mean"})),
        ("runs", "'combine'", "consensus, ensemble", "'mean'"),
    ),
    "bad subset": (
        lambda c: c["subset"].update(column="split"),
        ("subset", "unknown key 'column'"),
    ),
    # multi-process settings: named before any data are read (Lightning failed after)
    "zero devices": (
        lambda c: c["train"].update(devices=0),
        ("train", "devices must be a positive number of processes", "0"),
    ),
    "GPU indices on the CPU": (
        lambda c: c["train"].update(devices=[5]),
        ("train", "devices=[5] lists GPU indices", "CPU"),
    ),
    "unknown strategy": (
        lambda c: c["train"].update(strategy="nonsense"),
        ("train", "unknown strategy 'nonsense'"),
    ),
    "zero nodes": (
        lambda c: c["train"].update(num_nodes=0),
        ("train", "num_nodes must be a positive integer"),
    ),
    "dot in a modality name": (
        lambda c: (c["modalities"].update({"rna.v1": c["modalities"].pop("rna")}),
                   c["data"].update({"rna.v1": c["data"].pop("rna")})),
        ("modalities", "'rna.v1'", "may not contain '.'", "'rna_v1'"),
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config(case: str, workdir: Path, tmp_path: Path, capsys):
    edit, needles = BAD_CONFIGS[case]
    cfg = _bad(_config(workdir), edit)
    for name, path in list(cfg.get("data", {}).items()):  # data live in workdir
        cfg["data"][name] = str(workdir / path)
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m")]) == 2
    line = _assert_one_line_error(capsys, str(path), *needles)
    assert not (tmp_path / "m").exists(), line


def test_config_values_as_documented(workdir: Path, tmp_path: Path):
    """String choices of boolean-or-string options pass; YAML 1.1's yes / no / on / off stay
    strings (only true / false are booleans)."""
    from transmodal.cli._config import load_config

    cfg = _config(workdir)
    cfg["data"] = {n: str(workdir / p) for n, p in cfg["data"].items()}
    cfg["model"].update(geometric_pairs="transport")
    path = _write_config(tmp_path / "run.yaml", cfg)
    text = path.read_text().replace("value: train", "value: yes")
    path.write_text(text + "\n")
    loaded = load_config(path)
    assert loaded.model["geometric_pairs"] == "transport"
    assert loaded.subset["value"] == "yes"
    path.write_text(text.replace("progress_bar: false", "progress_bar: False"))
    assert load_config(path).train["progress_bar"] is False
    # integers in plain decimal only: IDs with leading zeros and YAML 1.1's octal,
    # sexagesimal and hexadecimal forms stay strings (010 was 8, 1:30 was 90)
    for value, expected in (("010", "010"), ("001", "001"), ("1:30", "1:30"),
                            ("0x1A", "0x1A"), ("1_2", "1_2"), ("1:30.5", "1:30.5"),
                            ("10", 10), ("0", 0), ("-3", -3), ("2.5", 2.5), (".5", 0.5)):
        path.write_text(text.replace("value: yes", f"value: {value}"))
        assert load_config(path).subset["value"] == expected, value
    # run_config.yaml is written so that it reads back as it was: strings this loader or
    # YAML 1.1 would read as numbers or booleans are quoted ("1e5" was read back as 1e5)
    from transmodal.cli._config import _Loader, dump_config

    values = {"a": "1e5", "b": "-.5", "c": "+.5", "d": "yes", "e": "010", "f": 1e-5,
              "g": 10, "h": 0.5, "i": "1:30", "j": "true", "k": None, "l": [1, "2"]}
    assert yaml.load(dump_config(values), Loader=_Loader) == values  # noqa: S506
    assert yaml.safe_load(dump_config(values)) == values
    path.write_text(text.replace("value: yes", "value: '1e5'"))
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(load_config(path).to_dict()))
    assert load_config(again).subset["value"] == "1e5"


def test_mudata_subset_by_each_modality_obs(workdir: Path, tmp_path: Path, capsys):
    """subset: with a MuData selects each modality's cells by its own obs column, as with
    data: (it was refused, the column not being in the MuData's obs; a prefixed column
    dropped the other modality's unpaired cells)."""
    import mudata as md

    mods = {n: ad.read_h5ad(workdir / f"{n}.h5ad") for n in ("rna", "atac")}
    atac = mods["atac"]
    atac.obs_names = [f"{c}_atac" if i % 2 else c for i, c in enumerate(atac.obs_names)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md.MuData(mods).write(tmp_path / "cells.h5mu")
    cfg = _config(workdir)
    del cfg["data"]
    cfg["mudata"] = str(tmp_path / "cells.h5mu")
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m")]) == 0
    n_train = int((mods["rna"].obs["split"] == "train").sum())
    err = capsys.readouterr().err
    assert f"rna {n_train} x" in err and f"atac {n_train} x" in err, err
    # a column of the MuData's own obs without a value for some cells: told
    cfg["subset"]["obs_key"] = "rna:split"
    path = _write_config(tmp_path / "run.yaml", cfg)
    with pytest.warns(UserWarning, match=r"obs\['rna:split'\] has no value for \d+ of"):
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "m1")]) == 0
    cfg["subset"]["obs_key"] = "batch"  # in no obs: named with the modality
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m2")]) == 2
    _assert_one_line_error(capsys, "modality 'rna'", "'batch' not found")


def test_invalid_yaml_and_missing_config(tmp_path: Path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {n_latent: 4\ntrain: [\n")
    assert main(["train", "--config", str(bad)]) == 2
    _assert_one_line_error(capsys, "bad.yaml", "invalid YAML", "line")
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    _assert_one_line_error(capsys, "config file not found", "missing.yaml")


def test_subset_value_not_found(workdir: Path, tmp_path: Path, capsys):
    cfg = _config(workdir, subset={"obs_key": "split", "value": "validation"})
    cfg["data"] = {n: str(workdir / p) for n, p in cfg["data"].items()}
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m")]) == 2
    _assert_one_line_error(capsys, "subset", "'validation'")


def test_json_config_and_sci_notation(tmp_path: Path):
    """JSON configs are read by suffix; YAML `1e-3` is a float (PyYAML alone reads a string)."""
    from transmodal.cli._config import load_config, read_config_file

    (tmp_path / "rna.h5ad").touch()
    (tmp_path / "atac.h5ad").touch()
    cfg = _config(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    rc = load_config(tmp_path / "run.json")
    assert rc.data["rna"] == tmp_path / "rna.h5ad"
    assert rc.out == tmp_path / "model"
    (tmp_path / "lr.yaml").write_text("train: {lr: 1e-3, weight_decay: 5E-4}\n")
    raw = read_config_file(tmp_path / "lr.yaml")
    assert raw["train"] == {"lr": 1e-3, "weight_decay": 5e-4}


def test_wrong_file_types_are_one_line_errors(workdir: Path, trained: Path, tmp_path: Path, capsys):
    import mudata as md

    # an .h5ad given as the MuData of a config, an .h5mu given as a modality's .h5ad
    cfg = _config(workdir)
    del cfg["data"]
    cfg["mudata"] = str(workdir / "rna.h5ad")
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m")]) == 2
    _assert_one_line_error(capsys, "mudata", "cannot read", "rna.h5ad", ".h5mu")
    h5mu = tmp_path / "cells.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md.MuData({"rna": ad.read_h5ad(workdir / "rna.h5ad")}).write(h5mu)
    out = tmp_path / "e.h5ad"
    args = ["embed", "--model", str(trained), "--data", f"rna={h5mu}", "--modality", "rna"]
    fake = tmp_path / "fake.h5mu"  # an .h5ad named .h5mu
    fake.write_bytes((workdir / "rna.h5ad").read_bytes())
    assert main([*args[:4], f"rna={fake}", *args[5:], "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "--data rna", "cannot read", "fake.h5mu", ".h5mu")
    assert main([*args[:4], str(fake), *args[5:], "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "--data", "fake.h5mu", "not a MuData file")
    (tmp_path / "junk.h5ad").write_text("not hdf5")
    args[4] = f"rna={tmp_path / 'junk.h5ad'}"
    assert main([*args, "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "--data rna", "cannot read", "junk.h5ad")
    assert not out.exists()
    # a 10x Genomics matrix (cellranger's .h5): how to read it; a MuData under data:
    import h5py
    with h5py.File(tmp_path / "filtered_feature_bc_matrix.h5", "w") as f:
        f.create_group("matrix").create_group("features")
    args[4] = f"rna={tmp_path / 'filtered_feature_bc_matrix.h5'}"
    assert main([*args, "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "--data rna", "cannot read", "as .h5ad: a 10x Genomics matrix",
                           "scanpy.read_10x_h5(path, gex_only=False)", "mudata.MuData(adata)")
    cfg = _config(workdir)
    cfg["data"]["rna"] = str(h5mu)
    path = _write_config(workdir / "mu.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m")]) == 2
    _assert_one_line_error(capsys, "data 'rna'", "cannot read", "as .h5ad: a MuData (give it "
                           "as 'mudata:' in the config)")
    misnamed = tmp_path / "cells_mu.h5ad"  # (a MuData named .h5ad)
    misnamed.write_bytes(h5mu.read_bytes())
    args[4] = f"rna={misnamed}"
    assert main([*args, "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "--data rna", "cannot read", "as .h5ad: a MuData (name the "
                           "file .h5mu, --data NAME=FILE.h5mu)")
    # a file named for two modalities is read once: the one matrix is refused
    cfg = _config(workdir)
    cfg["data"]["atac"] = cfg["data"]["rna"]
    path = _write_config(workdir / "twice.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m")]) == 2
    _assert_one_line_error(capsys, "modalities 'rna' and 'atac' read the same matrix")


def test_embed_checks_key_and_writes_all_or_nothing(workdir: Path, trained: Path, tmp_path: Path,
                                                     capsys):
    base = ["embed", "--model", str(trained), *_data_args(workdir)]
    for key in ("", "  ", "a/b"):
        assert main([*base, "--key", key, "--out", str(tmp_path / "k")]) == 2
        _assert_one_line_error(capsys, "--key", "non-empty obsm key")
    # atac with the wrong features fails after rna would have been embedded: nothing written
    atac = ad.read_h5ad(workdir / "atac.h5ad")[:, :5].copy()
    atac.write_h5ad(tmp_path / "atac_bad.h5ad")
    out = tmp_path / "embedded"
    args = ["embed", "--model", str(trained), "--data", f"rna={workdir / 'rna.h5ad'}",
            f"atac={tmp_path / 'atac_bad.h5ad'}", "--out", str(out)]
    assert main(args) == 2
    _assert_one_line_error(capsys, "atac")
    assert not (out / "rna.h5ad").exists() and not (out / "atac.h5ad").exists()


def test_traceback_flag_after_the_command(trained: Path, tmp_path: Path, capsys):
    args = ["embed", "--model", str(tmp_path / "none"), "--data", "rna=x.h5ad",
            "--out", str(tmp_path / "e.h5ad"), "--modality", "rna"]
    assert main(args) == 2
    _assert_one_line_error(capsys, "not a saved transmodal model")
    for argv in (["--traceback", *args], [*args, "--traceback"]):
        with pytest.raises(FileNotFoundError):
            main(argv)


def test_config_encoding_and_duplicate_json_keys(tmp_path: Path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("model: {labels_key: 'Zelltyp-\xe4'}\n".encode("latin-1"))
    assert main(["train", "--config", str(bad)]) == 2
    _assert_one_line_error(capsys, "latin1.yaml", "not UTF-8")
    dup = tmp_path / "dup.json"
    dup.write_text('{"model": {"n_latent": 4, "n_latent": 8}}')
    assert main(["train", "--config", str(dup)]) == 2
    _assert_one_line_error(capsys, "dup.json", "invalid JSON", "'n_latent' appears twice")


def test_ctrl_c_exits_130_without_a_traceback(tmp_path: Path, capsys, monkeypatch):
    from transmodal.cli import _commands

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_commands, "cmd_embed", interrupted)
    args = ["embed", "--model", str(tmp_path), "--data", "rna=x.h5ad",
            "--out", str(tmp_path / "e.h5ad"), "--modality", "rna"]
    assert main(args) == 130
    assert capsys.readouterr().err == "transmodal: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--traceback"])


def test_pipeline_paths(workdir: Path, trained: Path, tmp_path: Path, capsys):
    """What pipelines do to paths: a config staged as a link reads the data and writes the
    model beside the link; an output that cannot be written is an error before training;
    an embedding never replaces its input; a folder holding another program's config.json
    is not replaced; an output folder that is a link is replaced behind the link."""
    import os

    project = tmp_path / "project"
    project.mkdir()
    cfg = _config(workdir, train={"max_epochs": 1, "batch_size": 32, "progress_bar": False},
                  out="model_linked")
    _write_config(project / "run.yaml", cfg)  # no data beside it
    link = workdir / "linked.yaml"
    link.symlink_to(project / "run.yaml")
    assert main(["train", "--config", str(link)]) == 0
    assert (workdir / "model_linked" / "config.json").is_file()
    assert sorted(p.name for p in project.iterdir()) == ["run.yaml"]
    capsys.readouterr()
    assert main(["train", "--config", str(link), "--out", str(workdir / "rna.h5ad" / "m")]) == 2
    err = capsys.readouterr().err
    assert "rna.h5ad is a file, not a folder" in err and "training" not in err
    inp = tmp_path / "mine.h5ad"
    inp.write_bytes((workdir / "rna.h5ad").read_bytes())
    args = ["embed", "--model", str(trained), "--data", f"rna={inp}", "--modality", "rna",
            "--out", str(inp)]
    for extra in ([], ["--overwrite"]):  # (not first advised to pass --overwrite)
        assert main([*args, *extra]) == 2
        _assert_one_line_error(capsys, "mine.h5ad is the file of --data rna")
    assert inp.read_bytes() == (workdir / "rna.h5ad").read_bytes()
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "config.json").write_text('{"my": "pipeline settings"}')
    assert main(["train", "--config", str(link), "--out", str(settings), "--overwrite"]) == 2
    _assert_one_line_error(capsys, "not part of a saved model (config.json)")
    assert (settings / "config.json").read_text() == '{"my": "pipeline settings"}'
    out_link = tmp_path / "model_link"
    out_link.symlink_to(workdir / "model_linked")
    before = (workdir / "model_linked" / "model.safetensors").stat().st_mtime_ns
    assert main(["train", "--config", str(link), "--out", str(out_link), "--overwrite"]) == 0
    assert out_link.is_symlink() and os.path.samefile(out_link, workdir / "model_linked")
    assert (workdir / "model_linked" / "model.safetensors").stat().st_mtime_ns != before
    capsys.readouterr()
    elsewhere = tmp_path / "elsewhere"  # a linked config without data beside the link
    elsewhere.mkdir()
    (elsewhere / "run.yaml").symlink_to(project / "run.yaml")
    assert main(["train", "--config", str(elsewhere / "run.yaml")]) == 2
    _assert_one_line_error(capsys, "file not found", "read from the folder of the config as "
                           "given", "is a link to")
    # an .h5mu path with "=" in a folder that does not exist: named as a missing file
    assert main(["embed", "--model", str(trained), "--data", str(tmp_path / "a=1" / "c.h5mu"),
                 "--out", str(tmp_path / "e")]) == 2
    assert "not found" in capsys.readouterr().err


def test_sigterm_exits_143_and_removes_unfinished_outputs(tmp_path: Path, capsys, monkeypatch):
    """SIGTERM (timeout, a pipeline's cancel) removes the temporary file of an output being
    written, as Ctrl+C does, and restores the previous handler."""
    import os
    import signal
    import time

    from transmodal._utils import atomic_file
    from transmodal.cli import _commands

    def terminated_while_writing(*args, **kwargs):
        with atomic_file(tmp_path / "e.h5ad") as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # (the handler raises before this ends)

    monkeypatch.setattr(_commands, "cmd_embed", terminated_while_writing)
    before = signal.getsignal(signal.SIGTERM)
    args = ["embed", "--model", str(tmp_path), "--data", "rna=x.h5ad",
            "--out", str(tmp_path / "e.h5ad"), "--modality", "rna"]
    assert main(args) == 143
    assert capsys.readouterr().err == "transmodal: terminated\n"
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
    assert signal.getsignal(signal.SIGTERM) is before
    # called from a program with its own handler: that handler gets the signal as well
    seen = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        assert main(args) == 143
    finally:
        signal.signal(signal.SIGTERM, before)
    assert seen == [signal.SIGTERM] and list(tmp_path.iterdir()) == []


def test_training_line_gives_the_shape_the_model_reads():
    """An obsm modality's shape is its matrix's (totalVI's proteins beside the RNA), not the
    AnnData's genes."""
    from transmodal.cli._commands import _describe

    adata = ad.AnnData(np.zeros((5, 7), dtype=np.float32))
    adata.obsm["prot"] = np.zeros((5, 3), dtype=np.float32)
    adata.obsm["crops"] = np.zeros((5, 1, 8, 8), dtype=np.float32)
    specs = {"rna": tm.Modality("nb"), "prot": tm.Modality("nb", obsm_key="prot"),
             "image": tm.Modality("gaussian", obsm_key="crops")}
    assert (_describe({n: adata for n in specs}, specs)
            == "rna 5 x 7, prot 5 x 3, image 5 x 1 x 8 x 8")


# ----------------------------------------------------------------- train on a reference
def _reference_config(workdir: Path, trained: Path, **overrides) -> dict:
    """A config adding modality 'prot' to the trained model (``reference:``)."""
    prot = workdir / "prot.h5ad"
    if not prot.exists():
        atac = ad.read_h5ad(workdir / "atac.h5ad")
        X = np.log1p(atac.X[:, :12]) + np.random.default_rng(0).normal(0, 0.1, (atac.n_obs, 12))
        ad.AnnData(X=X.astype(np.float32), obs=atac.obs,
                   var=pd.DataFrame(index=[f"p{j}" for j in range(12)])).write_h5ad(prot)
    cfg = {
        "reference": {"path": str(trained)},
        "data": {"rna": str(workdir / "rna.h5ad"), "prot": str(prot)},
        "modalities": {"prot": {"likelihood": "gaussian"}},
        "model": {"anchor_fraction": 1.0, "validation_fraction": 0.2, "seed": 0},
        "train": {"max_epochs": 2, "batch_size": 32, "progress_bar": False},
        "subset": {"obs_key": "split", "value": "train"},
    }
    cfg.update(overrides)
    return cfg


def test_train_on_a_reference(workdir: Path, trained: Path, tmp_path: Path, capsys):
    """``reference:`` trains a new modality into a trained model's latent space
    (CrossModalAE.from_reference): the anchor embeds as the reference does; the config
    written beside the model names the reference; resume checks the modalities."""
    cfg = _reference_config(workdir, trained)
    cfg["train"]["checkpoint_dir"] = str(tmp_path / "ckpt")
    cfg["modalities"]["rna"] = {"likelihood": "nb"}  # (the reference's spec may be given)
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m")]) == 0
    assert "training on rna 90 x 30, prot 90 x 12" in capsys.readouterr().err
    rna = ad.read_h5ad(workdir / "rna.h5ad")
    model = tm.CrossModalAE.load(tmp_path / "m")
    assert model.modality_names == ["rna", "prot"]
    assert model.init_params_["prior"] == "anchor:rna" and model.init_params_["n_latent"] == 4
    np.testing.assert_array_equal(
        model.get_latent_representation("rna", rna),
        tm.CrossModalAE.load(trained).get_latent_representation("rna", rna),
    )
    written = yaml.safe_load((tmp_path / "m" / "run_config.yaml").read_text())
    assert written["reference"] == {"path": str(trained), "anchor": "rna"}
    # the checkpoint of this run resumes under this config, not under another modality set
    with pytest.warns(UserWarning, match="nothing to resume"):
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "m"),
                     "--overwrite", "--resume"]) == 0
    cfg["modalities"]["prot"]["likelihood"] = "continuous_bernoulli"
    other = _write_config(tmp_path / "other.yaml", cfg)
    assert main(["train", "--config", str(other), "--out", str(tmp_path / "m2"),
                 "--resume"]) == 2
    _assert_one_line_error(capsys, "--resume", "modalities: prot: likelihood")


REFERENCE_CONFIGS = {
    "no saved model": (lambda c, w: c["reference"].update(path=str(w / "nowhere")),
                       ("reference:", "is not a saved transmodal model")),
    "unknown key": (lambda c, w: c["reference"].update(modality="rna"),
                    ("reference", "unknown key 'modality'")),
    "anchor not in the reference": (lambda c, w: c["reference"].update(anchor="prot"),
                                    ("reference: anchor 'prot' is not a modality of the "
                                     "reference (rna, atac)",)),
    "anchor not in the data": (lambda c, w: c["reference"].update(anchor="atac"),
                               ("reference: anchor='atac' is not in data",)),
    "the reference's modality given otherwise": (
        lambda c, w: c["modalities"].update(rna={"likelihood": "poisson"}),
        ("modalities: modality 'rna' is the reference's",)),
    "other latent size": (lambda c, w: c["model"].update(n_latent=8),
                          ("model: n_latent=8: the reference's networks were built with "
                           "n_latent=4",)),
    "a prior": (lambda c, w: c["model"].update(prior="learned"),
                ("model: prior is 'anchor:<name>'",)),
    "no reference modality in the data": (
        lambda c, w: (c["data"].pop("rna"), c["data"].update(prot2=c["data"]["prot"]),
                      c["modalities"].update(prot2={"likelihood": "gaussian"})),
        ("data: none of the reference's modalities (rna, atac)",)),
    "a modality nobody specifies": (lambda c, w: c["data"].update(other=c["data"]["prot"]),
                                    ("data: 'other' has no spec", "the reference's: rna, atac")),
    "an ensemble as the reference": (
        lambda c, w: (Path(c["data"]["prot"]).parent.joinpath("ens").mkdir(exist_ok=True),
                      Path(c["data"]["prot"]).parent.joinpath("ens", "ensemble.json")
                      .write_text("{}"),
                      c["reference"].update(path=str(w / "ens"))),
        ("reference:", "holds an ensemble, which has no single latent space")),
    "two reference modalities, no anchor": (
        lambda c, w: c["data"].update(atac=str(w / "atac.h5ad")),
        ("reference: data hold the reference's modalities ['rna', 'atac']",
         "with reference: {path: ..., anchor: <name>}")),
    "a list as anchor": (lambda c, w: c["reference"].update(anchor=["rna"]),
                         ("reference: key 'anchor' must be a modality name", "['rna']")),
    "the reference's spec given otherwise, only the difference named": (
        lambda c, w: c["modalities"].update(rna={"likelihood": "nb", "hidden": [8]}),
        ("modalities: modality 'rna' is the reference's", "(hidden=[8] (reference: [16]))")),
    "a MuData without the anchor": (
        lambda c, w: (c.pop("data"), c.update(mudata=str(w / "rna_prot.h5mu")),
                      c["reference"].update(anchor="atac")),
        ("reference: anchor='atac' is not in data",)),
    "a MuData without a reference modality": (
        lambda c, w: (c.pop("data"), c.update(mudata=str(w / "prot_only.h5mu"))),
        ("mudata (", "none of the reference's modalities (rna, atac)")),
}


@pytest.mark.parametrize("case", list(REFERENCE_CONFIGS))
def test_bad_reference_config(case, workdir: Path, trained: Path, tmp_path: Path, capsys):
    """Every problem of a ``reference:`` config is one line, before any data are read."""
    edit, needles = REFERENCE_CONFIGS[case]
    cfg = _reference_config(workdir, trained)
    if not (workdir / "prot_only.h5mu").exists():
        import mudata as md

        rna, prot = ad.read_h5ad(workdir / "rna.h5ad"), ad.read_h5ad(workdir / "prot.h5ad")
        with warnings.catch_warnings():  # (mudata's notices about joining obs columns)
            warnings.simplefilter("ignore")
            md.MuData({"rna": rna, "prot": prot}).write(workdir / "rna_prot.h5mu")
            md.MuData({"prot": prot, "prot2": prot.copy()}).write(workdir / "prot_only.h5mu")
    edit(cfg, workdir)
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m")]) == 2
    _assert_one_line_error(capsys, str(path), *needles)
    assert not (tmp_path / "m").exists()


def test_reference_is_never_written_and_resume_checks_it(workdir: Path, trained: Path,
                                                         tmp_path: Path, capsys):
    """The output and checkpoint directories may not be, hold or lie in the reference's; a
    checkpoint built on another reference is not resumed; a reference modality's spec may
    be given as null (taken from the reference)."""
    before = (trained / "model.safetensors").read_bytes()
    cfg = _reference_config(workdir, trained)
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(trained), "--overwrite"]) == 2
    _assert_one_line_error(capsys, "the output directory", "is, holds or lies in the "
                                   "reference model's directory")
    cfg["train"]["checkpoint_dir"] = str(trained / "ckpt")
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m")]) == 2
    _assert_one_line_error(capsys, "train: checkpoint_dir", "reference model's directory")
    assert (trained / "model.safetensors").read_bytes() == before
    assert not (trained / "ckpt").exists()
    # another reference: the same settings, other weights
    other = tm.CrossModalAE.load(trained, {k: ad.read_h5ad(workdir / f"{k}.h5ad")
                                           for k in ("rna", "atac")})
    other.train(max_epochs=1, progress_bar=False, early_stopping=False)
    other.save(tmp_path / "other_ref")
    cfg = _reference_config(workdir, trained, modalities={"rna": None,
                                                          "prot": {"likelihood": "gaussian"}})
    cfg["train"]["checkpoint_dir"] = str(tmp_path / "ckpt")
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m")]) == 0
    cfg["reference"]["path"] = str(tmp_path / "other_ref")
    path = _write_config(tmp_path / "run.yaml", cfg)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "m"), "--overwrite",
                 "--resume"]) == 2
    _assert_one_line_error(capsys, "--resume", "the checkpoint's anchor 'rna' holds other "
                                   "networks: built on another reference?")
