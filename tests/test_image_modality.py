"""Image modalities: convolutional encoder / decoder in the shared latent space."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import torch

import transmodal as tm
from transmodal.nn._conv import ConvDecoder, ConvEncoder, random_dihedral
from transmodal.nn._likelihoods import get_likelihood


def nuclei(n: int = 120, size: int = 16, seed: int = 0, depth: int | None = None):
    """Disc (or ball) nuclei whose radial profile falls more steeply with a cell state ``t``;
    a second, paired modality holds smooth functions of ``t``."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(size=n)
    axes = np.mgrid[tuple(slice(0, s) for s in ((depth,) if depth else ()) + (size, size))]
    r = np.sqrt(sum((a - (a.shape[i] - 1) / 2) ** 2 for i, a in enumerate(axes))) / (size / 2)
    crops = np.stack([np.clip(1 - r, 0, 1) ** (0.5 + 2 * ti) for ti in t])[:, None]
    crops = (crops * (r < 1)).astype(np.float32)
    img = ad.AnnData(np.zeros((n, 1), np.float32))
    img.obsm["crops"] = crops
    img.obs_names = [f"n{i}" for i in range(n)]
    cols = [t, t**2, np.sin(3 * t)] + [0.1 * rng.normal(size=n) for _ in range(3)]
    feat = ad.AnnData(np.stack(cols, 1).astype(np.float32))
    feat.obs_names = img.obs_names
    img.obs["t"] = feat.obs["t"] = t
    return img, feat


def image_model(img, feat, likelihood="gaussian", **kw):
    kw.setdefault("n_latent", 4)
    kw.setdefault("seed", 0)
    return tm.CrossModalAE(
        {"img": img, "feat": feat},
        {"img": tm.Modality(likelihood, obsm_key="crops", hidden=(8, 16)), "feat": tm.Modality("gaussian")},
        **kw,
    )


def fit(model, **kw):
    kw.setdefault("max_epochs", 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return model.train(progress_bar=False, early_stopping=False, **kw)


@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 15, 13), (1, 5, 6, 7)])
def test_conv_networks_reproduce_any_image_shape(shape):
    enc = ConvEncoder(shape, 6, (4, 8), variational=True)
    dec = ConvDecoder(6, shape, (4, 8), n_out_channels=2 * shape[0])
    x = torch.rand(3, int(np.prod(shape)))
    mean, logvar = enc.distribution(x)
    assert mean.shape == (3, 6) and logvar.shape == (3, 6)
    assert dec(mean).shape == (3, 2 * shape[0], *shape[1:])


def test_default_conv_networks_keep_their_group_norms():
    """Every stage of the default channels on 32x32 crops is normalised in gcd(8, c) groups."""
    enc = ConvEncoder((3, 32, 32), 6)
    dec = ConvDecoder(6, (3, 32, 32), n_out_channels=6)
    norms = [m for net in (enc, dec) for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in norms] == [
        (8, 32), (8, 64), (8, 128), (8, 64), (8, 32)
    ]
    assert not any(isinstance(m, torch.nn.Identity) for m in (*enc.net, *dec.net))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 2, 2), (1, 1, 1)])
def test_conv_networks_on_one_pixel_feature_maps_depend_on_their_input(shape):
    """A group of one value per sample normalises to 0: stages reaching 1x1 maps with few
    channels must use fewer groups (or none) so that the image is not ignored."""
    torch.manual_seed(0)
    enc = ConvEncoder(shape, 4, (8, 8, 8), dropout=0.0, standardize=False).eval()
    dec = ConvDecoder(4, shape, (8, 8, 8), n_out_channels=1).eval()
    with torch.no_grad():
        z = enc(torch.rand(16, int(np.prod(shape))))
        out = dec(torch.randn(16, 4))
    assert z.std(0).min() > 1e-3
    assert out.std(0).min() > 1e-3
    last = [m for m in enc.net if isinstance(m, torch.nn.GroupNorm)][-1]  # on a 1x1 map
    assert (last.num_groups, last.num_channels) == (2, 8)  # 4 channels per group, not 1
    # one channel of one pixel: not normalised (a 2x2 map of one channel still is)
    one = ConvEncoder((1, 4, 4), 4, (1, 1), dropout=0.0, standardize=False)
    assert isinstance(one.net[2], torch.nn.GroupNorm) and isinstance(one.net[5], torch.nn.Identity)
    # nor two channels of one pixel (a group of two values normalises to +-1)
    two = ConvEncoder((1, 4, 4), 4, (2, 2), dropout=0.0, standardize=False)
    assert isinstance(two.net[5], torch.nn.Identity)


