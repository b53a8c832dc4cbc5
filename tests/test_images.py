"""transmodal.images: nuclei from image files, radial chromatin profiles, profile clustering."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import skimage.io
import tifffile

import transmodal as tm
from transmodal.datasets import data_dir
from transmodal.images._radial import radial_profiles, segment_crops

# ----------------------------------------------------------------------------- helpers


def _ball(shape, centre, radius):
    """Boolean disc / ball and the normalised radius r / radius of every pixel."""
    grid = np.indices(shape, dtype=float)
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre))) / radius
    return r <= 1, r


def _write(path, array):
    if path.suffix == ".png":
        skimage.io.imsave(path, array, check_contrast=False)
    else:
        tifffile.imwrite(path, array)
    return path


def _scene_2d():
    """80 x 96 image: a normal nucleus (1), a tiny one (2), one on the border (3), a large one (4)."""
    shape = (80, 96)
    labels = np.zeros(shape, np.uint16)
    image = np.full(shape, 5, np.uint8)  # dim background
    for lab, centre, radius in [(1, (20, 20), 6), (2, (60, 10), 2), (3, (40, 1), 5), (4, (50, 60), 12)]:
        disc, r = _ball(shape, centre, radius)
        labels[disc] = lab
        image[disc] = np.round(200 - 150 * r[disc]).astype(np.uint8)  # bright centre
    return image, labels


def _analytic(ndim, c0, c1, power, n_bins=10):
    """Bin means of c0 + c1 * (r/R)**power over equal area (volume) fractions F = (r/R)**ndim."""
    e = np.linspace(0, 1, n_bins + 1)
    a, b, q = e[:-1], e[1:], power / ndim + 1
    means = c0 + c1 * (b**q - a**q) / (q * (b - a))
    return means / means.max()


DSB = data_dir() / "nuclei_dsb2018_fluo"
TCELL = data_dir() / "tcell_chromatin_radial" / "tcell_radial_chromatin.h5ad"


# ------------------------------------------------------------------------- read_nuclei


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_read_2d_filters_crops_and_morphology(tmp_path, suffix):
    image, labels = _scene_2d()
    pair = (_write(tmp_path / f"cells{suffix}", image), _write(tmp_path / f"cells_mask{suffix}", labels))
    nuclei = tm.images.read_nuclei([pair], crop_size=16, min_area=20)

    assert list(nuclei.obs["label"]) == [1, 4]  # 2 too small, 3 on the border
    assert list(nuclei.obs_names) == ["cells_1", "cells_4"]
    assert (nuclei.obs["image_id"] == "cells").all()
    filt = nuclei.uns["nuclei_filter"]
    assert (
        filt["n_images"],
        filt["n_nuclei"],
        filt["n_dropped_small"],
        filt["n_dropped_border"],
        filt["n_kept"],
    ) == (1, 4, 1, 1, 2)

    crops, masks = nuclei.obsm["crops"], nuclei.obsm["masks"]
    assert crops.shape == (2, 1, 16, 16) and crops.dtype == np.float32 and masks.shape == (2, 16, 16)
    assert crops.min() == 0 and np.allclose(crops.max(axis=(1, 2, 3)), 1)
    assert np.all(crops[:, 0][~masks] == 0)  # masked to the nucleus
    for m in masks:  # centred
        centre = np.argwhere(m).mean(0)
        np.testing.assert_allclose(centre, [7.5, 7.5], atol=1.0)

    # morphology in original units; the large nucleus (25 px box) was downscaled to the crop
    obs = nuclei.obs.set_index("label")
    disc = labels == 1
    assert obs.loc[1, "area"] == disc.sum()
    np.testing.assert_allclose(obs.loc[1, ["centroid_y", "centroid_x"]].to_numpy(float), [20, 20])
    np.testing.assert_allclose(obs.loc[1, "mean_intensity"], image[disc].mean())
    np.testing.assert_allclose(obs.loc[1, "integrated_intensity"], image[disc].sum())
    assert obs.loc[1, "eccentricity"] < 0.1 and 0.9 < obs.loc[1, "solidity"] <= 1
    assert obs.loc[1, "crop_scale"] == 1
    np.testing.assert_allclose(obs.loc[4, "crop_scale"], 16 / 25)
    assert nuclei.uns["crops"]["shape"] == [16, 16] and nuclei.uns["crops"]["normalize"] == "max"

    # the filter rule is configurable
    everything = tm.images.read_nuclei([pair], crop_size=16, min_area=0, exclude_border=False)
    assert everything.n_obs == 4 and everything.uns["nuclei_filter"]["n_dropped_border"] == 0


def test_normalize_minmax_and_h5ad_roundtrip(tmp_path):
    image, labels = _scene_2d()
    pair = (_write(tmp_path / "a.png", image), _write(tmp_path / "a_mask.png", labels))
    nuclei = tm.images.read_nuclei([pair], crop_size=32, normalize="minmax")
    inside = nuclei.obsm["crops"][:, 0][nuclei.obsm["masks"]]
    assert inside.min() == 0 and inside.max() == 1
    nuclei.write_h5ad(tmp_path / "n.h5ad")
    back = ad.read_h5ad(tmp_path / "n.h5ad")
    np.testing.assert_array_equal(back.obsm["crops"], nuclei.obsm["crops"])
    assert back.uns["nuclei_filter"]["n_kept"] == nuclei.n_obs


@pytest.mark.parametrize("rule", ["minmax", "max"])
def test_a_constant_channel_is_one_if_positive_else_zero(rule):
    """A channel of one intensity throughout the nucleus becomes 1 where it is positive and
    0 where it is 0 or negative (an empty stain channel stays dark, not a bright nucleus);
    outside the mask everything is 0."""
    from transmodal.images._crops import normalize_nucleus

    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    region = np.stack([np.zeros((4, 4)), np.full((4, 4), 7.0), np.full((4, 4), -1.0)])
    out = normalize_nucleus(region, mask, rule)
    np.testing.assert_array_equal(out[:, mask], [[0] * 4, [1] * 4, [0] * 4])
    assert not out[:, ~mask].any()


def test_read_3d_tiff_with_channels(tmp_path):
    shape = (14, 40, 40)
    labels = np.zeros(shape, np.uint16)
    for lab, centre in [(1, (7, 12, 12)), (2, (7, 27, 26))]:
        labels[_ball(shape, centre, 5)[0]] = lab
    dna = np.where(labels > 0, 100.0, 1.0)
    other = np.where(labels == 2, 50.0, 0.0)
    stack = np.stack([dna, other], axis=-1).astype(np.uint16)  # (Z, Y, X, C)
    pair = (_write(tmp_path / "stack.tif", stack), _write(tmp_path / "stack_labels.tif", labels))

    nuclei = tm.images.read_nuclei([pair], crop_size=(12, 16, 16))
    assert nuclei.obsm["crops"].shape == (2, 2, 12, 16, 16)
    assert nuclei.obsm["masks"].shape == (2, 12, 16, 16)
    assert "volume" in nuclei.obs and "eccentricity" not in nuclei.obs
    assert list(nuclei.obs.columns[2:5]) == ["centroid_z", "centroid_y", "centroid_x"]
    np.testing.assert_allclose(nuclei.obs["mean_intensity_ch0"], 100)
    np.testing.assert_allclose(nuclei.obs["mean_intensity_ch1"], [0, 50])
    np.testing.assert_array_equal(nuclei.obs["volume"], [(labels == 1).sum(), (labels == 2).sum()])

    # a channel subset, and the channel axis given explicitly (ImageJ's Z, C, Y, X order)
    zcyx = _write(tmp_path / "zcyx.tif", np.moveaxis(stack, -1, 1))
    one = tm.images.read_nuclei([(zcyx, pair[1])], crop_size=16, channels=[1], channel_axis=1)
    assert one.obsm["crops"].shape == (2, 1, 16, 16, 16) and "mean_intensity" in one.obs
    np.testing.assert_allclose(one.obs["mean_intensity"], [0, 50])
    swapped = tm.images.read_nuclei([pair], crop_size=(12, 16, 16), channels=[1, 0])
    np.testing.assert_allclose(swapped.obs["mean_intensity_ch1"], [0, 50])  # named by file channel
    np.testing.assert_array_equal(swapped.obsm["crops"][:, 0], nuclei.obsm["crops"][:, 1])
    assert swapped.uns["crops"]["channels"] == [1, 0]


def test_folder_layouts(tmp_path):
    image, labels = _scene_2d()
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for name in ("b", "a"):
        _write(tmp_path / "images" / f"{name}.png", image)
        _write(tmp_path / "labels" / f"{name}.tif", labels)
    nuclei = tm.images.read_nuclei(tmp_path, crop_size=16)
    assert list(nuclei.obs["image_id"].cat.categories) == ["a", "b"] and nuclei.n_obs == 4
    same = tm.images.read_nuclei(tmp_path / "images", tmp_path / "labels", crop_size=16)
    pd.testing.assert_frame_equal(same.obs, nuclei.obs)
    lists = tm.images.read_nuclei(
        [tmp_path / "images" / "a.png"], [tmp_path / "labels" / "a.tif"], crop_size=16
    )
    assert lists.n_obs == 2


def test_read_errors_name_the_problem(tmp_path):
    image, labels = _scene_2d()
    img = _write(tmp_path / "img.png", image)
    good = _write(tmp_path / "good.png", labels)
    cases = [
        (_write(tmp_path / "small.png", labels[:40]), r"image .*img\.png.*does not match"),
        (_write(tmp_path / "binary.tif", labels > 0), r"binary\.tif.*binary mask"),
        (_write(tmp_path / "float.tif", labels + np.float32(0.5)), r"float\.tif.*integers"),
        (
            _write(tmp_path / "rgb.png", np.stack([labels.astype(np.uint8)] * 3, -1)),
            r"rgb\.png.*colour image",
        ),
        (tmp_path / "missing.png", r"not found.*missing\.png"),
    ]
    for mask, message in cases:
        with pytest.raises(ValueError, match=message):
            tm.images.read_nuclei([(img, mask)])
    with pytest.raises(ValueError, match="crop_size"):
        tm.images.read_nuclei([(img, good)], crop_size=(16, 16, 16))
    with pytest.raises(ValueError, match="normalize"):
        tm.images.read_nuclei([(img, good)], normalize="zscore")
    with pytest.raises(ValueError, match="no nucleus left"):
        tm.images.read_nuclei([(img, good)], min_area=10_000)
    with pytest.raises(ValueError, match="duplicate image id 'img'"):
        tm.images.read_nuclei([(img, good), (img, good)])
    with pytest.raises(ValueError, match=r"channels=\[3\]"):
        tm.images.read_nuclei([(img, good)], channels=[3])
    stack = _write(tmp_path / "z.tif", np.zeros((3, 8, 8), np.uint16) + 1)
    with pytest.raises(ValueError, match=r"z\.tif.*3-D, but earlier masks are 2-D"):
        tm.images.read_nuclei([(img, good), (stack, stack)], min_area=0, exclude_border=False)
    (tmp_path / "only_images").mkdir()
    with pytest.raises(ValueError, match="'images/' and 'labels/'"):
        tm.images.read_nuclei(tmp_path / "only_images")


@pytest.mark.skipif(not DSB.is_dir(), reason="DSB2018 data not in $TRANSMODAL_DATA")
def test_dsb2018_first_images():
    index = pd.read_csv(DSB / "index.csv")
    nuclei = tm.images.dsb2018_nuclei(n_images=2, crop_size=32)
    filt = nuclei.uns["nuclei_filter"]
    assert filt["n_images"] == 2 and filt["n_nuclei"] == index["n_nuclei"][:2].sum()
    assert filt["n_kept"] + filt["n_dropped_small"] + filt["n_dropped_border"] == filt["n_nuclei"]
    assert nuclei.obsm["crops"].shape == (filt["n_kept"], 1, 32, 32)
    assert list(nuclei.obs["image_id"].cat.categories) == list(index["image_id"][:2])
    assert (nuclei.obs["area"] >= 30).all()
    profiles = tm.images.radial_profiles(nuclei)
    assert not np.isnan(profiles.X).any()
    assert profiles.X.mean(0)[0] > profiles.X.mean(0)[-1]  # DNA is denser inside than at the rim


# ----------------------------------------------------------------------- radial profiles

SHAPES = {"centre": (1.0, -0.8, 1), "rim": (0.2, 0.8, 2), "flat": (0.7, 0.0, 1)}


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kind", list(SHAPES))
def test_radial_profile_matches_analytic(ndim, kind):
    c0, c1, power = SHAPES[kind]
    radius = 20
    mask, r = _ball((2 * radius + 5,) * ndim, (radius + 2,) * ndim, radius)
    image = (c0 + c1 * r**power) * mask
    profile = tm.images.radial_profile(image, mask)
    assert profile.shape == (10,) and profile.max() == 1
    np.testing.assert_allclose(profile, _analytic(ndim, c0, c1, power), atol=0.02)
    steps = np.diff(profile)
    if kind == "centre":
        assert np.all(steps < 0)
    elif kind == "rim":
        assert np.all(steps > 0)
    else:
        np.testing.assert_allclose(profile, 1)


# radial_profile's docstring: the largest difference from the analytic profile
DOCUMENTED_ACCURACY = {(2, "linear"): (0.006, 0.027, 0.064), (2, "quadratic"): (0.011, 0.052, 0.106),
                       (3, "linear"): (0.012, 0.040, 0.074), (3, "quadratic"): (0.017, 0.058, 0.104)}


@pytest.mark.parametrize("ndim", [2, 3])
def test_radial_profile_accuracy_is_as_documented(ndim):
    """The docstring's figures, for intensities rising and falling towards the rim, on
    discs / balls of radius 20, 10 and 6 (measured to the documented digits)."""
    def analytic(fun, n=10):  # mean over equal volume fractions of radius u ** (1 / ndim)
        out = np.array([fun(np.linspace(j / n, (j + 1) / n, 20001) ** (1 / ndim)).mean()
                        for j in range(n)])
        return out / out.max()

    powers = {"linear": 1, "quadratic": 2}
    for kind, power in powers.items():
        funs = (lambda r: r**power, lambda r: 1 - r**power)
        for radius, documented in zip((20, 10, 6), DOCUMENTED_ACCURACY[(ndim, kind)]):
            mask, r = _ball((2 * radius + 5,) * ndim, (radius + 2,) * ndim, radius)
            worst = max(np.abs(tm.images.radial_profile(f(np.clip(r, 0, 1)) * mask, mask)
                               - analytic(f)).max() for f in funs)
            assert documented - 0.001 <= worst <= documented + 0.0005, (kind, radius, worst)


def test_radial_profile_options_and_edge_cases():
    mask, r = _ball((30, 30, 30), (15, 15, 15), 10)
    image = (1 - 0.8 * r) * mask
    coarse = tm.images.radial_profile(image, mask, shell_width=2.0, n_bins=5)
    assert coarse.shape == (5,) and np.all(np.diff(coarse) < 0)
    # anisotropic z-stack: every other plane of the ball, with z spacing 2
    aniso = tm.images.radial_profile(image[::2], mask[::2], spacing=(2, 1, 1))
    np.testing.assert_allclose(aniso, tm.images.radial_profile(image, mask), atol=0.05)
    assert np.isnan(tm.images.radial_profile(image, np.zeros_like(mask))).all()
    with pytest.raises(ValueError, match="differs from mask shape"):
        tm.images.radial_profile(image[:5], mask)
    with pytest.raises(ValueError, match="spacing"):
        tm.images.radial_profile(image, mask, spacing=(1, 1))
    assert tm.images.shell_names(4) == ["shell_0-25%", "shell_25-50%", "shell_50-75%", "shell_75-100%"]


def test_radial_profiles_from_crops_and_arrays(tmp_path):
    image, labels = _scene_2d()
    pair = (_write(tmp_path / "a.png", image), _write(tmp_path / "a_mask.png", labels))
    nuclei = tm.images.read_nuclei([pair], crop_size=32)
    profiles = tm.images.radial_profiles(nuclei)
    names = [f"shell_{10 * i}-{10 * (i + 1)}%" for i in range(10)]
    assert list(profiles.var_names) == names and profiles.X.dtype == np.float32
    pd.testing.assert_frame_equal(profiles.obs, nuclei.obs)
    assert profiles.var["area_fraction"].iloc[0] == "0-10%" and "rule" in profiles.uns["radial"]
    assert np.all(np.diff(profiles.X, axis=1) <= 1e-6)  # bright centres

    # on the full image and its labels, the crops' profiles ("max" normalisation keeps them)
    direct = tm.images.radial_profiles(image, labels)
    assert list(direct.obs["label"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(profiles.X[0], direct.X[0], atol=1e-5)
    np.testing.assert_allclose(profiles.X[1], direct.X[3], atol=0.05)  # downscaled nucleus

    # a masks / missing key given must be there (a misspelt one would segment the crops)
    assert profiles.uns["radial"]["masks"] == {"obsm['masks']": nuclei.n_obs}
    same = tm.images.radial_profiles(nuclei, masks_key="masks")
    np.testing.assert_array_equal(same.X, profiles.X)
    with pytest.raises(ValueError, match=r"^masks_key='mask': obsm\['mask'\] not found \(keys: "
                       r"\['crops', 'masks'\]\); the masks of read_nuclei are obsm\['masks'\]$"):
        tm.images.radial_profiles(nuclei, masks_key="mask")
    with pytest.raises(ValueError, match=r"^missing_key='nan': obsm\['nan'\] not found"):
        tm.images.radial_profiles(nuclei, missing_key="nan")
    # without stored masks, the nucleus is where the crop is > 0
    del nuclei.obsm["masks"]
    np.testing.assert_allclose(tm.images.radial_profiles(nuclei).X, profiles.X, atol=1e-6)
    with pytest.raises(ValueError, match=r"obsm\['none'\] not found"):
        tm.images.radial_profiles(nuclei, crops_key="none")
    with pytest.raises(ValueError, match="labels shape"):
        tm.images.radial_profiles(image, labels[:10])


def test_radial_profiles_3d_crops(tmp_path):
    shape = (30, 30, 30)
    mask, r = _ball(shape, (15, 15, 15), 10)
    stack = np.round(1000 * (0.2 + 0.8 * r**2) * mask).astype(np.uint16)  # bright rim
    pair = (_write(tmp_path / "s.tif", stack), _write(tmp_path / "s_mask.tif", mask.astype(np.uint8)))
    profiles = tm.images.radial_profiles(tm.images.read_nuclei([pair], crop_size=24))
    assert profiles.shape == (1, 10) and "volume_fraction" in profiles.var
    assert np.all(np.diff(profiles.X[0]) > 0)


@pytest.mark.skipif(not TCELL.is_file(), reason="T-cell radial data not in $TRANSMODAL_DATA")
def test_bin_names_match_published_profiles():
    assert list(ad.read_h5ad(TCELL).var_names) == tm.images.shell_names(10)


# ---------------------------------------------------------------------------- clustering


def _tied_profiles(n=60, seed=0):
    """Falling and rising profiles on a coarse grid: many tied Spearman distances."""
    rng = np.random.default_rng(seed)
    base = np.linspace(1, 0.3, 10)
    falling = base + rng.integers(0, 3, size=(n // 2, 10)) * 0.04
    rising = base[::-1] + rng.integers(0, 3, size=(n - n // 2, 10)) * 0.04
    return np.vstack([falling, rising]), np.repeat([1, 2], [n // 2, n - n // 2])


@pytest.mark.parametrize("tie_break", ["pearson", "euclidean", None])
def test_cluster_profiles_recovers_groups_and_ignores_row_order(tie_break):
    from sklearn.metrics import adjusted_rand_score

    x, truth = _tied_profiles()
    labels = tm.images.cluster_profiles(x, n_clusters=2, tie_break=tie_break)
    assert adjusted_rand_score(truth, labels) == 1
    assert set(labels) == {1, 2}
    rng = np.random.default_rng(1)
    for _ in range(3):
        perm = rng.permutation(len(x))
        again = tm.images.cluster_profiles(x[perm], n_clusters=2, tie_break=tie_break)
        np.testing.assert_array_equal(again, labels[perm])
    # more clusters, a height cut, the paper's default cut, an AnnData
    assert len(set(tm.images.cluster_profiles(x, n_clusters=5))) == 5
    assert len(set(tm.images.cluster_profiles(x, height=1.5))) == 2
    assert len(set(tm.images.cluster_profiles(ad.AnnData(x)))) >= 2


def test_spearman_distance_and_cluster_errors():
    x, _ = _tied_profiles(10)
    d = tm.images.spearman_distance(x)
    from scipy.stats import spearmanr

    np.testing.assert_allclose(d, 1 - spearmanr(x, axis=1).statistic, atol=1e-12)
    np.testing.assert_array_equal(tm.images.spearman_distance(ad.AnnData(x)), d)  # (as cluster_profiles)
    flat = tm.images.spearman_distance(np.vstack([x[:2], np.ones(10)]))
    np.testing.assert_allclose(flat[2, :2], 1)
    # the condensed form (what linkage takes) is the square's upper triangle, computed in
    # blocks of rows: the same numbers, whatever the block size
    from scipy.spatial.distance import squareform

    many = np.random.default_rng(0).random((1500, 10))  # blocks of 699 rows
    condensed = tm.images.spearman_distance(many, condensed=True)
    assert condensed.shape == (1500 * 1499 // 2,)
    np.testing.assert_array_equal(squareform(condensed), tm.images.spearman_distance(many))
    reference = 1 - squareform(spearmanr(many, axis=1).statistic, checks=False)
    np.testing.assert_allclose(condensed, reference, atol=1e-12)
    with pytest.raises(ValueError, match="not both"):
        tm.images.cluster_profiles(x, n_clusters=2, height=0.5)
    with pytest.raises(ValueError, match="n_clusters"):
        tm.images.cluster_profiles(x, n_clusters=0)
    with pytest.raises(ValueError, match="tie_break"):
        tm.images.cluster_profiles(x, n_clusters=2, tie_break="spearman")
    with pytest.raises(ValueError, match="NaN"):
        tm.images.cluster_profiles(np.vstack([x, np.full(10, np.nan)]), n_clusters=2)


@pytest.mark.skipif(not TCELL.is_file(), reason="T-cell radial data not in $TRANSMODAL_DATA")
def test_published_tcell_clusters_are_deterministic():
    from sklearn.metrics import adjusted_rand_score

    tcell = ad.read_h5ad(TCELL)
    labels = tm.images.cluster_profiles(tcell, n_clusters=2)
    perm = np.random.default_rng(0).permutation(tcell.n_obs)
    np.testing.assert_array_equal(tm.images.cluster_profiles(tcell[perm], n_clusters=2), labels[perm])
    # benchmarks/tcell_radial_clusters.py: 0.45 (the published split is one of many tie orders)
    assert adjusted_rand_score(tcell.obs["cluster_id"], labels) > 0.3


def test_cluster_stability():
    x, _ = _tied_profiles()
    stab = tm.images.cluster_stability(x, n_clusters=2, n_resamples=3)
    assert stab["permutation_ari_min"] == 1 and stab["subsample_ari_mean"] == 1
    assert 0 <= stab["tie_order_ari_min"] <= stab["tie_order_ari_max"] <= 1
    assert set(stab) >= {
        "subsample_ari_std",
        "subsample_ari_min",
        "tie_order_ari_mean",
        "n_resamples",
        "fraction",
    }
    with pytest.raises(ValueError, match="fraction"):
        tm.images.cluster_stability(x, n_clusters=2, fraction=0)
    with pytest.raises(ValueError, match="n_resamples must be an integer >= 1; got 2.5"):
        tm.images.cluster_stability(x, n_clusters=2, n_resamples=2.5)


# ------------------------------------------------------------------- robustness of inputs


def test_huge_label_ids_keep_ids_and_results(tmp_path):
    """A label id near 2**32 must not allocate a list of that length; results equal small ids."""
    image, labels = _scene_2d()
    huge = labels.astype(np.uint32)
    huge[labels == 4] = 3_000_000_000
    small_pair = (_write(tmp_path / "a.tif", image), _write(tmp_path / "a_mask.tif", labels))
    huge_pair = (_write(tmp_path / "b.tif", image), _write(tmp_path / "b_mask.tif", huge))
    ref = tm.images.read_nuclei([small_pair], crop_size=16, min_area=20)
    big = tm.images.read_nuclei([huge_pair], crop_size=16, min_area=20)
    assert list(big.obs["label"]) == [1, 3_000_000_000]
    assert list(big.obs_names) == ["b_1", "b_3000000000"]
    np.testing.assert_array_equal(big.obsm["crops"], ref.obsm["crops"])
    np.testing.assert_array_equal(big.obsm["masks"], ref.obsm["masks"])
    cols = [c for c in ref.obs if c not in ("image_id", "label")]
    pd.testing.assert_frame_equal(big.obs[cols].reset_index(drop=True), ref.obs[cols].reset_index(drop=True))

    direct_ref = tm.images.radial_profiles(image, labels)
    direct = tm.images.radial_profiles(image, huge)
    assert list(direct.obs["label"]) == [1, 2, 3, 3_000_000_000]
    np.testing.assert_array_equal(direct.X, direct_ref.X)


@pytest.mark.parametrize("spacing", [(1, 0), (1, -1), (1, np.nan), (1, np.inf), (1, 1, 1), 2.0])
def test_radial_spacing_must_be_finite_and_positive(spacing):
    mask, r = _ball((21, 21), (10, 10), 8)
    with pytest.raises(ValueError, match="spacing"):
        tm.images.radial_profile(1 - r, mask, spacing=spacing)
    with pytest.raises(ValueError, match="spacing"):  # also with nothing to profile
        tm.images.radial_profile(1 - r, np.zeros_like(mask), spacing=spacing)
    with pytest.raises(ValueError, match="spacing"):
        tm.images.radial_profiles(1 - r, mask.astype(np.uint8), spacing=spacing)


@pytest.mark.parametrize("normalize", ["max", "minmax"])
@pytest.mark.parametrize("crop_size", [32, 16])  # 16: nucleus 4 (25 px box) is downscaled
def test_nan_pixels_are_missing_values(tmp_path, normalize, crop_size):
    image, labels = _scene_2d()
    image = image.astype(np.float32)
    ref = tm.images.read_nuclei(
        [(_write(tmp_path / "a.tif", image), _write(tmp_path / "m.tif", labels))],
        crop_size=crop_size, normalize=normalize,
    )
    holed = image.copy()
    holed[20, 20] = np.nan  # centre of nucleus 1: its brightest pixel
    holed[50, 60] = np.nan  # centre of nucleus 4
    with pytest.warns(UserWarning, match="2 nucleus/nuclei with NaN or infinite pixels"):
        nuclei = tm.images.read_nuclei(
            [(_write(tmp_path / "b.tif", holed), _write(tmp_path / "n.tif", labels))],
            crop_size=crop_size, normalize=normalize,
        )
    crops = nuclei.obsm["crops"]
    assert np.isfinite(crops).all() and crops.min() >= 0 and crops.max() <= 1
    assert np.allclose(crops.max(axis=(1, 2, 3)), 1)  # the remaining pixels span [.., 1]
    changed = (crops != ref.obsm["crops"]).any(axis=(1, 2, 3))
    assert changed.all() and (crops.sum(axis=(1, 2, 3)) > 0.5 * ref.obsm["crops"].sum(axis=(1, 2, 3))).all()
    obs = nuclei.obs.set_index("label")
    inside = (labels == 1) & ~np.isnan(holed)
    np.testing.assert_allclose(obs.loc[1, "mean_intensity"], holed[inside].mean(), rtol=1e-6)
    np.testing.assert_allclose(
        obs.loc[1, "integrated_intensity"], holed[inside].mean() * (labels == 1).sum(), rtol=1e-6
    )


def test_missing_pixels_are_left_out_of_radial_profiles(tmp_path):
    """A uniform disc keeps a flat profile with NaN and infinite pixels in it (they were
    dark chromatin), from the files and from the image array."""
    yy, xx = np.mgrid[:80, :100]
    labels = ((yy - 40) ** 2 + (xx - 50) ** 2 <= 12**2).astype(np.uint16)
    image = np.ones((80, 100), np.float32)
    image[38:43, 48:53] = np.nan
    image[45, 50] = np.inf
    with pytest.warns(UserWarning, match="1 nucleus/nuclei with NaN or infinite pixels"):
        nuclei = tm.images.read_nuclei(
            [(_write(tmp_path / "a.tif", image), _write(tmp_path / "m.tif", labels))], crop_size=32
        )
    assert np.isfinite(nuclei.obsm["crops"]).all()
    assert nuclei.obsm["missing"].sum() == 26 and nuclei.obsm["masks"].sum() == labels.sum()
    np.testing.assert_allclose(tm.images.radial_profiles(nuclei).X, 1.0)
    np.testing.assert_allclose(tm.images.radial_profiles(image, labels).X, 1.0)


def test_thin_downscaled_nucleus_keeps_its_core(tmp_path):
    labels = np.zeros((80, 100), np.uint16)
    for i in range(60):  # a 2-pixel-wide diagonal nucleus, downscaled to a 16-pixel crop
        labels[10 + i, 20 + i] = labels[10 + i, 21 + i] = 1
    image = np.ones((80, 100), np.float32)
    nuclei = tm.images.read_nuclei(
        [(_write(tmp_path / "a.tif", image), _write(tmp_path / "m.tif", labels))],
        crop_size=16, min_area=10,
    )
    assert nuclei.obs["crop_scale"].iloc[0] < 0.3
    assert nuclei.obsm["masks"].sum() >= 10 and nuclei.obsm["crops"].max() == 1
    assert np.isfinite(tm.images.radial_profiles(nuclei).X).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: tm.images.read_nuclei(p, channels=5), r"channels=\[5\] out of range"),
        (lambda p: tm.images.read_nuclei(p, channels=[0.5]), r"channels=\[0.5\]: expected"),
        (lambda p: tm.images.read_nuclei(p, channels="0"), "channels='0': expected"),
        (lambda p: tm.images.read_nuclei(p, channels=[0, 0]), "named twice"),
    ],
)
def test_read_nuclei_channels_are_checked(tmp_path, call, match):
    image, labels = _scene_2d()
    pairs = [(_write(tmp_path / "a.tif", image), _write(tmp_path / "m.tif", labels))]
    with pytest.raises(ValueError, match=match):
        call(pairs)


def test_image_function_arguments_are_checked():
    x = np.random.default_rng(0).random((20, 10))
    with pytest.raises(ValueError, match="height='1'"):
        tm.images.cluster_profiles(x, height="1")
    with pytest.raises(ValueError, match="height=-1"):
        tm.images.cluster_profiles(x, height=-1)
    with pytest.raises(ValueError, match="shell_width='1'"):
        tm.images.radial_profile(np.ones((9, 9)), np.ones((9, 9)), shell_width="1")
    with pytest.raises(ValueError, match="shell_width=-1"):
        tm.images.radial_profile(np.ones((9, 9)), np.zeros((9, 9)), shell_width=-1)
    with pytest.raises(ValueError, match="labels: negative"):
        tm.images.radial_profiles(np.ones((10, 10)), -np.ones((10, 10), int))
    with pytest.raises(ValueError, match="at least 2 profiles"):
        tm.images.cluster_stability(x[:1])
    with pytest.raises(ValueError, match="n_clusters=5: more than the 2 profiles of each subsample"):
        tm.images.cluster_stability(x, n_clusters=5, fraction=0.1)
    with pytest.warns(UserWarning, match="only 1 cluster"):
        tm.images.cluster_profiles(np.ones((4, 3)), n_clusters=2)
    with pytest.raises(ValueError, match="n_images=1.5"):
        tm.images.dsb2018_nuclei(n_images=1.5)


def test_negative_channel_indices_are_recorded_resolved(tmp_path):
    image, labels = _scene_2d()
    rgb = np.stack([image, image // 2, image // 3], axis=-1)
    pair = (_write(tmp_path / "rgb.tif", rgb), _write(tmp_path / "m.tif", labels))
    last = tm.images.read_nuclei([pair], crop_size=16, channels=[-1])
    assert last.uns["crops"]["channels"] == [2]
    two = tm.images.read_nuclei([pair], crop_size=16, channels=[0, -1])
    assert two.uns["crops"]["channels"] == [0, 2]
    assert {"mean_intensity_ch0", "mean_intensity_ch2"} <= set(two.obs.columns)
    assert not any(c.endswith("_ch-1") for c in two.obs.columns)
    np.testing.assert_array_equal(
        two.obsm["crops"][:, 1], tm.images.read_nuclei([pair], crop_size=16, channels=[2]).obsm["crops"][:, 0]
    )
    with pytest.raises(ValueError, match=r"channels=\[0, -3\] name a channel twice"):
        tm.images.read_nuclei([pair], crop_size=16, channels=[0, -3])  # -3 is channel 0


def test_flat_3d_nucleus_has_nan_solidity_without_warnings(tmp_path):
    """A nucleus one z-slice thick has no convex volume: skimage warned (Qhull) and gave
    solidity inf, which a morphology modality then refused as an infinite value."""
    zz, yy, xx = np.mgrid[:5, :30, :30]
    labels = np.zeros((5, 30, 30), np.uint16)
    labels[2][(yy[0] - 15) ** 2 + (xx[0] - 15) ** 2 <= 16] = 1  # one slice thick
    labels[1:4][(yy[:3] - 15) ** 2 + (xx[:3] - 5) ** 2 <= 4] = 2  # three slices
    image = np.random.default_rng(0).random((5, 30, 30)).astype(np.float32)
    pair = (_write(tmp_path / "i.tif", image), _write(tmp_path / "l.tif", labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nuclei = tm.images.read_nuclei([pair], crop_size=16)
    solidity = nuclei.obs.set_index("label")["solidity"]
    assert np.isnan(solidity[1]) and 0 < solidity[2] <= 1


def test_single_slice_stacks_palette_masks_and_ambiguous_channel_axes(tmp_path):
    from PIL import Image

    labels = np.zeros((40, 40), np.uint16)
    labels[5:15, 5:15], labels[20:32, 20:30] = 1, 2
    image = np.where(labels > 0, 100, 1).astype(np.uint16)
    # a one-slice stack (1, H, W) is a 2-D image, not a z-stack whose faces touch every nucleus
    tifffile.imwrite(tmp_path / "one.tif", image[None])
    tifffile.imwrite(tmp_path / "one_mask.tif", labels[None])
    flat = tm.images.read_nuclei([(tmp_path / "one.tif", tmp_path / "one_mask.tif")], crop_size=16)
    assert flat.obsm["crops"].shape == (2, 1, 16, 16) and "area" in flat.obs
    # (Z=1, C, Y, X) with the channel axis given in the file's own numbering
    two = np.stack([image, np.full_like(image, 7)])[None]
    tifffile.imwrite(tmp_path / "zc.tif", two)
    for axis in (None, 1, -3):
        zc = tm.images.read_nuclei([(tmp_path / "zc.tif", tmp_path / "one_mask.tif")],
                                   crop_size=16, channel_axis=axis)
        assert zc.obsm["crops"].shape == (2, 2, 16, 16)
        assert zc.obs["mean_intensity_ch1"].tolist() == [7.0, 7.0]
    # a palette PNG keeps its indices as labels
    png = Image.fromarray(labels.astype(np.uint8), mode="P")
    png.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    png.save(tmp_path / "p_mask.png")
    Image.fromarray(image.astype(np.uint8)).save(tmp_path / "p.png")
    pal = tm.images.read_nuclei([(tmp_path / "p.png", tmp_path / "p_mask.png")], crop_size=16)
    np.testing.assert_array_equal(pal.obs["area"], flat.obs["area"])
    # 3 slices x 3 channels: the TIFF's axis letters decide, else channel_axis is asked for
    mask3 = np.zeros((3, 40, 40), np.uint16)
    mask3[:, 5:15, 5:15] = 1
    dna = np.broadcast_to(np.arange(1.0, 4.0)[:, None, None], (3, 40, 40))
    zcyx = np.stack([dna, np.full((3, 40, 40), 100.0), np.full((3, 40, 40), 100.0)], axis=1)
    tifffile.imwrite(tmp_path / "m3.tif", mask3)
    tifffile.imwrite(tmp_path / "zcyx.tif", zcyx.astype(np.uint16), imagej=True,
                     metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "plain.tif", zcyx.astype(np.uint16))
    kw = {"crop_size": 8, "exclude_border": False}
    known = tm.images.read_nuclei([(tmp_path / "zcyx.tif", tmp_path / "m3.tif")], **kw)
    assert known.obs["mean_intensity_ch0"].tolist() == [2.0]
    assert known.obs["mean_intensity_ch1"].tolist() == [100.0]
    with pytest.raises(ValueError, match=r"channels on any of axes \[0, 1\]; pass channel_axis"):
        tm.images.read_nuclei([(tmp_path / "plain.tif", tmp_path / "m3.tif")], **kw)
    given = tm.images.read_nuclei([(tmp_path / "plain.tif", tmp_path / "m3.tif")],
                                  channel_axis=1, **kw)
    assert given.obs["mean_intensity_ch0"].tolist() == [2.0]


def test_spearman_distance_refuses_nan_and_vectors():
    with pytest.raises(ValueError, match="1 row\\(s\\) with NaN"):
        tm.images.spearman_distance(np.array([[1.0, 2.0, 3.0], [1.0, np.nan, 2.0]]))
    with pytest.raises(ValueError, match="expected an \\(n, bins\\) matrix"):
        tm.images.spearman_distance(np.arange(5.0))
    assert tm.images.spearman_distance(np.zeros((0, 10))).shape == (0, 0)


def test_a_label_on_two_separate_pieces_warns(tmp_path):
    labels = np.zeros((40, 40), np.uint16)
    labels[5:12, 5:12] = 1
    labels[14:24, 20:28] = 2
    labels[22:26, 5:9] = 2  # the same id on a second blob
    labels[28:34, 28:34] = 3
    labels[34:36, 34:36] = 3  # touching diagonally: one piece
    image = np.where(labels > 0, 50, 1).astype(np.uint8)
    pair = (_write(tmp_path / "a.tif", image), _write(tmp_path / "a_mask.tif", labels))
    with pytest.warns(UserWarning, match=r"1 nucleus label\(s\) cover several separate pieces "
                      r"\(e.g. label 2 of"):
        nuclei = tm.images.read_nuclei([pair], crop_size=16)
    assert len(nuclei) == 3


def test_rgba_png_warns_about_its_alpha_channel(tmp_path):
    labels = np.zeros((40, 40), np.uint8)
    labels[10:20, 10:20] = 1
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 2] = np.where(labels > 0, 200, 5)
    rgba[..., 3] = 255
    skimage.io.imsave(tmp_path / "c.png", rgba, check_contrast=False)
    skimage.io.imsave(tmp_path / "c_mask.png", labels, check_contrast=False)
    pair = (tmp_path / "c.png", tmp_path / "c_mask.png")
    with pytest.warns(UserWarning, match="RGBA PNG: its alpha channel is read as channel 3"):
        four = tm.images.read_nuclei([pair], crop_size=16)
    assert four.obsm["crops"].shape[1] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        three = tm.images.read_nuclei([pair], crop_size=16, channels=[0, 1, 2])
    assert three.obsm["crops"].shape[1] == 3


def test_z_stack_with_a_2d_mask_is_not_read_as_channels(tmp_path):
    labels = np.zeros((40, 40), np.uint16)
    labels[10:20, 10:20] = 1
    stack = np.random.default_rng(0).random((6, 40, 40)).astype(np.float32)
    mask = _write(tmp_path / "m.tif", labels)
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(ValueError, match=r"names an axis Z \(z-slices.*mask .* is 2-D: a z-stack "
                       r"needs a 3-D mask"):
        tm.images.read_nuclei([(tmp_path / "z.tif", mask)], crop_size=16)
    # said to be channels: read as such
    six = tm.images.read_nuclei([(tmp_path / "z.tif", mask)], crop_size=16, channel_axis=0)
    assert six.obsm["crops"].shape == (1, 6, 16, 16)
    # axes the file does not name: read as channels, with a warning that says so
    tifffile.imwrite(tmp_path / "q.tif", stack)
    with pytest.warns(UserWarning, match=r"does not name its axes: the axis that its 2-D mask "
                      r"lacks is read as channels"):
        tm.images.read_nuclei([(tmp_path / "q.tif", mask)], crop_size=16)
    # ... also 3 or 4 planes, which tifffile takes for RGB samples ("SYX") by its guess
    tifffile.imwrite(tmp_path / "q3.tif", stack[:3])
    with pytest.warns(UserWarning, match="does not name its axes"):
        three = tm.images.read_nuclei([(tmp_path / "q3.tif", mask)], crop_size=16)
    assert three.obsm["crops"].shape == (1, 3, 16, 16)
    # multi-page TIFFs of other writers name their pages I: the same warning
    from PIL import Image

    pages = [Image.fromarray(p) for p in stack]
    pages[0].save(tmp_path / "pil.tif", save_all=True, append_images=pages[1:])
    with pytest.warns(UserWarning, match="does not name its axes"):
        tm.images.read_nuclei([(tmp_path / "pil.tif", mask)], crop_size=16)
    # time points beside a 3-D mask
    mask3 = np.zeros((4, 40, 40), np.uint16)
    mask3[1:3, 10:20, 10:20] = 1
    tifffile.imwrite(tmp_path / "m3.tif", mask3)
    tifffile.imwrite(tmp_path / "tz.tif", np.zeros((3, 4, 40, 40), np.float32), imagej=True,
                     metadata={"axes": "TZYX"})
    with pytest.raises(ValueError, match=r"names an axis T \(time points.*read one time point "
                       r"at a time"):
        tm.images.read_nuclei([(tmp_path / "tz.tif", tmp_path / "m3.tif")], crop_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.images.read_nuclei([(tmp_path / "q.tif", mask)], crop_size=16, channel_axis=0)
        # channels named in the file (ImageJ's C) and RGB samples read silently
        tifffile.imwrite(tmp_path / "c.tif", stack[:3], imagej=True, metadata={"axes": "CYX"})
        assert tm.images.read_nuclei([(tmp_path / "c.tif", mask)], crop_size=16).obsm[
            "crops"].shape == (1, 3, 16, 16)
        rgb = (np.moveaxis(stack[:3], 0, -1) * 255).astype(np.uint8)  # interleaved: pixels
        tifffile.imwrite(tmp_path / "rgb.tif", rgb)
        assert tm.images.read_nuclei([(tmp_path / "rgb.tif", mask)], crop_size=16).obsm[
            "crops"].shape == (1, 3, 16, 16)


def test_binary_masks_stored_as_integers_are_refused(tmp_path):
    blobs = np.zeros((40, 40), np.uint8)
    blobs[5:12, 5:12] = blobs[20:30, 20:30] = 255
    image = _write(tmp_path / "i.png", np.where(blobs > 0, 120, 3).astype(np.uint8))
    _write(tmp_path / "m.png", blobs)
    with pytest.raises(ValueError, match=r"binary mask \(every nucleus pixel is 255; 2 separate "
                       r"pieces\).*skimage.measure.label"):
        tm.images.read_nuclei([(image, tmp_path / "m.png")], crop_size=16)
    # one nucleus of label 1 is a valid instance mask, also with a stray pixel (smaller than
    # min_area) or as one label of another value on two large pieces: read, with a warning
    one = np.where(np.arange(40)[:, None] < 20, blobs, 0).astype(np.uint8) // 255
    _write(tmp_path / "one.png", one)
    assert len(tm.images.read_nuclei([(image, tmp_path / "one.png")], crop_size=16)) == 1
    one[35, 35] = 1
    _write(tmp_path / "stray.png", one)
    with pytest.warns(UserWarning, match="cover several separate pieces"):
        assert len(tm.images.read_nuclei([(image, tmp_path / "stray.png")], crop_size=16)) == 1
    _write(tmp_path / "seven.png", (blobs > 0).astype(np.uint8) * 7)
    with pytest.warns(UserWarning, match="cover several separate pieces"):
        assert len(tm.images.read_nuclei([(image, tmp_path / "seven.png")], crop_size=32)) == 1


def test_single_pairs_and_image_ids(tmp_path):
    image, labels = _scene_2d()
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        _write(tmp_path / folder / "img.png", image)
        _write(tmp_path / folder / "img_mask.png", labels)
    a, b = tmp_path / "a", tmp_path / "b"
    one = tm.images.read_nuclei(a / "img.png", a / "img_mask.png", crop_size=32)
    assert len(one) == 2 and set(one.obs["image_id"]) == {"img"}
    pair = tm.images.read_nuclei([(str(a / "img.png"), str(a / "img_mask.png"))], crop_size=32)
    assert pair.obs_names.tolist() == one.obs_names.tolist()
    # a bare tuple may be two images as well as an image and its mask: refused, with the forms
    with pytest.raises(ValueError, match=r"pass \[\(image, mask\)\] or read_nuclei\(image, mask\)"):
        tm.images.read_nuclei((a / "img.png", a / "img_mask.png"), crop_size=32)
    pairs = [(a / "img.png", a / "img_mask.png"), (b / "img.png", b / "img_mask.png")]
    with pytest.raises(ValueError, match="duplicate image id 'img'.*pass image_ids="):
        tm.images.read_nuclei(pairs, crop_size=32)
    both = tm.images.read_nuclei(pairs, crop_size=32, image_ids=["plate1", "plate2"])
    assert both.obs["image_id"].cat.categories.tolist() == ["plate1", "plate2"]
    assert both.obs_names[0].startswith("plate1_")
    with pytest.raises(ValueError, match=r"image_ids: expected one id per image \(2\)"):
        tm.images.read_nuclei(pairs, crop_size=32, image_ids=["x"])
    with pytest.raises(ValueError, match="needs one mask file"):
        tm.images.read_nuclei(a / "img.png", crop_size=32)


def test_anisotropic_voxels_in_morphology_and_radial_profiles(tmp_path):
    # a ball of radius 12 um in voxels of 3 x 1 x 1 um (4 slices of radius in z)
    shape = (16, 40, 40)
    z, y, x = np.indices(shape, dtype=float)
    r = np.sqrt(((z - 7.5) * 3) ** 2 + (y - 20) ** 2 + (x - 20) ** 2) / 12
    labels = (r <= 1).astype(np.uint16)
    image = np.where(labels > 0, 50 + 150 * r, 0).astype(np.uint16)  # bright rim
    pair = (_write(tmp_path / "s.tif", image), _write(tmp_path / "s_mask.tif", labels))
    plain = tm.images.read_nuclei([pair], crop_size=(16, 32, 32))
    sized = tm.images.read_nuclei([pair], crop_size=(16, 32, 32), spacing=(3, 1, 1))
    assert sized.uns["crops"]["spacing"] == [3.0, 1.0, 1.0]
    assert plain.uns["crops"]["spacing"] == [1.0, 1.0, 1.0]
    assert plain.obs["axis_major_length"].iloc[0] > 2.5 * plain.obs["axis_minor_length"].iloc[0]
    major, minor = sized.obs[["axis_major_length", "axis_minor_length"]].iloc[0]
    assert minor / major > 0.9  # a ball in physical units
    np.testing.assert_allclose(sized.obs["volume"], labels.sum() * 3.0)
    np.testing.assert_allclose(sized.obs[["centroid_z", "centroid_y", "centroid_x"]],
                               plain.obs[["centroid_z", "centroid_y", "centroid_x"]])
    np.testing.assert_allclose(sized.obs["integrated_intensity"], plain.obs["integrated_intensity"])
    # radial profiles take the recorded spacing: close to a ball's analytic rising profile
    truth = _analytic(3, 50, 150, 1)
    own = tm.images.radial_profiles(sized)
    assert own.uns["radial"]["spacing"] == [3.0, 1.0, 1.0]
    assert np.abs(own.X[0] - truth).max() < 0.05
    assert np.abs(tm.images.radial_profiles(plain).X[0] - truth).max() > 0.05


def test_radial_profiles_of_decoded_crops_segment_the_nucleus():
    # a decoder's output: a bright-centre nucleus over a dim, nowhere-zero background
    shape = (32, 32)
    disc, r = _ball(shape, (15.5, 15.5), 10)
    crop = np.where(disc, 1.0 - 0.5 * r, 0.03 + 0.02 * r / r.max()).astype(np.float32)
    real = np.where(disc, crop, 0)
    data = ad.AnnData(obsm={"crops": np.stack([crop, real])[:, None]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = tm.images.radial_profiles(data)
    assert out.uns["radial"]["masks"] == {"crop > 0": 1, "otsu": 1}
    np.testing.assert_allclose(out.X[0], out.X[1], atol=0.02)  # the same nucleus
    np.testing.assert_allclose(out.X[1], _analytic(2, 1.0, -0.5, 1), atol=0.03)
    # a stray exact 0 (a clipped decoder output) does not make a zero background
    crop[0, 0] = 0
    again = tm.images.radial_profiles(ad.AnnData(obsm={"crops": crop[None, None]}))
    assert again.uns["radial"]["masks"] == {"crop > 0": 0, "otsu": 1}
    np.testing.assert_allclose(again.X[0], out.X[0])


def test_shell_width_counts_in_the_units_of_downscaled_crops():
    disc, r = _ball((32, 32), (15.5, 15.5), 12)
    crop = np.where(disc, 0.2 + r, 0).astype(np.float32)
    data = ad.AnnData(obsm={"crops": crop[None, None], "masks": disc[None]},
                      obs=pd.DataFrame({"crop_scale": [0.5]}, index=["n0"]))
    data.uns["crops"] = {"spacing": [0.5, 0.5]}
    out = tm.images.radial_profiles(data, shell_width=2.0)
    # its pixels are 0.5 / 0.5 = 1 unit wide: shells of 2 pixels
    expected = tm.images.radial_profile(crop, disc, spacing=(1.0, 1.0), shell_width=2.0)
    np.testing.assert_allclose(out.X[0], expected, rtol=1e-6)
    assert not np.allclose(expected, tm.images.radial_profile(crop, disc, spacing=(0.5, 0.5),
                                                               shell_width=2.0))


def test_large_crops_warn_with_their_memory(tmp_path, monkeypatch):
    import transmodal.images._read as read

    image, labels = _scene_2d()
    pair = (_write(tmp_path / "i.png", image), _write(tmp_path / "i_mask.png", labels))
    monkeypatch.setattr(read, "CROP_MEMORY_WARN", 1000)
    with pytest.warns(UserWarning, match=r"2 nuclei in crops of \(32, 32\) x 1 channel\(s\) take "
                      r"0.0 GiB .*give crop_size per axis"):
        tm.images.read_nuclei([pair], crop_size=32)


def _ring_with_dark_centre() -> np.ndarray:
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 15.5, xx - 15.5)
    crop = np.where(r < 12, 0.9, 0.1)  # a decoded crop: no exact zeros, so segmented
    crop[r < 4] = 0.1  # chromatin-poor centre, as dark as the background
    return crop


def test_segmented_decoded_nuclei_keep_their_dark_centre():
    crop = _ring_with_dark_centre()
    masks, n_segmented = segment_crops(crop[None])
    assert n_segmented == 1
    assert masks[0][15, 15] and masks[0][16, 16]  # holes filled
    profile = radial_profiles(ad.AnnData(np.zeros((1, 1)), obsm={"crops": crop[None, None]})).X[0]
    assert profile[0] < 0.5  # the dark centre shows in the innermost bin
    assert profile[-1] == pytest.approx(1.0)


def test_radial_profile_refuses_what_is_no_image():
    """A 1-D, 4-D or 0-D array or complex values are refused by name (a scalar gave a
    profile of ones); infinite pixels are missing values, as NaN ones."""
    g = np.indices((15, 15))
    mask = ((g[0] - 7) ** 2 + (g[1] - 7) ** 2) <= 36
    img = np.random.default_rng(0).random((15, 15))
    for image, m in ((img[7], mask[7]), (img[None, None], mask[None, None]),
                     (np.float64(1), np.bool_(True))):
        with pytest.raises(ValueError, match=r"image must be 2-D \(H, W\) or 3-D"):
            tm.images.radial_profile(image, m)
    with pytest.raises(ValueError, match="real intensities, got complex"):
        tm.images.radial_profile(img + 0j, mask)
    row = mask & (g[0] == 7)
    np.testing.assert_array_equal(
        tm.images.radial_profile(np.where(row, np.inf, img), mask, n_bins=3),
        tm.images.radial_profile(np.where(row, np.nan, img), mask, n_bins=3))
