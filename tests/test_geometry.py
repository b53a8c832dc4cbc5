"""Shape-based alignment: landmark Isomap, Wasserstein-Procrustes, geometric pseudo-pairs."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

import transmodal as tm
from transmodal.geometry import (
    geometric_pairs,
    knn_graph,
    landmark_isomap,
    transport_pairs,
    wasserstein_procrustes,
)
from transmodal.geometry._pairs import _reduce


def _clusters(rng, n, centres, sizes):
    lab = rng.choice(len(centres), n, p=np.asarray(sizes) / np.sum(sizes))
    return centres[lab] + rng.normal(scale=0.3, size=(n, centres.shape[1])), lab


def test_landmark_isomap_unrolls_a_curve():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 3 * np.pi, 600))
    helix = np.c_[np.cos(t), np.sin(t), 0.3 * t] + rng.normal(scale=0.01, size=(600, 3))
    emb, w = landmark_isomap(helix, n_components=2, n_neighbors=8, n_landmarks=50)
    assert emb.shape == (600, 2)
    assert w[0] > 5 * w[1]  # geodesically a line: one dominant axis
    assert abs(spearmanr(emb[:, 0], t)[0]) > 0.99  # ordered by arc length, not by 3-D position
    np.testing.assert_allclose(emb.mean(0), 0, atol=1e-9)
    assert np.isclose(np.sqrt((emb**2).sum(1).mean()), 1.0)


def test_landmark_isomap_checks_sizes():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="n_neighbors"):
        landmark_isomap(x, n_neighbors=10)
    with pytest.raises(ValueError, match="n_components"):
        landmark_isomap(x, n_components=5, n_neighbors=3, n_landmarks=4)


def test_wasserstein_procrustes_recovers_flips_without_pairs():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 3)) * [3.0, 1.5, 0.5] + [[0.0, 0.0, 0.0]]
    a[:, 0] += np.where(a[:, 1] > 0, 1.5, 0.0)  # asymmetric, so the orientation is unique
    a -= a.mean(0)
    flip = np.diag([1.0, -1.0, -1.0])
    b = (a @ flip)[rng.permutation(400)] + rng.normal(scale=0.01, size=(400, 3))
    q, cost = wasserstein_procrustes(a, b, n_search=200, n_refine=400)
    np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-8)
    np.testing.assert_allclose(q, flip, atol=0.05)
    assert cost < 0.01
    with pytest.raises(ValueError, match="same number of columns"):
        wasserstein_procrustes(a, b[:, :2])


def _two_modalities(seed):
    """Four clusters of unequal sizes seen through two unrelated maps (600 / 500 cells):
    ``(a, labels_a, b, labels_b)``."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 3.0], [7.0, 7.0]])
    sizes = [0.4, 0.3, 0.2, 0.1]
    za, la = _clusters(rng, 600, centres, sizes)
    zb, lb = _clusters(rng, 500, centres, sizes)
    a = za @ rng.normal(size=(2, 40)) + rng.normal(scale=0.2, size=(600, 40))
    b = np.tanh(zb @ rng.normal(size=(2, 25)) / 4) + rng.normal(scale=0.02, size=(500, 25))
    return a, la, b, lb


def test_geometric_pairs_match_clusters_across_unrelated_features():
    a, la, b, lb = _two_modalities(seed=2)
    m = geometric_pairs(a, b, n_components=3, n_landmarks=100)
    assert m.embedding_a.shape == (600, 3) and m.embedding_b.shape == (500, 3)
    assert len(m.rows_a) == len(m.rows_b) == 1100  # each cell of both with its partner
    assert (la[m.rows_a] == lb[m.rows_b]).mean() > 0.9


def test_transport_pairs_match_clusters_on_landmarks():
    a, la, b, lb = _two_modalities(seed=3)
    ra, rb = transport_pairs(a, b, n_landmarks=400, seed=0)
    assert len(ra) == len(rb) == 800  # 400 landmarks of each modality with a partner
    assert len(np.unique(ra[:400])) == 400 and len(np.unique(rb[400:])) == 400
    assert (la[ra] == lb[rb]).mean() > 0.9
    with pytest.raises(ValueError, match="n_landmarks"):
        transport_pairs(a, b, n_landmarks=1)