@pytest.mark.parametrize(
    "shape", [(16, 16, 3), (16, 16, 1), (8, 12, 12, 4), (4, 12, 12, 1), (3, 12, 12, 3)]
)
def test_channels_last_crops_are_refused(shape):
    img, feat = nuclei(n=20)
    img.obsm["crops"] = np.zeros((20, *shape), np.float32)
    with pytest.raises(
        ValueError,
        match=r"'img': obsm\['crops'\] has shape \(20, " + ", ".join(map(str, shape))
        + r"\), which looks channels-last.*np\.moveaxis\(crops, -1, 1\)",
    ):
        image_model(img, feat)


@pytest.mark.parametrize(
    "shape", [(3, 16, 16), (1, 16, 16), (8, 4, 4), (4, 3, 8, 8), (1, 1, 16, 16)]
)
def test_channels_first_crops_are_taken(shape):
    img, feat = nuclei(n=20)
    img.obsm["crops"] = np.random.default_rng(0).random((20, *shape)).astype(np.float32)
    assert image_model(img, feat).mods["img"].source.image_shape == shape


def test_random_dihedral_moves_pixels_but_keeps_them():
    torch.manual_seed(0)
    shape = (2, 6, 6)
    x = torch.rand(64, int(np.prod(shape)))
    y = random_dihedral(x, shape)
    assert not torch.equal(x, y)  # some images changed
    torch.testing.assert_close(x.sort(1).values, y.sort(1).values)  # same pixel values
    # non-square images are only flipped: each image equals one of its 4 flips
    shape = (1, 4, 6)
    x = torch.rand(16, 24)
    y = random_dihedral(x, shape).reshape(16, *shape)
    img = x.reshape(16, *shape)
    views = [img, img.flip(2), img.flip(3), img.flip(2).flip(3)]
    assert all(any(torch.equal(y[i], v[i]) for v in views) for i in range(16))


def test_continuous_bernoulli_nll_is_torchs():
    lik = get_likelihood("continuous_bernoulli")
    logits = torch.randn(4, 5)
    x = torch.rand(4, 5)
    expected = -torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x).mean(-1)
    torch.testing.assert_close(lik.nll({"logits": logits}, x, x), expected)
    mean = lik.mean({"logits": logits})
    assert ((mean > 0) & (mean < 1)).all()


@pytest.mark.parametrize("likelihood", ["gaussian", "continuous_bernoulli"])
def test_image_modality_trains_translates_and_round_trips(likelihood, tmp_path):
    img, feat = nuclei()
    model = fit(image_model(img, feat, likelihood, anchor_fraction=0.5), max_epochs=15)
    recon = model.history["train_recon_img"]
    assert recon.iloc[-1] < recon.iloc[0]
    assert model.module.archs["img"].augment and model.module.archs["img"].image_shape == (1, 16, 16)
    z = model.get_latent_representation("img")
    assert z.shape == (img.n_obs, 4)
    np.testing.assert_array_equal(z, model.get_latent_representation("img"))  # eval: no augmentation
    out = model.translate(source="feat", target="img")
    assert out.shape == (feat.n_obs, 256) and out.obsm["crops"].shape == (feat.n_obs, 1, 16, 16)
    np.testing.assert_array_equal(out.obsm["crops"].reshape(feat.n_obs, -1), out.X)
    back = model.translate(img, source="img", target="feat")
    assert back.shape == feat.shape and np.isfinite(back.X).all()
    model.save(tmp_path / "m")
    loaded = tm.CrossModalAE.load(tmp_path / "m", {"img": img, "feat": feat})
    np.testing.assert_allclose(loaded.get_latent_representation("img"), z, atol=1e-5)
    # loaded without data: the image modality stands in with the saved image shape
    bare = tm.CrossModalAE.load(tmp_path / "m")
    np.testing.assert_allclose(
        bare.translate(feat, source="feat", target="img").obsm["crops"], out.obsm["crops"], atol=1e-5
    )
    small = img[:, :].copy()
    small.obsm["crops"] = img.obsm["crops"][:, :, :8, :8].copy()
    with pytest.raises(ValueError, match="'img'.*shape"):
        model.get_latent_representation("img", small)
    with pytest.raises(ValueError, match="'img'.*shape"):
        tm.CrossModalAE.load(tmp_path / "m", {"img": small, "feat": feat})


