"""Plotting: no backend switch when saving, ensemble histories, many-class colours,
tiny/2-D latents, mixed-type LDA labels, and figures closed on every error path."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

import transmodal as tm  # noqa: E402
from transmodal.analysis import DEComparison  # noqa: E402
from transmodal.data._setup import label_str  # noqa: E402
from transmodal.plotting._embedding import _palette  # noqa: E402


@pytest.fixture(autouse=True)
def _close_new_figures():
    """Close the pyplot figures a test leaves open (and only those)."""
    before = set(plt.get_fignums())
    yield
    for num in set(plt.get_fignums()) - before:
        plt.close(num)


def _blobs(n_classes: int, n_per: int = 4, dims: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per)
    centres = rng.normal(0.0, 5.0, size=(n_classes, dims))
    return centres[labels] + rng.normal(size=(len(labels), dims)), labels


def _history(seed: int = 0, epochs: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    loss = 3.0 - np.arange(epochs) * 0.5 + rng.uniform(0, 0.1, epochs)
    return pd.DataFrame(
        {"train_loss": loss, "val_loss": loss + 0.3, "train_recon": loss / 2},
        index=pd.Index(np.arange(epochs), name="epoch"),
    )


def _legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


# ----------------------------------------------------------------- 1. backend untouched
def test_saving_leaves_backend_and_pyplot_figures_alone(tmp_path):
    z, labels = _blobs(3)
    crops = np.random.default_rng(0).uniform(size=(4, 1, 8, 8))
    before_backend = matplotlib.get_backend()
    plt.switch_backend("svg")  # any backend but Agg shows a switch
    try:
        user_fig = plt.figure()  # the user's open figure stays open and current
        backend, nums = matplotlib.get_backend(), plt.get_fignums()
        assert tm.pl.latent({"rna": z}, {"rna": labels}, path=tmp_path / "lat.png") is None
        assert tm.pl.history(_history(), path=tmp_path / "h.pdf") is None
        assert tm.pl.gallery({"real": crops}, n=3, path=tmp_path / "g.svg") is None
        assert matplotlib.get_backend() == backend
        assert plt.get_fignums() == nums and plt.gcf() is user_fig
        assert (tmp_path / "lat.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "h.pdf").read_bytes()[:4] == b"%PDF"
        assert b"<svg" in (tmp_path / "g.svg").read_bytes()[:500]

        # without path: a pyplot figure, returned with show=False
        fig = tm.pl.latent({"rna": z}, show=False)
        assert fig.number in plt.get_fignums() and matplotlib.get_backend() == backend
    finally:
        plt.switch_backend(before_backend)


def test_figures_are_shown_as_scanpy_shows_them(tmp_path, monkeypatch):
    """Without path a figure is shown (pyplot.show) and None returned, as scanpy's plots do:
    a figure returned at the end of a notebook cell is displayed twice; show=False returns
    it; show=True with path writes it and shows it."""
    z, labels = _blobs(3)
    crops = np.random.default_rng(0).uniform(size=(4, 1, 8, 8))
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    data = {"rna": ad.AnnData(obsm={"X_transmodal": z})}
    calls = {
        "latent": lambda **k: tm.pl.latent({"rna": z}, {"rna": labels}, **k),
        "embedding": lambda **k: tm.pl.embedding(data, **k),
        "history": lambda **k: tm.pl.history(_history(), **k),
        "gallery": lambda **k: tm.pl.gallery({"real": crops}, n=3, **k),
    }
    for name, call in calls.items():
        shown.clear()
        assert call() is None and len(shown) == 1, name
        assert shown[0].axes, name  # the drawn figure was the current one when shown
        fig = call(show=False)
        assert fig is not None and shown == [shown[0]], name
        assert call(path=tmp_path / f"{name}.png") is None and len(shown) == 1, name
        open_before = plt.get_fignums()
        assert call(path=tmp_path / f"{name}2.png", show=True) is None and len(shown) == 2, name
        assert plt.get_fignums() == open_before, name  # written and shown: closed
        assert (tmp_path / f"{name}2.png").read_bytes()[:4] == b"\x89PNG", name
        with pytest.raises(TypeError, match="show must be True, False or None"):
            call(show="no")


def test_failed_save_leaves_no_pyplot_figure(tmp_path, monkeypatch):
    z, _ = _blobs(3)
    nums = plt.get_fignums()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        tm.pl.latent({"rna": z}, path=tmp_path / "lat.png")
    assert plt.get_fignums() == nums and not list(tmp_path.iterdir())


# ----------------------------------------------------------------- 2. ensemble history
def test_history_of_an_ensemble_draws_one_line_per_seed(paired_data, make_model, train, tmp_path):
    members = []
    for seed in (0, 1):
        model = make_model(paired_data, labels_key="label", seed=seed)
        members.append(train(model, max_epochs=2))
    ensemble = tm.Ensemble(members)
    # the ensemble's history (the CLI writes it as history.csv): indexed by (seed, epoch)
    hist = ensemble.history
    assert isinstance(hist.index, pd.MultiIndex) and list(hist.index.names) == ["seed", "epoch"]
    pd.testing.assert_frame_equal(hist.loc[1], members[1].history)
    for h in (hist, {0: members[0].history, 1: members[1].history}):
        fig = tm.pl.history(h, show=False)
        first = fig.axes[0]
        texts = _legend_texts(first)
        assert "seed 0 train" in texts and "seed 1 train" in texts
        n_train = sum(1 for line in first.get_lines() if line.get_label().endswith(" train"))
        assert n_train == 2  # one training line per seed
        for line in first.get_lines():  # each seed's line holds that seed's epochs
            assert len(line.get_xdata()) == len(members[0].history)
        plt.close(fig)
    assert tm.pl.history(hist, path=tmp_path / "ens.png") is None
    assert (tmp_path / "ens.png").stat().st_size > 1000


def test_history_runs_from_a_built_multiindex_and_bad_levels():
    h = pd.concat({3: _history(0), 7: _history(1, epochs=2)}, names=["seed"])
    fig = tm.pl.history(h, show=False)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]  # term "loss"
    assert labels == ["seed 3 train", "seed 3 val", "seed 7 train", "seed 7 val"]
    lines = fig.axes[0].get_lines()
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert [len(line.get_xdata()) for line in lines] == [3, 3, 2, 2]
    # one model's history still draws train/val without seed labels
    single = tm.pl.history(_history(), show=False)
    assert _legend_texts(single.axes[0]) == ["train", "val"]
    deep = pd.concat({"a": h}, names=["run"])
    nums = plt.get_fignums()
    with pytest.raises(ValueError, match=r"index levels \['run', 'seed', 'epoch'\]"):
        tm.pl.history(deep)
    assert plt.get_fignums() == nums


# ----------------------------------------------------------------- 3. many classes
def test_latent_gives_distinct_colours_to_many_classes():
    z, labels = _blobs(25)
    fig = tm.pl.latent({"rna": z}, {"rna": labels}, show=False)
    label_ax = fig.axes[1]
    handles = label_ax.get_legend().legend_handles
    assert len(handles) == 25
    legend_colours = {tuple(np.round(h.get_facecolor()[0], 6)) for h in handles}
    assert len(legend_colours) == 25
    cells = label_ax.collections[0].get_facecolors()
    assert len({tuple(c) for c in np.round(cells, 6)}) == 25
    # numbers sort by value in the legend
    assert _legend_texts(label_ax)[:3] == ["0", "1", "2"] and _legend_texts(label_ax)[-1] == "24"


@pytest.mark.parametrize("n", [1, 10, 15, 25, 256, 300])
def test_palette_colours_are_distinct(n):
    colours = _palette(n)
    assert len(colours) == n
    assert len({tuple(np.round(to_rgba(c), 8)) for c in colours}) == n


def test_lda_gives_distinct_colours_to_many_classes():
    z, labels = _blobs(25, n_per=6, dims=6)
    ax = tm.pl.lda(z, labels)
    handles = ax.get_legend().legend_handles
    assert len({tuple(np.round(h.get_facecolor()[0], 6)) for h in handles}) == 25


# ----------------------------------------------------------------- 4. tiny and 2-D latents
def test_latent_single_cell_is_refused_clearly(tmp_path):
    nums = plt.get_fignums()
    with pytest.raises(ValueError, match="needs at least 2 cells, got 1"):
        tm.pl.latent({"rna": np.zeros((1, 4))})
    with pytest.raises(ValueError, match="needs at least 2 cells"):
        tm.pl.latent({"rna": np.zeros((1, 2))}, {"rna": ["a"]}, path=tmp_path / "one.png")
    assert plt.get_fignums() == nums and not list(tmp_path.iterdir())
    # two cells, one per modality, are enough
    fig = tm.pl.latent({"rna": np.zeros((1, 4)), "atac": np.ones((1, 4))}, show=False)
    assert len(fig.axes) == 1


def test_latent_axis_labels_say_whether_pca_was_applied():
    z, labels = _blobs(3)
    fig2 = tm.pl.latent({"rna": z[:, :2]}, {"rna": labels}, show=False)
    for ax in fig2.axes:
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("latent 1", "latent 2")
    # a 2-D latent is drawn as it is
    np.testing.assert_allclose(
        np.sort(fig2.axes[0].collections[0].get_offsets()[:, 0]), np.sort(z[:, 0])
    )
    fig4 = tm.pl.latent({"rna": z}, show=False)
    axis_labels = (fig4.axes[0].get_xlabel(), fig4.axes[0].get_ylabel())
    assert axis_labels == ("PC1 of latent", "PC2 of latent")


# ----------------------------------------------------------------- 5. mixed labels in LDA
def test_lda_mixed_label_types_are_one_class_per_name():
    z, _ = _blobs(2, n_per=15, dims=4)
    mixed = np.array([1, "1", 1.0] * 5 + [2, "2", 2.0] * 5, dtype=object)
    ax = tm.pl.lda(z, mixed)
    assert _legend_texts(ax) == sorted({label_str(v) for v in mixed}) == ["1", "2"]
    # the prompt's example: [1, "1", 2] is two clusters (one discriminant), not three
    z3, _ = _blobs(3, n_per=10, dims=4)
    labels = np.array([1, "1", 2] * 10, dtype=object)
    ax = tm.pl.lda(z3, labels)
    assert _legend_texts(ax) == ["1", "2"] and ax.get_ylabel() != "LD2"
    # numbers sort by value, as the models sort classes
    z12, _ = _blobs(3, n_per=8, dims=4)
    ax = tm.pl.lda(z12, np.array([10, 2, "1"] * 8, dtype=object))
    assert _legend_texts(ax) == ["1", "2", "10"]


def test_lda_refuses_missing_and_single_class_labels():
    z, _ = _blobs(2, n_per=10)
    nums = plt.get_fignums()
    with pytest.raises(ValueError, match=r"clusters: 1 cell\(s\) have no label \(e.g. ''\)"):
        tm.pl.lda(z, np.array(["a"] * 10 + ["b"] * 9 + [""], dtype=object))
    with pytest.raises(ValueError, match=r"at least 2 clusters, got \['1'\]"):
        tm.pl.lda(z, np.array([1, "1", 1.0] * 6 + [1, 1], dtype=object))
    with pytest.raises(ValueError, match="the same latent coordinates"):  # a collapsed model
        tm.pl.lda(np.ones_like(z), np.array(["a", "b"] * 10))
    assert plt.get_fignums() == nums


# ----------------------------------------------------------------- 6. figures closed on errors
def _nan_comparison() -> DEComparison:
    cols = ["n_pred", "n_obs", "n_overlap", "expected", "jaccard", "pval"]
    overlap = pd.DataFrame(np.nan, index=["up", "down"], columns=cols)
    return DEComparison(n_common=0, pearson=np.nan, spearman=np.nan, overlap=overlap, markers={})


def test_marker_overlap_all_nan_raises_without_leaking_a_figure():
    nums = plt.get_fignums()
    with pytest.raises(ValueError, match="no finite marker count"):
        tm.pl.marker_overlap(_nan_comparison())
    assert plt.get_fignums() == nums
    bad = _nan_comparison()
    bad.overlap = bad.overlap.drop(columns="pval")
    with pytest.raises(ValueError, match=r"no row or column \['pval'\]"):
        tm.pl.marker_overlap(bad)
    assert plt.get_fignums() == nums


def test_errors_while_drawing_close_the_new_figure_only():
    from transmodal.analysis import ROCResult

    class Broken(ROCResult):
        curves = {"a": None}  # no fpr/tpr: fails while drawing
        positive = None
        auc = 0.5

    broken = Broken.__new__(Broken)
    nums = plt.get_fignums()
    with pytest.raises(AttributeError):
        tm.pl.roc(broken)
    assert plt.get_fignums() == nums
    # a figure the caller passed in is theirs: it stays open
    fig, ax = plt.subplots()
    with pytest.raises(AttributeError):
        tm.pl.roc(broken, ax=ax)
    assert fig.number in plt.get_fignums()
    # partly NaN counts still draw
    comparison = _nan_comparison()
    comparison.overlap.loc["up", ["n_pred", "n_obs", "n_overlap", "expected"]] = [5, 4, 2, 1.0]
    assert tm.pl.marker_overlap(comparison) is not None


def test_gallery_refuses_channels_last_crops_and_a_list_of_rows():
    crops = np.random.default_rng(0).random((4, 32, 32, 3))
    with pytest.raises(ValueError, match="look channels-last"):
        tm.pl.gallery({"real": crops})
    with pytest.raises(ValueError, match="rows must be a mapping"):
        tm.pl.gallery([np.moveaxis(crops, -1, 1)])


def test_gallery_takes_anndata_rows_and_3d_masks():

    rng = np.random.default_rng(0)
    crops = np.zeros((3, 1, 5, 8, 8))
    masks = np.zeros((3, 5, 8, 8), bool)
    masks[:, 2, 2:6, 2:6] = True  # only the middle slice holds the nucleus
    crops[:, 0][masks] = 1.0
    fig = tm.pl.gallery({"crop": ad.AnnData(obsm={"crops": crops}), "mask": masks}, show=False)
    shown = [ax.get_images()[0].get_array() for ax in fig.axes[:6]]
    np.testing.assert_array_equal(shown[0], crops[0, 0, 2])  # middle slice of the crop
    np.testing.assert_array_equal(shown[3], masks[0, 2])  # ... and of the mask under it
    # a translation's AnnData: its one obsm entry of images
    other = ad.AnnData(obsm={"img": rng.random((3, 1, 8, 8)), "X_pca": rng.random((3, 2))})
    assert tm.pl.gallery({"translated": other}, show=False) is not None
    with pytest.raises(ValueError, match=r"row 'none': an AnnData without obsm\['crops'\] and "
                       r"with no image entries"):
        tm.pl.gallery({"none": ad.AnnData(obsm={"X_pca": rng.random((3, 2))})})
    # AnnData rows of the same cells in another order would show other nuclei side by side
    real = ad.AnnData(obsm={"crops": crops})
    real.obs_names = ["n0", "n1", "n2"]
    with pytest.raises(ValueError, match=r"rows\['real'\] and rows\['translated'\] hold the "
                       r"same cells in another order \('n0' is row 0 of rows\['real'\] and row 2"):
        tm.pl.gallery({"real": real, "translated": real[::-1].copy()})
    assert tm.pl.gallery({"real": real, "translated": real.copy()}, show=False) is not None


def test_embedding_plots_the_stored_latent_of_every_modality(tmp_path):
    import warnings

    import anndata as ad
    import mudata as md

    z, labels = _blobs(10)  # 10 classes: tab10, whether or not cells lack a label
    rng = np.random.default_rng(1)
    data = {}
    for name, n in (("rna", len(z)), ("atac", 20)):
        a = ad.AnnData(np.zeros((n, 1), np.float32))
        a.obsm["X_transmodal"] = z if name == "rna" else rng.normal(size=(n, z.shape[1]))
        data[name] = a
    data["rna"].obs["cell_type"] = labels
    fig = tm.pl.embedding(data, color="cell_type", show=False)
    assert len(fig.axes) == 2 and fig.axes[1].get_legend().get_title().get_text() == "cell_type"
    # the unlabelled modality is drawn light grey, listed last, and the classes keep the
    # colours they have without it; the points are both modalities'
    assert _legend_texts(fig.axes[1])[-1] == "(no label)"
    handles = fig.axes[1].get_legend().legend_handles
    np.testing.assert_allclose(handles[-1].get_facecolor()[0], (0.85, 0.85, 0.85, 1.0))
    alone = tm.pl.latent({"rna": z}, {"rna": labels}, show=False).axes[1]
    alone = alone.get_legend().legend_handles
    for a, b in zip(alone, handles[:-1]):
        np.testing.assert_allclose(a.get_facecolor()[0], b.get_facecolor()[0])
    assert len(fig.axes[0].collections[0].get_offsets()) == len(z) + 20
    assert fig.axes[0].get_xlabel() == "PC1 of latent"
    for a in data.values():  # another basis names the axes
        a.obsm["X_umap"] = a.obsm["X_transmodal"][:, :2]
    assert tm.pl.embedding(data, basis="X_umap", show=False).axes[0].get_xlabel() == "umap 1"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mudata's notes on obs_names
        mdata = md.MuData(data)
    assert tm.pl.embedding(mdata, path=tmp_path / "e.png") is None and (tmp_path / "e.png").is_file()
    with pytest.raises(TypeError, match="for one AnnData use scanpy.pl.embedding"):
        tm.pl.embedding(data["rna"])
    with pytest.raises(ValueError, match=r"modality 'rna': obsm\['X_tsne'\] not found"):
        tm.pl.embedding(data, basis="X_tsne")
    with pytest.raises(ValueError, match="color 'batch': not an obs column of any modality"):
        tm.pl.embedding(data, color="batch")
    mdata.obs["celltype"] = "a"  # only in the MuData's global obs: the hint says so
    with pytest.raises(ValueError, match=r"global \.obs holds 'celltype'.*push_obs"):
        tm.pl.embedding(mdata, color="celltype")


def test_embedding_takes_scanpy_basis_names_stored_colours_and_muon_colour_names():
    """scanpy / muon conventions: basis="umap" finds obsm["X_umap"]; a categorical column's
    colours stored by scanpy (uns["<key>_colors"]) are used, or those given as palette=;
    "<modality>:<column>" colours that modality's cells by its own column."""
    import matplotlib.colors as mcolors

    rng = np.random.default_rng(0)
    data = {}
    for name in ("rna", "atac"):
        a = ad.AnnData(obs=pd.DataFrame(index=[f"{name}{i}" for i in range(30)]))
        a.obsm["X_cmae"] = rng.normal(size=(30, 3))
        a.obs["group"] = pd.Categorical(["b", "a", "c"] * 10, categories=["a", "b", "c"])
        data[name] = a
    data["rna"].uns["group_colors"] = ["#ff0000", "#00ff00", "#0000ff"]  # a, b, c

    def colours(fig):
        handles = fig.axes[1].get_legend().legend_handles
        return {t.get_text(): mcolors.to_hex(h.get_facecolor()[0])
                for t, h in zip(fig.axes[1].get_legend().get_texts(), handles)}

    fig = tm.pl.embedding(data, basis="cmae", color="group", show=False)
    assert fig.axes[0].get_xlabel() == "PC1 of cmae"
    assert colours(fig) == {"a": "#ff0000", "b": "#00ff00", "c": "#0000ff"}
    given = tm.pl.embedding(data, basis="cmae", color="group", palette={"b": "black"},
                            show=False)
    # (a palette given replaces the stored one: the other classes keep the defaults)
    assert colours(given) == {"a": mcolors.to_hex("tab:blue"), "b": "#000000",
                              "c": mcolors.to_hex("tab:green")}
    data["rna"].uns["group_colors"] = ["#ff0000"]  # stale (other categories): not used
    assert colours(tm.pl.embedding(data, basis="cmae", color="group", show=False))["a"] \
        == mcolors.to_hex("tab:blue")
    data["atac"].obs["peaks_only"] = "x"  # muon's modality-prefixed column name
    data["rna"].obs["peaks_only"] = "y"  # (not read: the prefix names atac's)
    fig = tm.pl.embedding(data, basis="cmae", color="atac:peaks_only", show=False)
    assert list(colours(fig)) == ["x", "(no label)"]
    with pytest.raises(ValueError, match=r"palette\['b'\]: 'nocolour' is not a colour"):
        tm.pl.embedding(data, basis="cmae", color="group", palette={"b": "nocolour"})
    with pytest.raises(ValueError, match=r"palette: 1 colour\(s\) for 3 classes"):
        tm.pl.embedding(data, basis="cmae", color="group", palette=["red"])