def test_transport_pairs_on_few_cells_and_input_checks():
    """30 cells or fewer: fewer neighbours (the default of 30 needs more); errors name a / b."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 6)), rng.normal(size=(12, 4))
    ra, rb = transport_pairs(a, b)
    assert len(ra) == len(rb) == 22 and ra.max() < 10 and rb.max() < 12
    ra2, _ = transport_pairs(a.tolist(), b, n_landmarks=np.int64(8))  # list, numpy integer
    assert len(ra2) == 8 + 8
    ra3, rb3 = transport_pairs(sp.csr_matrix(a), b)  # sparse input is densified
    np.testing.assert_array_equal(ra3, ra)
    np.testing.assert_array_equal(rb3, rb)
    with pytest.raises(ValueError, match="b needs at least 2"):
        transport_pairs(a, b[:1])
    with pytest.raises(ValueError, match="b contains NaN"):
        transport_pairs(a, np.where(b > 1, np.nan, b))
    with pytest.raises(ValueError, match="a has 10 cells.*n_neighbors=10"):
        transport_pairs(a, b, n_neighbors=10)
    with pytest.raises(ValueError, match="max_iter"):
        transport_pairs(a, b, max_iter=0)


def test_geometric_inputs_are_checked_up_front():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(30, 4))
    with pytest.raises(ValueError, match="b has 10 cells.*n_neighbors=15"):
        geometric_pairs(a, b[:10])
    for bad, match in [(a[:0], "a needs at least 1"), (a[:1], "a has 1 cells"),
                       (a[:, 0], "a must be a 2-D"),
                       (np.where(a > 1, np.nan, a), "a contains NaN")]:
        with pytest.raises(ValueError, match=match):
            geometric_pairs(bad, b)
    for kw in ({"n_neighbors": 0}, {"n_pca": 0}, {"n_components": 0},
               {"n_components": 11}, {"n_landmarks": 5}, {"seed": None}, {"seed": -1}):
        with pytest.raises(ValueError, match=list(kw)[0]):
            geometric_pairs(a, b, **kw)
    with pytest.raises(ValueError, match="n_neighbors"):
        landmark_isomap(a, n_neighbors=0)
    with pytest.raises(ValueError, match="a contains NaN"):
        wasserstein_procrustes(np.full((5, 3), np.nan), b[:5, :3])
    m = geometric_pairs(a, b, n_neighbors=5, n_landmarks=np.int64(20))
    assert len(m.rows_a) == 70
    for seed in (None, -1, 1.0):  # a seed must be reproducible
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            landmark_isomap(a, n_neighbors=5, n_landmarks=20, seed=seed)
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            wasserstein_procrustes(a[:, :2], b[:, :2], seed=seed)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        transport_pairs(a, b, seed=None)


def test_geometric_pairs_accept_sparse_matrices_and_anndata():
    """Sparse input (also an AnnData's sparse X) is densified: same pairs as dense."""
    import anndata as ad

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(30, 4))
    kw = dict(n_neighbors=5, n_landmarks=20)
    dense = geometric_pairs(a, b, **kw)
    for sa, sb in [(sp.csr_matrix(a), sp.csc_matrix(b)),
                   (ad.AnnData(sp.csr_matrix(a)), ad.AnnData(sp.csr_matrix(b)))]:
        m = geometric_pairs(sa, sb, **kw)
        np.testing.assert_array_equal(m.rows_a, dense.rows_a)
        np.testing.assert_array_equal(m.rows_b, dense.rows_b)
    ra, rb = transport_pairs(a, b)
    ta, tb = transport_pairs(ad.AnnData(sp.csr_matrix(a)), ad.AnnData(sp.csr_matrix(b)))
    np.testing.assert_array_equal(ta, ra)
    np.testing.assert_array_equal(tb, rb)
    bad = sp.csr_matrix(np.where(a > 1, np.nan, a))
    with pytest.raises(ValueError, match="a contains NaN"):
        geometric_pairs(bad, b, **kw)