def test_translated_images_follow_the_source_state():
    """Nuclei translated from the features of a cell match that cell's real radial profile."""
    img, feat = nuclei(n=200)
    model = fit(image_model(img, feat, anchor_fraction=1.0), max_epochs=40)
    out = model.translate(source="feat", target="img").obsm["crops"][:, 0]
    real = img.obsm["crops"][:, 0]
    centre, ring = (slice(6, 10), slice(6, 10)), (slice(6, 10), slice(1, 3))
    # the ratio of ring to centre intensity falls with t in both real and translated images
    ratio_real = real[:, ring[0], ring[1]].mean((1, 2)) / real[:, centre[0], centre[1]].mean((1, 2))
    ratio_tr = out[:, ring[0], ring[1]].mean((1, 2)) / np.maximum(out[:, centre[0], centre[1]].mean((1, 2)), 1e-3)
    assert np.corrcoef(ratio_real, ratio_tr)[0, 1] > 0.7


def test_input_dropout_drops_pixels_of_image_modalities():
    img, feat = nuclei(n=30)
    model = tm.CrossModalAE(
        {"img": img, "feat": feat},
        {"img": tm.Modality("gaussian", obsm_key="crops", hidden=(4, 8), input_dropout=0.5),
         "feat": tm.Modality("gaussian")},
        n_latent=3,
    )
    enc = model.module.encoders["img"]
    assert isinstance(enc.input_dropout, torch.nn.Dropout) and enc.input_dropout.p == 0.5
    x = torch.from_numpy(img.obsm["crops"].reshape(30, -1))
    enc.train()
    assert not torch.equal(enc.input_dropout(x), x)  # trained on pixels dropped at random
    enc.eval()
    assert torch.equal(enc.input_dropout(x), x)


def test_three_d_image_modality_and_anchor_pretraining():
    img, feat = nuclei(n=60, size=8, depth=6)
    assert img.obsm["crops"].shape == (60, 1, 6, 8, 8)
    model = fit(image_model(img, feat, prior="anchor:img"), max_epochs=4, pretrain_epochs=2)
    assert model.translate(source="feat", target="img").obsm["crops"].shape == (60, 1, 6, 8, 8)


def test_bad_image_settings_name_the_modality_and_field():
    img, feat = nuclei(n=30)
    with pytest.raises(ValueError, match="'img'.*'likelihood'.*cannot model images"):
        image_model(img, feat, "nb")
    with pytest.raises(ValueError, match="'img'.*'n_pca'"):
        tm.CrossModalAE(
            {"img": img, "feat": feat},
            {"img": tm.Modality("gaussian", obsm_key="crops", n_pca=5), "feat": tm.Modality("gaussian")},
        )
    bright = img.copy()
    bright.obsm["crops"] = bright.obsm["crops"] * 2 + 0.5
    with pytest.raises(ValueError, match="'img'.*above 1"):
        image_model(bright, feat, "continuous_bernoulli")
    flat = img.copy()
    flat.obsm["crops"] = np.zeros((30, 4, 4), np.float32)
    with pytest.raises(ValueError, match="'img'.*3 dimensions"):
        image_model(flat, feat)


