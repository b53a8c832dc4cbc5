"""Streaming: backed h5ad / zarr inputs, prefetching, outputs written to .h5ad in blocks,
and the synthetic generator writing straight to disk."""

from __future__ import annotations

import copy
import json
import threading
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import transmodal as tm
from transmodal.data import MatrixSource
from transmodal.data._prefetch import Prefetcher
from transmodal.datasets import read_backed

SPECS = {"rna": "nb", "atac": "bernoulli"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small synthetic pair of modalities, in memory and as .h5ad / .zarr files."""
    d = tm.datasets.synthetic(240, n_features={"rna": 30, "atac": 40}, seed=0)
    root = tmp_path_factory.mktemp("small")
    fmt = getattr(ad.settings, "zarr_write_format", None)
    try:
        if fmt is not None:
            ad.settings.zarr_write_format = 3
        with warnings.catch_warnings():  # zarr's notes on the v3 format
            warnings.simplefilter("ignore")
            for k, a in d.items():
                a.write_h5ad(root / f"{k}.h5ad")
                a.write_zarr(root / f"{k}.zarr")
    finally:
        if fmt is not None:
            ad.settings.zarr_write_format = fmt
    return d, root


def _inputs(kind: str, d: dict, root) -> dict:
    if kind == "csr":
        return d
    if kind == "dense":
        out = {}
        for k, a in d.items():
            b = a.copy()
            b.X = a.X.toarray()
            out[k] = b
        return out
    if kind == "backed":
        return {k: ad.read_h5ad(root / f"{k}.h5ad", backed="r") for k in d}
    return {k: read_backed(root / f"{k}.zarr") for k in d}


def _fit(data, **kw) -> tm.CrossModalAE:
    model = tm.CrossModalAE(
        data, modalities={k: tm.Modality(v) for k, v in SPECS.items()}, n_latent=4,
        hidden=(16,), seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=kw.pop("max_epochs", 2), batch_size=64, progress_bar=False, **kw)
    return model


def test_dense_csr_backed_and_zarr_inputs_train_identically(small):
    d, root = small
    ref = _fit(_inputs("csr", d, root))
    ref_state = ref.module.state_dict()
    ref_z = ref.get_latent_representation("atac")
    for kind in ("dense", "backed", "zarr"):
        data = _inputs(kind, d, root)
        model = _fit(data)
        for key, value in model.module.state_dict().items():
            assert torch.equal(value, ref_state[key]), (kind, key)
        np.testing.assert_array_equal(model.get_latent_representation("atac"), ref_z)
        pd.testing.assert_frame_equal(model.history, ref.history)
        if kind != "dense":
            assert model.mods["rna"].source.on_disk
    # a trained model embeds backed / zarr data it was not trained on, the same way
    for kind in ("backed", "zarr"):
        other = _inputs(kind, d, root)["rna"]
        np.testing.assert_array_equal(
            ref.get_latent_representation("rna", other), ref.get_latent_representation("rna")
        )


def test_a_backed_file_closed_and_opened_again_is_read_again(small):
    """The model reads its own backed cells from their file as it is open now: refused by
    name while the file is closed, read anew once opened again (its old handles are
    invalid), also to train further."""
    d, root = small
    data = _inputs("backed", d, root)
    model = _fit(data)
    untrained = tm.CrossModalAE(data, modalities={k: tm.Modality(v) for k, v in SPECS.items()},
                                n_latent=4, hidden=(16,), seed=0)
    z = model.get_latent_representation("rna")
    data["rna"].file.close()
    with pytest.raises(ValueError, match=r"modality 'rna': its AnnData's file .*rna\.h5ad is "
                       r"closed; open it again \(adata\.file\.open\(\)\)"):
        model.get_latent_representation("rna")
    # also where only the model's own cells are read (the evaluation's baseline profile:
    # a bare h5py OSError before)
    with pytest.raises(ValueError, match=r"'rna': its AnnData's file .*rna\.h5ad is closed"):
        tm.workflows.evaluate_paired(model, {"rna": d["rna"], "atac": d["atac"]},
                                     source="atac", target="rna")
    # saving needs no rows: trained, the values trained on are kept; untrained, a closed
    # file's cells are recorded by their names alone (a bare h5py OSError before)
    assert not model.mods["rna"].source.readable
    model.save(root / "saved_closed", overwrite=True)
    untrained.save(root / "untrained_closed", overwrite=True)
    assert "rna" not in json.loads(
        (root / "untrained_closed" / "config.json").read_text())["values_fingerprint"]
    data["rna"].file.open()
    np.testing.assert_array_equal(model.get_latent_representation("rna"), z)
    # another file of fewer cells written there meanwhile: refused, the model unchanged
    path = data["rna"].filename
    data["rna"].file.close()
    other = root / "other.h5ad"
    d["rna"][:100].copy().write_h5ad(other)
    moved = root / "moved.h5ad"
    path.rename(moved)
    other.rename(path)
    data["rna"].file.open()
    with pytest.raises(ValueError, match=r"now holds a matrix of other cells or features "
                       r"\(100 x 30, built with 240 x 30\)"):
        model.get_latent_representation("rna")
    data["rna"].file.close()
    moved.replace(path)
    data["rna"].file.open()
    np.testing.assert_array_equal(model.get_latent_representation("rna"), z)
    assert model.translate(source="rna", target="atac").n_obs == d["rna"].n_obs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=1, batch_size=64, progress_bar=False)
    assert len(model.history) == 3


def test_a_file_rewritten_on_disk_is_refused_not_read(small, tmp_path):
    """A zarr store or .h5ad file rewritten under a built model (the same cells in another
    order, fewer cells) is refused by name: it was read silently (rows of neither dataset
    from a zarr store's cached metadata, a crash inside zarr for another shape, the new
    order under the old names from a reopened .h5ad)."""
    import shutil

    from transmodal.data._setup import BackedFileUnreadable

    d, _ = small
    perm = np.random.default_rng(0).permutation(d["rna"].n_obs)
    store = tmp_path / "rna.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d["rna"].write_zarr(store)
        model = _fit({"rna": read_backed(store), "atac": d["atac"]}, max_epochs=1)
        z = model.get_latent_representation("rna")
        told = (r"^modality 'rna': the file its X is read from holds other values than when "
                r"the model was built \(rewritten on disk since")
        for rewritten in (d["rna"][perm], d["rna"][:100]):
            shutil.rmtree(store)
            rewritten.copy().write_zarr(store)
            with pytest.raises(BackedFileUnreadable, match=told):
                model.get_latent_representation("rna")
        shutil.rmtree(store)
        d["rna"].write_zarr(store)  # (the same values again: read as before)
        np.testing.assert_array_equal(model.get_latent_representation("rna"), z)
        path = tmp_path / "rna.h5ad"
        d["rna"].write_h5ad(path)
        backed = ad.read_h5ad(path, backed="r")
        model = _fit({"rna": backed, "atac": d["atac"]}, max_epochs=1)
        backed.file.close()
        d["rna"][perm].copy().write_h5ad(path)
        backed.file.open()
        with pytest.raises(BackedFileUnreadable, match=told):
            model.translate(source="rna", target="atac")


def test_backed_rows_any_order_equal_memory(small, tmp_path):
    d, root = small
    x = d["atac"].X.toarray()
    dense_h5 = tmp_path / "dense.h5ad"
    ad.AnnData(X=x).write_h5ad(dense_h5)
    idx = np.array([7, 3, 3, 200, 0, 1, 2, 239, 7])
    sources = [
        ad.read_h5ad(root / "atac.h5ad", backed="r").X,
        read_backed(root / "atac.zarr").X,
        read_backed(dense_h5).X,
        sp.csr_matrix((d["atac"].X.data, d["atac"].X.indices.astype(np.int32),
                       d["atac"].X.indptr.astype(np.int64)), shape=x.shape),
    ]
    # float16 values in a file (scipy.sparse has no float16 of its own)
    import h5py

    half_h5 = tmp_path / "half.h5ad"
    ad.AnnData(X=sp.csr_matrix(x)).write_h5ad(half_h5)
    with h5py.File(half_h5, "r+") as f:
        values = f["X/data"][...]
        del f["X/data"]
        f.create_dataset("X/data", data=values.astype(np.float16))
    sources.append(ad.read_h5ad(half_h5, backed="r").X)
    for m in sources:
        src = MatrixSource(m, name="atac", where="X")
        np.testing.assert_array_equal(src.rows(idx), x[idx])
        np.testing.assert_array_equal(src.rows(np.arange(5, 90)), x[5:90])
        np.testing.assert_array_equal(np.concatenate(list(src.chunks(chunk_size=100))), x)
        assert src.rows(np.zeros(0, np.int64)).shape == (0, x.shape[1])
        # a part of it (a view of a backed AnnData): rows and columns in any order
        rows, cols = np.array([9, 4, 200, 4, 0]), np.array([5, 1, 30])
        part = MatrixSource(m, name="atac", where="X", rows=rows, cols=cols)
        assert part.shape == (5, 3) and part.part
        np.testing.assert_array_equal(part.rows(np.array([4, 0, 2])), x[rows[[4, 0, 2]]][:, cols])
        np.testing.assert_array_equal(np.concatenate(list(part.chunks(chunk_size=2))),
                                      x[rows][:, cols])


def test_a_view_of_a_backed_anndata_is_read_from_its_file(small):
    """A view of a backed AnnData (e.g. cells kept by a QC filter) is read row by row from the
    file, as the whole file is (its X would load every selected row into memory), and gives
    what the same cells in memory give: in training, embedding and translation."""
    d, root = small
    backed = {k: ad.read_h5ad(root / f"{k}.h5ad", backed="r") for k in d}
    keep = np.r_[200:240, 5, 3, 100:150][::-1]  # any order
    views = {k: b[keep] for k, b in backed.items()}
    in_memory = {k: a[keep].copy() for k, a in d.items()}
    model = _fit(views, max_epochs=1)
    assert all(md.source.on_disk and md.source.part for md in model.mods.values())
    reference = _fit(in_memory, max_epochs=1)
    for p, q in zip(model.module.parameters(), reference.module.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    z = model.get_latent_representation("rna", backed["rna"][keep])
    np.testing.assert_array_equal(z, model.get_latent_representation("rna", in_memory["rna"]))
    t = model.translate(backed["rna"][keep], source="rna", target="atac")
    np.testing.assert_array_equal(
        t.X, model.translate(in_memory["rna"], source="rna", target="atac").X)
    # the view's features: fewer than the model's are named, as for cells in memory
    with pytest.raises(ValueError, match="features of the given data do not match"):
        model.get_latent_representation("rna", backed["rna"][keep, backed["rna"].var_names[:10]])


def test_outputs_stream_to_h5ad_and_equal_memory(small, tmp_path):
    d, root = small
    model = _fit(_inputs("csr", d, root), max_epochs=1)
    backed = ad.read_h5ad(root / "rna.h5ad", backed="r")
    mem = model.translate(backed, source="rna", target="atac", batch_size=50)
    out = tmp_path / "sub" / "atac_from_rna.h5ad"
    res = model.translate(backed, source="rna", target="atac", batch_size=50, out=out)
    assert res.isbacked and res.shape == mem.shape
    disk = ad.read_h5ad(out)
    np.testing.assert_array_equal(disk.X, mem.X)
    pd.testing.assert_frame_equal(disk.obs, mem.obs)
    pd.testing.assert_index_equal(disk.var_names, mem.var_names)
    assert dict(disk.uns["transmodal"]) == mem.uns["transmodal"]

    z = model.get_latent_representation("atac", batch_size=70)
    lat = model.get_latent_representation("atac", batch_size=70, out=tmp_path / "z.h5ad")
    np.testing.assert_array_equal(np.asarray(lat.X[:]), z)
    assert list(lat.var_names) == [f"latent{i}" for i in range(4)]
    assert list(lat.obs_names) == list(d["atac"].obs_names)

    # an existing file is kept unless overwrite=True
    with pytest.raises(FileExistsError, match="overwrite"):
        model.get_latent_representation("atac", out=tmp_path / "z.h5ad")
    model.get_latent_representation("rna", out=tmp_path / "z.h5ad", overwrite=True)
    assert ad.read_h5ad(tmp_path / "z.h5ad").obs_names[0] == d["rna"].obs_names[0]
    # never onto the file being read, never under another format's name
    with pytest.raises(ValueError, match="is the file the cells are read from"):
        model.translate(backed, source="rna", target="atac", out=root / "rna.h5ad", overwrite=True)
    lazy = tm.datasets.read_backed(root / "rna.h5ad")  # not "isbacked", yet read from the file
    with pytest.raises(ValueError, match="is the file the cells are read from"):
        model.get_latent_representation("rna", lazy, out=root / "rna.h5ad", overwrite=True)
    with pytest.raises(ValueError, match=r"out must be an \.h5ad file path"):
        model.get_latent_representation("rna", out=tmp_path / "z.zarr")
    assert ad.read_h5ad(root / "rna.h5ad").n_obs == backed.n_obs and not (tmp_path / "z.zarr").exists()


def test_failed_output_leaves_no_file(small, tmp_path, monkeypatch):
    d, root = small
    model = _fit(_inputs("csr", d, root), max_epochs=1)
    src = model.mods["rna"].source
    calls = {"n": 0}
    rows = src.rows

    def failing(idx):  # the third batch cannot be read
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("read error")
        return rows(idx)

    monkeypatch.setattr(src, "rows", failing)
    with pytest.raises(OSError, match="read error"):
        model.translate(source="rna", target="atac", batch_size=50, out=tmp_path / "t.h5ad")
    calls["n"] = 0
    with pytest.raises(OSError, match="read error"):
        model.get_latent_representation("rna", batch_size=50, out=tmp_path / "z.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_image_target_streams_obsm(tmp_path):
    rng = np.random.default_rng(0)
    img = ad.AnnData(np.zeros((40, 1), np.float32))
    img.obsm["crops"] = rng.uniform(size=(40, 1, 8, 8)).astype(np.float32)
    feat = ad.AnnData(rng.normal(size=(40, 5)).astype(np.float32))
    img.obs_names = feat.obs_names = [f"n{i}" for i in range(40)]
    model = tm.CrossModalAE(
        {"img": img, "feat": feat},
        {"img": tm.Modality("gaussian", obsm_key="crops", hidden=(4, 8)),
         "feat": tm.Modality("gaussian")},
        n_latent=3, seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=1, progress_bar=False)
    mem = model.translate(source="feat", target="img", batch_size=16)
    model.translate(source="feat", target="img", batch_size=16, out=tmp_path / "img.h5ad")
    disk = ad.read_h5ad(tmp_path / "img.h5ad")
    np.testing.assert_array_equal(disk.obsm["crops"], mem.obsm["crops"])
    np.testing.assert_array_equal(disk.X, mem.X)


def test_prefetcher_keeps_order_and_raises():
    assert list(Prefetcher(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad read")

    it = Prefetcher(broken())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad read"):
        next(it)
    endless = Prefetcher(iter(range(10**9)), depth=2)
    assert next(endless) == 0
    endless.close()
    assert not any(t.name == "transmodal-prefetch" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize("where", ["reader", "step"])
def test_an_error_in_training_from_files_leaves_no_reader_thread(small, where):
    """However training ends, the reader thread stops (it would keep the files open) and
    the model keeps the weights it had before the call: also when the error is raised by
    a training step while the reader waits on a full queue (only closing stops it then)."""
    d, root = small
    data = _inputs("backed", d, root)
    model = tm.CrossModalAE(data, {k: tm.Modality(v) for k, v in SPECS.items()}, n_latent=4,
                            hidden=(16,), seed=0, geometric_pairs=False)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    owner, name = (model.mods["atac"].source, "rows") if where == "reader" else (
        model.module, "reconstruction"
    )
    original, calls = getattr(owner, name), [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:
            raise OSError("simulated error")
        return original(*args, **kwargs)

    setattr(owner, name, failing)
    with pytest.raises(OSError, match="simulated error"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=5, batch_size=16, progress_bar=False)
    assert not any(t.name == "transmodal-prefetch" and t.is_alive() for t in threading.enumerate())
    setattr(owner, name, original)
    for key, value in model.module.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not model.is_trained_ and model.history is None


def test_prefetching_does_not_change_training(small, monkeypatch):
    from functools import partial

    import transmodal.train as train_mod  # CrossModalAE.train imports run_training from it
    from transmodal.train._trainer import run_training

    d, _ = small
    ref = _fit(d)
    # prefetch in-memory data too
    monkeypatch.setattr(train_mod, "run_training", partial(run_training, prefetch=3))
    pre = _fit(d)
    monkeypatch.undo()
    for key, value in pre.module.state_dict().items():
        assert torch.equal(value, ref.module.state_dict()[key]), key


def _same(a: ad.AnnData, b: ad.AnnData) -> None:
    for x, y in [(a.X, b.X)] + [(a.layers[k], b.layers[k]) for k in a.layers]:
        if sp.issparse(x):
            assert sp.issparse(y)
            for attr in ("data", "indices", "indptr"):
                np.testing.assert_array_equal(getattr(x, attr), getattr(y, attr))
        else:
            np.testing.assert_array_equal(x, y)
    assert list(a.layers) == list(b.layers)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    np.testing.assert_array_equal(a.obsm["X_true"], b.obsm["X_true"])
    ua, ub = a.uns["synthetic"], b.uns["synthetic"]
    assert set(ua) == set(ub)
    for k in ua:
        va, vb = ua[k], ub[k]
        if isinstance(va, dict):
            assert dict(va) == dict(vb), k
        else:
            np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))


def test_synthetic_writes_h5ad_blockwise_equal_to_memory(tmp_path):
    kw = {
        "modalities": {"rna": "nb", "atac": "bernoulli", "prot": "gaussian"},
        "n_features": {"rna": 40, "atac": 60, "prot": 5},
        "paired": 0.5,
        "shape": "trajectory",
        "seed": 3,
    }
    mem = tm.datasets.synthetic(2300, block_size=700, **kw)
    files = tm.datasets.synthetic(2300, block_size=900, out=tmp_path, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atac.h5ad", "prot.h5ad", "rna.h5ad"]
    for k, a in mem.items():
        _same(a, ad.read_h5ad(tmp_path / f"{k}.h5ad"))
        f = files[k]  # matrices and layers stay on disk
        assert not isinstance(f.X, (np.ndarray, sp.spmatrix))
        np.testing.assert_array_equal(
            MatrixSource(f.X, name=k, where="X").rows(np.arange(2300)),
            a.X.toarray() if sp.issparse(a.X) else a.X,
        )
    assert not isinstance(files["rna"].layers["counts"], sp.spmatrix)
    with pytest.raises(FileExistsError):
        tm.datasets.synthetic(2300, out=tmp_path, **kw)
    with pytest.raises(ValueError, match="return_mudata"):
        tm.datasets.synthetic(100, out=tmp_path / "m", return_mudata=True)


def test_read_backed_refuses_a_mudata_file(tmp_path):
    import mudata

    d = tm.datasets.synthetic(20, n_features={"rna": 5, "atac": 6}, seed=0)
    mudata.MuData(d).write(tmp_path / "m.h5mu")
    with pytest.raises(ValueError, match=r"holds a MuData .*read_h5mu"):
        tm.datasets.read_backed(tmp_path / "m.h5mu")


def test_read_backed_keeps_annotations_and_names_what_it_leaves_out(tmp_path):
    """obsp / varm / varp are read; .raw is left out with a warning; an old-layout file is
    refused with an error naming it (it failed inside anndata) and left closed."""
    import h5py

    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(1.0, (50, 20)).astype(np.float32))
    a = ad.AnnData(X=np.log1p(counts.toarray()))
    a.raw = ad.AnnData(X=counts)
    a.obsp["connectivities"] = sp.identity(50, format="csr")
    a.varm["PCs"] = rng.normal(size=(20, 3))
    path = tmp_path / "with_raw.h5ad"
    a.write_h5ad(path)
    with pytest.warns(UserWarning, match=r"with_raw.h5ad: its .raw .* is not read"):
        b = read_backed(path)
    assert list(b.obsp) == ["connectivities"] and b.varm["PCs"].shape == (20, 3)
    np.testing.assert_array_equal(b.X[:], a.X)
    old = tmp_path / "old.h5ad"
    ad.AnnData(X=np.ones((3, 2), dtype=np.float32)).write_h5ad(old)
    with h5py.File(old, "r+") as f:  # obs as a plain dataset, as anndata < 0.7 stored it
        del f["obs"]
        f.create_dataset("obs", data=np.array([(b"c0",), (b"c1",), (b"c2",)],
                                              dtype=[("index", "S2")]))
    with pytest.raises(ValueError, match=r"old.h5ad: obs is stored in the layout of anndata < 0.7"):
        read_backed(old)
    with h5py.File(old, "r+"):  # not left open by the failed read
        pass


def test_inference_blocks_of_wide_data_hold_at_most_chunk_values(tmp_path):
    """Embedding reads, and translation computes, blocks of at most CHUNK_VALUES numbers:
    a 1,024-cell batch of 20,000 peaks is cut to 838 rows (it was read whole), in memory and
    written to a file, by a model and an ensemble; the results do not depend on it."""
    from transmodal.data._source import CHUNK_VALUES

    rng = np.random.default_rng(0)
    n, wide = 900, 20_000
    peaks = ad.AnnData(sp.random(n, wide, density=0.002, format="csr", dtype=np.float32,
                                 random_state=0, data_rvs=lambda k: np.ones(k)))
    genes = ad.AnnData(rng.poisson(2.0, (n, 30)).astype(np.float32))
    for a in (peaks, genes):
        a.obs_names = [f"c{i}" for i in range(n)]
    model = tm.CrossModalAE({"rna": genes, "atac": peaks},
                            {"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli")},
                            n_latent=4, hidden=(8,), seed=0, geometric_pairs=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=1, batch_size=256, progress_bar=False)
    ens = tm.Ensemble([model, copy.deepcopy(model)])  # (a second member sharing the cells)
    rows = CHUNK_VALUES // wide
    seen = []
    encode, translate = model.module.encode, model.module.translate

    def encoding(m, x, *args, **kw):
        seen.append(("encode", m, len(x)))
        return encode(m, x, *args, **kw)

    def translating(x, source, target, *args, **kw):
        seen.append(("translate", source, len(x)))
        return translate(x, source, target, *args, **kw)

    model.module.encode, model.module.translate = encoding, translating
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (modalities told apart)
        z = model.get_latent_representation("atac", batch_size=1024)
        assert [r for what, m, r in seen] == [rows, n - rows]
        seen.clear()
        t = model.translate(source="rna", target="atac", batch_size=1024)
        assert [r for what, m, r in seen] == [rows, n - rows]
        whole = model.get_latent_representation("rna", batch_size=2048)  # narrow: one block
        assert seen[-1] == ("encode", "rna", n)
        seen.clear()
        written = model.translate(source="rna", target="atac", out=tmp_path / "t.h5ad")
        assert [r for what, m, r in seen] == [rows, n - rows]
        assert np.array_equal(written.X[:], t.X)  # (the same blocks: the same values)
        written.file.close()
        seen.clear()
        got = ens.get_latent_representation("atac", out=tmp_path / "z.h5ad")
        assert max(r for what, m, r in seen) <= rows
        np.testing.assert_allclose(got.X[:], ens.get_latent_representation("atac"), rtol=1e-6)
        got.file.close()
    assert z.shape == (n, 4) and whole.shape == (n, 4)
    np.testing.assert_allclose(z, np.concatenate([
        model.get_latent_representation("atac", peaks[:500]),
        model.get_latent_representation("atac", peaks[500:]),
    ]), rtol=1e-5, atol=1e-6)


def test_deepcopy_shares_the_cells_and_pickling_backed_cells_points_to_save(small):
    """copy.deepcopy(model) (a snapshot before training further) has its own networks and
    history but shares the cells, also from backed files (h5py objects cannot be copied);
    pickling a model whose cells are read from a file names it and points to save()."""
    import pickle

    d, root = small
    for data in (d, _inputs("backed", d, root)):
        model = _fit(data, max_epochs=1)
        snapshot = copy.deepcopy(model)
        assert snapshot.mods["rna"].adata is model.mods["rna"].adata
        assert snapshot.module is not model.module and snapshot.mods is not model.mods
        before = model.get_latent_representation("rna")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            snapshot.train(max_epochs=1, batch_size=64, progress_bar=False)
        assert len(snapshot.history) == 2 and len(model.history) == 1
        np.testing.assert_array_equal(model.get_latent_representation("rna"), before)
        assert not np.allclose(snapshot.get_latent_representation("rna"), before)
    with pytest.raises(TypeError, match=r"modality 'rna' is read from a file \(.*rna.h5ad\); "
                       r"save the model with model.save\(path\)"):
        pickle.dumps(model)
    shallow = copy.copy(model)  # (the same networks)
    assert shallow.module is model.module and shallow.mods is model.mods
    # a backed AnnData whose modality reads obsm (held in memory): refused to pickle too,
    # and an obsm entry set again is read anew, as in memory
    backed = {"rna": d["rna"], "atac": _inputs("backed", d, root)["atac"]}
    backed["atac"].obsm["pcs"] = np.asarray(d["atac"].X[:, :6].toarray())
    model = tm.CrossModalAE(backed, {"rna": tm.Modality("nb"), "atac": tm.Modality(
        "gaussian", obsm_key="pcs")}, n_latent=4, hidden=(16,), seed=0)
    with pytest.raises(TypeError, match=r"modality 'atac' is read from a file"):
        pickle.dumps(model)
    backed["atac"].obsm["pcs"] = backed["atac"].obsm["pcs"] + 1.0
    with pytest.warns(UserWarning, match=r"obsm\['pcs'\] was replaced"):
        model.get_latent_representation("atac")
    assert model.mods["atac"].source.matrix is backed["atac"].obsm["pcs"]