def _four_clusters(seed=0):
    """Two pairs of nearby clusters, the pairs far apart: the symmetric 5-NN graph has 4
    components, each nearest to its partner only (two mutually nearest pairs)."""
    rng = np.random.default_rng(seed)
    c = np.array([[0, 0, 0], [3, 3, 3], [100, 100, 100], [103, 103, 103]], float)
    return np.concatenate([ci + 0.3 * rng.normal(size=(40, 3)) for ci in c])


def test_knn_graph_is_connected_when_clusters_pair_up():
    from scipy.sparse.csgraph import connected_components, dijkstra

    x = _four_clusters()
    g = knn_graph(x, 5)
    assert connected_components(g, directed=False)[0] == 1
    assert (g != g.T).nnz == 0
    # the bridge between the pairs keeps their distance (~170 in units of the k-NN edge)
    hops = dijkstra(g, indices=[0], directed=False)[0]
    assert np.isfinite(hops).all() and hops[80:].min() > 10 * hops[:80].max()
    # pairs of pairs of clusters: three rounds of bridging
    rng = np.random.default_rng(1)
    c8 = np.array([0, 3, 100, 103, 1e4, 1e4 + 3, 1e4 + 100, 1e4 + 103])[:, None] * [1, 1, 1]
    x8 = np.concatenate([ci + 0.3 * rng.normal(size=(20, 3)) for ci in c8])
    g8 = knn_graph(x8, 5)
    assert connected_components(g8, directed=False)[0] == 1
    assert (g8.data > 1).sum() == 2 * 7  # 8 clusters, 7 bridges (one pair of cells each)
    # many components (1-NN pairs of points on a line, spaced so that each pair is apart)
    t = np.repeat(np.arange(50.0) * 10, 2) + np.tile([0.0, 1.0], 50)
    x_line = np.c_[t, np.zeros_like(t)]
    assert connected_components(knn_graph(x_line, 1), directed=False)[0] == 1
    emb, w = landmark_isomap(x, n_components=2, n_neighbors=5, n_landmarks=50)
    assert np.isfinite(emb).all() and np.isfinite(w).all()
    assert abs(spearmanr(emb[:, 0], x[:, 0])[0]) > 0.8  # the far pairs lie apart on axis 0
    m = geometric_pairs(x, x[::-1].copy(), n_components=2, n_neighbors=5, n_landmarks=50)
    assert np.isfinite(m.embedding_a).all() and np.isfinite(m.cost)


def test_knn_graph_checks_inputs():
    x = [[0.0, 1.0], [1.0, 2.0], [3.0, 4.0]]
    g = knn_graph(x, np.int64(1))  # a list, a numpy integer
    assert g.shape == (3, 3) and g.nnz == 4
    # duplicated cells: no cell is its own neighbour (the copy may come first), and the
    # edges are sklearn's symmetrised k-NN graph
    from sklearn.neighbors import kneighbors_graph

    rng = np.random.default_rng(0)
    xd = rng.normal(size=(100, 5))
    xd = np.vstack([xd, xd[:50]])
    g = knn_graph(xd, 3)
    assert (g.diagonal() == 0).all()
    ref = kneighbors_graph(xd, 3, include_self=False)
    assert ((g != 0) != (ref.maximum(ref.T) != 0)).nnz == 0
    with pytest.raises(ValueError, match="x contains NaN"):
        knn_graph(np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), 1)
    with pytest.raises(ValueError, match="x must be a 2-D"):
        knn_graph(np.arange(5.0), 1)
    for k in (0, 1.5, None):
        with pytest.raises(ValueError, match="n_neighbors must be an integer >= 1"):
            knn_graph(x, k)
    with pytest.raises(ValueError, match="need more than n_neighbors = 3 cells"):
        knn_graph(x, 3)