def test_gallery_of_real_and_translated_crops(tmp_path):
    img, feat = nuclei(n=10)
    crops = img.obsm["crops"]
    fig = tm.pl.gallery({"real": crops, "noisy": np.clip(crops + 0.1, 0, 1)}, n=4, show=False)
    assert len(fig.axes) == 8
    tm.pl.gallery({"real": crops, "3-D": np.repeat(crops[:, :, None], 3, axis=2)}, path=tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0
    with pytest.raises(ValueError, match="different numbers"):
        tm.pl.gallery({"a": crops, "b": crops[:5]})
    with pytest.raises(ValueError, match="'bad'"):
        tm.pl.gallery({"bad": crops[:, 0, 0]})
    with pytest.raises(ValueError, match="n must be an integer >= 1; got 0"):
        tm.pl.gallery({"real": crops}, n=0)
    for kw, match in [({"size": 0}, "size must be a finite number > 0; got 0"),
                      ({"dpi": -1}, "dpi must be"), ({"cmap": "nope"}, "cmap='nope' is not"),
                      ({"vmin": 1.0, "vmax": 0.5}, "vmin must be below vmax"),
                      ({"vmax": float("nan")}, "vmax must be a finite number or None")]:
        with pytest.raises(ValueError, match=match):
            tm.pl.gallery({"real": crops}, path=tmp_path / "x.png", **kw)
    assert not (tmp_path / "x.png").exists()
    tm.pl.gallery({"real": crops}, path=tmp_path / "x.png", dpi=None)  # matplotlib's default
    assert (tmp_path / "x.png").exists()


def test_gallery_checks_the_output_folder_before_drawing(tmp_path):
    import matplotlib.pyplot as plt

    crops = nuclei(n=4)[0].obsm["crops"]
    n_open = len(plt.get_fignums())
    with pytest.raises(ValueError, match="folder .* does not exist"):
        tm.pl.gallery({"real": crops}, path=tmp_path / "missing" / "g.png")
    assert len(plt.get_fignums()) == n_open and not (tmp_path / "missing").exists()


def test_translations_to_images_carry_the_recorded_voxel_spacing(tmp_path):
    """radial_profiles reads the spacing of uns["crops"]: translated (and reconstructed)
    crops carry the one read_nuclei recorded, also from a model loaded without data."""
    img, feat = nuclei(n=40, size=8, depth=4)
    img.uns["crops"] = {"spacing": [2.0, 0.5, 0.5]}
    model = fit(image_model(img, feat), max_epochs=1)
    out = model.translate(source="feat", target="img")
    assert list(out.uns["crops"]["spacing"]) == [2.0, 0.5, 0.5]
    assert "crops" not in model.translate(source="img", target="feat").uns
    prof = tm.images.radial_profiles(out)
    assert list(prof.uns["radial"]["spacing"]) == [2.0, 0.5, 0.5]
    model.save(tmp_path / "m")
    loaded = tm.CrossModalAE.load(tmp_path / "m")
    again = loaded.translate(feat, source="feat", target="img")
    assert list(again.uns["crops"]["spacing"]) == [2.0, 0.5, 0.5]
    # anything else in uns["crops"] is not a spacing to pass on, and builds as before
    for other in ("crops.tif", np.ones(3), {"spacing": "0.5um"}):
        img.uns["crops"] = other
        assert "crops" not in image_model(img, feat).translate(
            source="feat", target="img").uns


def _spots(patches: np.ndarray, n_genes: int = 12, seed: int = 0) -> ad.AnnData:
    """Spots with RNA counts in X and image patches in obsm["patch"] (a spatial user's)."""
    rng = np.random.default_rng(seed)
    spots = ad.AnnData(rng.poisson(3.0, (len(patches), n_genes)).astype(np.float32))
    spots.obs_names = [f"spot{i}" for i in range(len(patches))]
    spots.obsm["patch"] = patches
    return spots


def _build(spots: ad.AnnData, image: tm.Modality) -> tm.CrossModalAE:
    return tm.CrossModalAE({"rna": spots, "img": spots}, {"rna": tm.Modality("nb"), "img": image},
                           n_latent=4, hidden=(8,), anchor_fraction=1.0)


def test_patches_of_other_tools_are_told_how_to_fit():
    """Spatial users' patches: multiplexed channels-last ones are refused (5 channels passed
    as 48 'channels' of 48 x 5 images, and augmentation then reversed the channels); 8-bit
    intensities under 'bernoulli' (all made 1) and raw intensities under an unscaled
    'gaussian' (a decoder far from reaching them) warn; 'continuous_bernoulli' on 8-bit
    values says to divide by 255; grey stacks without a channel axis are told to add it."""
    rng = np.random.default_rng(0)
    last = _spots(rng.random((40, 24, 24, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"has shape \(40, 24, 24, 5\), which looks channels-last "
                       r".*np\.moveaxis\(crops, -1, 1\)"):
        _build(last, tm.Modality("continuous_bernoulli", obsm_key="patch"))
    _build(_spots(np.moveaxis(last.obsm["patch"], -1, 1).copy()),
           tm.Modality("continuous_bernoulli", obsm_key="patch"))
    he = _spots(rng.integers(1, 256, (40, 3, 8, 8), dtype=np.uint8))
    with pytest.warns(UserWarning, match=r"holds \d+ pixel\(s\) above 1; the 'bernoulli' "
                      r"likelihood models whether a pixel is > 0.*x / 255"):
        _build(he, tm.Modality("bernoulli", obsm_key="patch"))
    with pytest.raises(ValueError, match=r"needs data in \[0, 1\] \(e\.g\. images normalised "
                       r"per nucleus; 8-bit images: divide by 255\)"):
        _build(he, tm.Modality("continuous_bernoulli", obsm_key="patch"))
    with pytest.warns(UserWarning, match=r"intensities up to 255, and image modalities are not "
                      r"standardised by default.*Pass scale=True"):
        _build(he, tm.Modality("gaussian", obsm_key="patch"))
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        _build(he, tm.Modality("gaussian", obsm_key="patch", scale=True))
        _build(_spots(he.obsm["patch"] / np.float32(255)), tm.Modality("gaussian", obsm_key="patch"))
    assert not [w for w in told if "intensit" in str(w.message)]
    # no advice where it does not apply: a mask stored as 0 / 255, crops standardised per
    # crop (signed), cells given to a built model (its options are fixed)
    mask = _spots((rng.random((40, 1, 8, 8)) > 0.5).astype(np.uint8) * np.uint8(255))
    zscored = rng.normal(size=(40, 1, 8, 8)).astype(np.float32)
    zscored[:, :, 4, 4] = 15.0
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        _build(mask, tm.Modality("bernoulli", obsm_key="patch"))
        _build(_spots(zscored), tm.Modality("gaussian", obsm_key="patch"))
        model = _build(he, tm.Modality("gaussian", obsm_key="patch"))
        told.clear()
        model.get_latent_representation("img", he)
    assert not [w for w in told if "intensit" in str(w.message)]
    # ... but raw intensities with a few negative pixels (background subtracted) are raw, and
    # photon counts 0 / 1 / 2 are intensities
    raw = he.obsm["patch"].astype(np.float32)
    raw[:, 0, 0, 0] = -3.0
    with pytest.warns(UserWarning, match="intensities up to 255"):
        _build(_spots(raw), tm.Modality("gaussian", obsm_key="patch"))
    with pytest.warns(UserWarning, match=r"pixel\(s\) above 1; the 'bernoulli'"):
        _build(_spots(rng.integers(0, 3, (40, 1, 8, 8)).astype(np.float32)),
               tm.Modality("bernoulli", obsm_key="patch"))
    wide = _spots(he.obsm["patch"].astype(np.int64))  # (8-bit values in a wide type)
    with pytest.raises(ValueError, match=r"divide the images by their maximum, here at least 255"):
        _build(wide, tm.Modality("continuous_bernoulli", obsm_key="patch"))
    with pytest.raises(ValueError, match=r"an empty image shape \(3, 8, 0\)"):
        _build(_spots(np.zeros((40, 3, 8, 0), np.float32)),
               tm.Modality("continuous_bernoulli", obsm_key="patch"))
    grey = _spots(rng.random((40, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"has 3 dimensions; .*grey images \(cells x H x W\) need "
                       r"their channel axis: obsm\['patch'\] = x\[:, None\]"):
        _build(grey, tm.Modality("continuous_bernoulli", obsm_key="patch"))


def test_image_entries_outside_their_place_are_named(tmp_path):
    """Patches in a MuData's own obsm (not a modality's) and translated images under another
    key than "crops" are named with the way to reach them; a model loads with an image
    modality given as None, as when left out."""
    import mudata

    rng = np.random.default_rng(0)
    spots = _spots(rng.random((40, 1, 8, 8), dtype=np.float32))
    mdata = mudata.MuData({"rna": spots})
    mdata.obsm["patch"] = spots.obsm["patch"]
    specs = {"rna": tm.Modality("nb"), "img": tm.Modality("continuous_bernoulli", obsm_key="patch")}
    with pytest.raises(ValueError, match=r"modality 'img' has a spec but no data; .* \(the MuData's "
                       r"own obsm\['patch'\] is not a modality: put it in an AnnData of its own"):
        tm.CrossModalAE(mdata, specs)
    model = _build(spots, specs["img"])
    model.save(tmp_path / "m")
    loaded = tm.CrossModalAE.load(tmp_path / "m", {"rna": spots, "img": None})
    images = loaded.translate(spots, source="rna", target="img")
    with pytest.raises(ValueError, match=r"obsm\['crops'\] not found \(keys: \['patch'\]\); pass "
                       r"crops_key='patch'"):
        tm.images.radial_profiles(images)
    images.obsm["masks"] = images.obsm["patch"][:, 0] > 0.5  # (masks are no crops to name)
    del images.obsm["patch"]
    with pytest.raises(ValueError, match=r"not found \(keys: \['masks'\]\)$"):
        tm.images.radial_profiles(images)
    # a misspelt modality given as None is refused, not taken as left out
    with pytest.raises(ValueError, match="data holds modality 'imgg', which the model does not"):
        tm.CrossModalAE.load(tmp_path / "m", {"rna": spots, "imgg": None})