def _fits(fig, artist) -> bool:
    fig.canvas.draw()
    box, frame = artist.get_window_extent(), fig.bbox
    return box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1 and box.y0 >= frame.y0 - 1 \
        and box.y1 <= frame.y1 + 1


def test_probe_findings_many_classes_measurements_single_epochs_and_clipped_tiles():
    """A legend of 30 classes stays in the figure; a numeric column with many values gets
    a colour bar; a one-epoch history is drawn; tiles outside the colour range are warned
    about; LDA's legend fits a plain savefig; wrong results are named."""
    from anndata import AnnData

    rng = np.random.default_rng(0)
    data = {}
    for name in ("rna", "atac"):
        a = AnnData(obs=pd.DataFrame(index=[f"{name}{i}" for i in range(120)]))
        a.obsm["X_transmodal"] = rng.normal(size=(120, 4))
        a.obs["cell_type"] = pd.Categorical([f"ct{i % 30}" for i in range(120)])
        a.obs["depth"] = rng.gamma(2.0, 100.0, size=120)
        data[name] = a
    data["atac"].obs.loc[data["atac"].obs_names[:5], "depth"] = np.nan
    fig = tm.pl.embedding(data, color="cell_type", show=False)
    legend = fig.axes[1].get_legend()
    assert len(legend.get_texts()) == 30 and _fits(fig, legend)
    fig = tm.pl.embedding(data, color="depth", show=False)
    assert fig.axes[1].get_legend() is None and len(fig.axes) == 3  # + the colour bar
    assert "grey: no value" in fig.axes[2].get_ylabel()
    one = _history(epochs=1)
    fig = tm.pl.history(one, show=False)
    assert all(line.get_marker() == "." for ax in fig.axes for line in ax.get_lines())
    with pytest.warns(UserWarning, match=r"rows\['real'\]: \d+% of the drawn pixels lie outside"):
        tm.pl.gallery({"real": (rng.random((3, 1, 8, 8)) * 255).astype(np.uint8)})
    with warnings.catch_warnings():  # a decoder's noise around 0: not clipped visibly
        warnings.simplefilter("error")
        tm.pl.gallery({"decoded": rng.normal(0.0, 0.02, (3, 1, 8, 8))})
    with pytest.raises(ValueError, match=r"labels\['rna'\]: continuous=True needs numbers"):
        tm.pl.latent({"rna": rng.normal(size=(5, 2))}, {"rna": np.array(list("abcde"))},
                     continuous=True)
    z = {k: rng.normal(size=(90, 4)) for k in ("rna", "atac")}
    lab = {k: np.array(["B cell", "T cell", "monocyte"])[np.arange(90) % 3] for k in z}
    ax = tm.pl.lda(z, lab)
    assert _fits(ax.figure, ax.get_legend())
    with pytest.raises(TypeError, match="result: expected the ROCResult"):
        tm.pl.roc(None)
    with pytest.raises(TypeError, match=r"result: expected the ClusterRobustness of "
                       r"transmodal.analysis.cluster_robustness, got DataFrame"):
        tm.pl.coassociation(pd.DataFrame())
    pred = pd.DataFrame({"log2fc": [1.0, 2.0, np.nan]}, index=["a", "a", "b"])
    with pytest.raises(ValueError, match="pred: feature names are not unique"):
        tm.pl.de_scatter(pred, pred.iloc[[0, 2]])
    pred.index = ["a", "c", "b"]
    ax = tm.pl.de_scatter(pred, pred)
    assert ax.get_title().endswith("(2 features, 1 NaN left out)")
    # markers of both results in opposite directions are not drawn as shared ones
    idx = [f"g{i}" for i in range(4)]
    pred = pd.DataFrame({"log2fc": [3.0, 2.5, 0.1, 0.0], "marker": [True, True, False, False],
                         "direction": ["up", "up", "none", "none"]}, index=idx)
    obs = pd.DataFrame({"log2fc": [-3.0, 2.0, 0.0, 0.1], "marker": [True, True, False, False],
                        "direction": ["down", "up", "none", "none"]}, index=idx)
    for p, o in ((pred, obs), (pred.drop(columns="direction"), obs)):  # (or by sign)
        ax = tm.pl.de_scatter(p, o)
        drawn = {c.get_label(): [tuple(xy) for xy in c.get_offsets()] for c in ax.collections}
        assert drawn["marker: both"] == [(2.0, 2.5)]
        assert drawn["marker: both, opposite directions"] == [(-3.0, 3.0)]


def test_gallery_shows_a_chosen_channel_or_three_as_colours():
    """RGB patches (H&E) are drawn in colour with channel=(0, 1, 2) (they were drawn grey,
    their red channel only), another channel of multiplexed patches with channel=k; a bad
    choice is refused by name before drawing."""
    x = np.zeros((4, 3, 16, 16), np.float32)
    x[:, 0, :8] = 1.0
    x[:, 1, 8:] = 1.0
    x[:, 2, :, :8] = 0.5
    fig = tm.pl.gallery({"real": x}, channel=(0, 1, 2), show=False)
    tile = fig.axes[0].images[0].get_array()
    assert tile.shape == (16, 16, 3)
    np.testing.assert_allclose(tile[0, 0], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(tile[12, 12], [0.0, 1.0, 0.0])
    plt.close(fig)
    fig = tm.pl.gallery({"real": x}, channel=1, show=False)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), x[0, 1])
    plt.close(fig)
    for bad, said in (((0, 1), "three of them"), ((0, 1, 5), r"channel=\(0, 1, 5\) is out of "
                      r"range for its 3 channel"), (True, "three of them")):
        with pytest.raises(ValueError, match=said):
            tm.pl.gallery({"real": x}, channel=bad, show=False)