def test_landmark_isomap_refuses_infinite_geodesics(monkeypatch):
    import transmodal.geometry._isomap as isomap

    def cut(x, n_neighbors):  # a disconnected graph, as knn_graph never returns
        n = len(x)
        return sp.csr_matrix((np.ones(n - 2), (np.arange(n - 2), np.arange(1, n - 1))),
                             shape=(n, n))

    monkeypatch.setattr(isomap, "_knn_graph", cut)
    with pytest.raises(ValueError, match="non-finite geodesic distances"):
        landmark_isomap(np.random.default_rng(0).normal(size=(30, 2)), n_components=2,
                        n_neighbors=3, n_landmarks=10)


@pytest.mark.parametrize("n_landmarks", [5, 20, 100])
def test_landmark_isomap_zeroes_axes_without_positive_eigenvalue(n_landmarks):
    """A straight line asked for 4 axes: one positive eigenvalue (for n_landmarks=100 the
    hop distances bend it a little); the other axes are zero instead of blown-up noise,
    and the line stays on axis 0."""
    s = np.arange(100.0)[:, None]
    with pytest.warns(UserWarning, match="of n_components=4 landmark MDS eigenvalues"):
        e, w = landmark_isomap(s, n_components=4, n_neighbors=2, n_landmarks=n_landmarks)
    assert np.isfinite(e).all() and (w >= 0).all() and (np.diff(w) <= 0).all()
    var = e.var(0)
    assert (np.diff(var) <= 1e-12).all()  # decreasing variance
    assert var[0] > 0.99 and abs(np.corrcoef(e[:, 0], s[:, 0])[0, 1]) > 0.999
    assert w[3] == 0 and not e[:, 3].any()
    if n_landmarks < 100:
        assert (w[1:] == 0).all() and not e[:, 1:].any()


def _unpaired(seed=0, n=300):
    d = tm.datasets.synthetic(n, modalities={"a": "gaussian", "b": "gaussian"},
                              n_features={"a": 30, "b": 20}, paired=False, seed=seed)
    return d["a"], d["b"]


def test_model_uses_geometric_pairs_only_without_prior_knowledge(tmp_path):
    a, b = _unpaired()
    mods = {"a": tm.Modality("gaussian"), "b": tm.Modality("gaussian")}
    model = tm.CrossModalAE({"a": a, "b": b}, mods, n_latent=4, hidden=(16,))
    ia, ib = model.geometric_pairs_["a|b"]
    assert len(ia) == len(ib) > 0
    assert not model.val_masks_["a"][ia].any() and not model.val_masks_["b"][ib].any()
    model.train(max_epochs=2, progress_bar=False)
    assert "train_anchor" in model.history_.columns
    model.save(tmp_path / "m")
    loaded = tm.CrossModalAE.load(tmp_path / "m", {"a": a, "b": b})
    np.testing.assert_array_equal(loaded.geometric_pairs_["a|b"][1], ib)
    # other cells: the row indices mean nothing there, so the pairs go, with a warning
    with pytest.warns(UserWarning, match="shape-based pseudo-pairs are dropped"):
        other = tm.CrossModalAE.load(tmp_path / "m", {"a": a[:200].copy(), "b": b})
    assert other.geometric_pairs_ == {}

    labelled = tm.CrossModalAE({"a": a, "b": b}, mods, n_latent=4, hidden=(16,),
                               labels_key="label")
    assert labelled.geometric_pairs_ == {}
    # labels on one modality only tie nothing to the other: the pseudo-pairs stay on
    one_side = b.copy()
    del one_side.obs["label"]
    half = tm.CrossModalAE({"a": a, "b": one_side}, mods, n_latent=4, hidden=(16,),
                           labels_key="label")
    assert "a|b" in half.geometric_pairs_
    disjoint = one_side.copy()  # labels on both, but no class in common: no tie either
    disjoint.obs["label"] = "B_" + b.obs["label"].astype(str)
    apart = tm.CrossModalAE({"a": a, "b": disjoint}, mods, n_latent=4, hidden=(16,),
                            labels_key="label")
    assert "a|b" in apart.geometric_pairs_
    # one class for every cell (a constant column, e.g. cell_line): warned of, ties nothing
    constant = {k: v.copy() for k, v in (("a", a), ("b", b))}
    for v in constant.values():
        v.obs["cell_line"] = "A549"
    with pytest.warns(UserWarning, match=r"labels_key 'cell_line': every labelled cell is of "
                      r"one class \('A549'\)"):
        single = tm.CrossModalAE(constant, mods, n_latent=4, hidden=(16,), labels_key="cell_line")
    assert "a|b" in single.geometric_pairs_
    # on by default but impossible (every cell alone in its batch): a warning, no pairs
    lonely = b.copy()
    lonely.obs["cell"] = lonely.obs_names.to_numpy()
    bmods = {"a": mods["a"], "b": tm.Modality("gaussian", batch_key="cell")}
    with pytest.warns(UserWarning, match="pseudo-pairs, on by default here, cannot be computed "
                      r"\(modality 'b': .* the only cell of their batch"):
        alone = tm.CrossModalAE({"a": a, "b": lonely}, bmods, n_latent=4, hidden=(16,))
    assert alone.geometric_pairs_ == {}
    with pytest.raises(ValueError, match="the only cell of their batch"):
        tm.CrossModalAE({"a": a, "b": lonely}, bmods, n_latent=4, hidden=(16,),
                        geometric_pairs=True)
    forced = tm.CrossModalAE({"a": a, "b": b}, mods, n_latent=4, hidden=(16,),
                             labels_key="label", geometric_pairs=True)
    assert "a|b" in forced.geometric_pairs_
    off = tm.CrossModalAE({"a": a, "b": b}, mods, n_latent=4, hidden=(16,), geometric_pairs=False)
    assert off.geometric_pairs_ == {}
    with pytest.raises(ValueError, match="geometric_pairs"):
        tm.CrossModalAE({"a": a, "b": b}, mods, geometric_pairs="yes")
    with pytest.raises(ValueError, match="geometric_pairs"):  # 0 == False, but not off
        tm.CrossModalAE({"a": a, "b": b}, mods, geometric_pairs=0)


def test_model_combines_overlay_and_transport_pairs():
    a, b = _unpaired()
    mods = {"a": tm.Modality("gaussian"), "b": tm.Modality("gaussian")}
    kw = dict(n_latent=4, hidden=(16,))
    models = {m: tm.CrossModalAE({"a": a, "b": b}, mods, geometric_pairs=m, **kw)
              for m in ("overlay", "transport", "overlay+transport")}
    n = {m: len(model.geometric_pairs_["a|b"][0]) for m, model in models.items()}
    n_train = sum(int((~m).sum()) for m in models["overlay"].val_masks_.values())
    assert n["overlay"] == n_train  # every training cell of both modalities
    assert n["overlay+transport"] == n["overlay"] + n["transport"] > n["overlay"]


def test_model_with_anchor_pairs_skips_geometry():
    d = tm.datasets.synthetic(300, modalities={"a": "gaussian", "b": "gaussian"}, seed=0)
    mods = {"a": tm.Modality("gaussian"), "b": tm.Modality("gaussian")}
    model = tm.CrossModalAE(d, mods, n_latent=4, hidden=(16,), anchor_fraction=0.2)
    assert model.anchors_ and model.geometric_pairs_ == {}


def test_failed_transport_falls_back_to_the_overlay(monkeypatch):
    import transmodal.model._priors as model_module

    def fail(*args, **kwargs):
        raise RuntimeError("entropic Gromov-Wasserstein failed numerically")

    monkeypatch.setattr(model_module, "transport_pairs", fail)
    a, b = _unpaired()
    mods = {"a": tm.Modality("gaussian"), "b": tm.Modality("gaussian")}
    with pytest.warns(UserWarning, match="between 'a' and 'b': landmark transport failed .* overlay"):
        model = tm.CrossModalAE({"a": a, "b": b}, mods, n_latent=4, hidden=(16,))
    assert len(model.geometric_pairs_["a|b"][0]) == sum(int((~m).sum()) for m in model.val_masks_.values())
    with pytest.raises(ValueError, match="geometric_pairs between 'a' and 'b'"):
        tm.CrossModalAE({"a": a, "b": b}, mods, n_latent=4, hidden=(16,), geometric_pairs="transport")


def test_knn_graph_bridges_duplicated_cells_in_units_of_real_edges():
    """Duplicated cells make most k-NN edges 0 long; the bridge unit is the median non-zero
    edge (it was floored at 1e-12, so a bridge of 100 became ~1e14 hops)."""
    line = np.repeat(np.arange(10.0), 5)  # each point 5 times, neighbours 1 apart
    x = np.c_[np.r_[line, line + 100.0], np.zeros(2 * line.size)]
    g = knn_graph(x, 6)
    bridges = g.data[g.data > 1]
    assert len(bridges) == 2 and np.allclose(bridges, 91.0)  # 100 - 9, in unit edges
    same = np.zeros((40, 2))
    same[20:] = 5.0  # two clusters of identical cells: no non-zero edge, unit 1
    assert np.allclose(knn_graph(same, 3).data.max(), 5 * np.sqrt(2))


def test_slow_construction_steps_show_a_running_clock(capsys):
    """The pseudo-pairs' stages are drawn once they take a while, the clock redrawn within
    a long stage; a quick step prints nothing."""
    import time

    from transmodal.model._priors import _stage_bar

    with _stage_bar(2, "shape-based pseudo-pairs", delay=0.05, every=0.05) as bar:
        time.sleep(0.4)  # one long stage
        bar.update(2)
    err = capsys.readouterr().err
    assert "transmodal: shape-based pseudo-pairs" in err and err.count("0/2") >= 2
    with _stage_bar(2, "quick", delay=5.0) as bar:
        bar.update(2)
    assert "quick" not in capsys.readouterr().err


def test_workflows_with_progress_bar_off_draw_no_construction_bar(capsys):
    """progress_bar=False of the workflows that build and train in one call also silences
    the construction's slow-step bars (in this thread only, until the context ends)."""
    import threading
    import time

    from transmodal.model._priors import _stage_bar, construction_bars

    def slow_stage() -> None:
        with _stage_bar(1, "pseudo", delay=0.01, every=0.01) as bar:
            time.sleep(0.1)
            bar.update(1)

    with construction_bars(False):
        slow_stage()
        assert "pseudo" not in capsys.readouterr().err
        other = threading.Thread(target=slow_stage)  # another thread: its own setting
        other.start()
        other.join()
        assert "pseudo" in capsys.readouterr().err
    slow_stage()
    assert "pseudo" in capsys.readouterr().err


def test_wasserstein_procrustes_recovers_a_non_symmetric_rotation():
    """A rotation that is not its own transpose (a sign flip is): Q, not Q.T."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 3)) * [3.0, 1.5, 0.5]
    a[:, 0] += np.where(a[:, 1] > 0, 1.5, 0.0)
    a -= a.mean(0)
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    b = (a @ rot)[rng.permutation(400)] + rng.normal(scale=0.01, size=(400, 3))
    q, cost = wasserstein_procrustes(a, b, n_search=200, n_refine=400)
    np.testing.assert_allclose(q, rot, atol=0.05)
    assert cost < 0.01


def test_procrustes_refinement_stops_once_the_plan_repeats(monkeypatch):
    """_refine ends when a transport plan repeats the last, with the rotation and cost that
    all n_iter alternations give (from then on each would repeat the last)."""
    import ot

    from transmodal.geometry import _procrustes

    rng = np.random.default_rng(2)
    a = rng.normal(size=(150, 3)) * [3.0, 1.5, 0.5]
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    b = (a @ rot)[rng.permutation(150)] + rng.normal(scale=0.05, size=(150, 3))
    w = np.full(150, 1 / 150)
    q_all = np.eye(3)
    for _ in range(30):  # every alternation, no early end
        plan = ot.emd(w, w, ot.dist(a @ q_all, b))
        u, _, vt = np.linalg.svd(a.T @ plan @ b)
        q_all = u @ vt
    cost_all = ot.dist(a @ q_all, b)
    cost_all = float((ot.emd(w, w, cost_all) * cost_all).sum())
    calls = []
    emd = ot.emd
    monkeypatch.setattr(ot, "emd", lambda *args, **kw: calls.append(1) or emd(*args, **kw))
    q, cost = _procrustes._refine(a, b, np.eye(3), 30)
    assert len(calls) < 31  # (30 alternations and the final cost's plan without the end)
    np.testing.assert_array_equal(q, q_all)
    assert cost == cost_all


def test_geometric_pairs_returns_the_aligned_embeddings():
    """The embeddings returned are the ones matched (the first rotated onto the second):
    their exact transport cost is the cost reported, and the pairs share labels."""
    import ot

    a, la, b, lb = _two_modalities(seed=3)
    m = geometric_pairs(a, b, n_components=3, n_landmarks=100)
    ea, eb = m.embedding_a, m.embedding_b
    wa, wb = np.full(len(ea), 1 / len(ea)), np.full(len(eb), 1 / len(eb))
    cost = ot.dist(ea, eb)
    assert float((ot.emd(wa, wb, cost) * cost).sum()) == pytest.approx(m.cost, rel=1e-6)
    assert (la[m.rows_a] == lb[m.rows_b]).mean() > 0.8


# ------------------------------------- details found unguarded by mutation testing
def test_knn_graph_bridges_are_at_least_one_hop():
    # pairs of cells 0.1 apart (k=1 components); the gap 0.1 -> 0.6 is a sixth of the
    # median edge (3): the bridge still counts as one hop ("at least 1", docstring)
    x = np.array([0, 0.1, 0.6, 0.7, 10, 13, 20, 23, 30, 33.0])[:, None]
    g = knn_graph(x, 1)
    assert g[1, 2] == pytest.approx(1.0)
    assert g.data.min() >= 1.0


def test_knn_graph_bridge_takes_the_closest_pair_seen_from_either_side():
    # k=1 components A = rows 0-1, B = rows 2-3, C = rows 4-5. From A's side the nearest
    # outside cell in B is b1 for a1 (1.64); row a2 looks at C. From B's side b1's nearest
    # outside cell is a2 (1.3): "the closest such pair" is (a2, b1), not (a1, b1).
    x = np.array([[0, 0], [0, 1], [1.3, 1], [2.3, 1], [0, 2.2], [0, 3.2]])
    g = knn_graph(x, 1)
    assert g[1, 2] == pytest.approx(1.3)
    assert g[0, 2] == 0  # no second A-B bridge
    assert g[1, 4] == pytest.approx(1.2)


def test_landmark_isomap_caps_landmarks_at_the_number_of_cells():
    # n_landmarks is "capped at the number of cells": asking for more gives the same
    # embedding as asking for exactly n (geometric_pairs' default 300 on small data)
    x = np.random.default_rng(0).normal(size=(40, 3))
    e_big, w_big = landmark_isomap(x, n_components=2, n_neighbors=5, n_landmarks=300)
    e_n, w_n = landmark_isomap(x, n_components=2, n_neighbors=5, n_landmarks=40)
    np.testing.assert_allclose(w_big, w_n)
    np.testing.assert_allclose(e_big, e_n, atol=1e-10)


def test_geometric_pairs_seed_reaches_the_landmarks():
    # seed is documented as the "seed of landmarks": b's (unrotated) embedding is the
    # landmark Isomap of its reduced features under that seed
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(120, 4)), rng.normal(size=(100, 3))
    for seed in (0, 3):
        m = geometric_pairs(a, b, n_pca=30, n_landmarks=20, seed=seed)
        e, _ = landmark_isomap(_reduce(b, 30, seed), n_components=5, n_neighbors=15,
                               n_landmarks=20, seed=seed)
        np.testing.assert_allclose(m.embedding_b, e)


def test_geometric_pairs_names_the_modality_with_exactly_n_neighbors_cells():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"a has 15 cells; geometric_pairs needs more than "
                                         r"n_neighbors=15"):
        geometric_pairs(rng.normal(size=(15, 4)), rng.normal(size=(40, 4)), n_neighbors=15)
