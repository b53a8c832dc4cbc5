"""What the CLI (cli/_commands.py, cli/_config.py), image files and radial profiles
(images/_files.py, images/_radial.py) and the default pseudo-pairs (model/_priors.py) do,
pinned down. Found by mutation testing (round 8): each test fails on a change of the code
that the rest of the suite let pass."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

import transmodal as tm


# images/_radial.py: a shell of width w is an erosion step (distances in ((k-1)w, kw])
def test_shell_width_bands_take_their_upper_edge():
    from transmodal.images import radial_profile

    mask = np.zeros((14, 40), bool)
    mask[1:13, 1:39] = True  # a rectangle: every distance to the outside is an integer
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    rng = np.random.default_rng(0)
    image = rng.uniform(0.5, 2.0, mask.shape)
    shuffled = image.copy()
    for k in (1, 2, 3):  # bands (0, 2], (2, 4], (4, 6]: permuting within one keeps its mean
        band = mask & (dist > 2 * (k - 1)) & (dist <= 2 * k)
        shuffled[band] = rng.permutation(image[band])
    a = radial_profile(image, mask, shell_width=2)
    b = radial_profile(shuffled, mask, shell_width=2)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert not np.allclose(a, radial_profile(shuffled, mask))  # (one shell per distance differs)


# model/_priors.py: default shape-based pseudo-pairs need >= 100 training cells per modality
@pytest.mark.parametrize("n_cells, expected", [(99, False), (100, True)])
def test_default_pseudo_pairs_need_100_training_cells(monkeypatch, n_cells, expected):
    import transmodal as tm
    import transmodal.model._priors as priors

    calls = []

    def fake_pairs(xa, xb, sources, seed, label):  # (the geometry itself is tested elsewhere)
        calls.append(sources)
        return np.arange(3), np.arange(3)

    monkeypatch.setattr(priors, "_pseudo_pairs", fake_pairs)
    d = tm.datasets.synthetic(n_cells, modalities={"a": "gaussian", "b": "gaussian"},
                              n_features={"a": 12, "b": 10}, paired=False, seed=0)
    mods = {"a": tm.Modality("gaussian"), "b": tm.Modality("gaussian")}
    model = tm.CrossModalAE({"a": d["a"], "b": d["b"]}, mods, n_latent=4, hidden=(8,),
                            validation_fraction=0, seed=0)
    assert [int((~m).sum()) for m in model.val_masks_.values()] == [n_cells, n_cells]
    assert ("a|b" in model.geometric_pairs_) is expected
    if expected:  # the default source: the overlay and the landmark transport
        assert calls == [["overlay", "transport"]]


# model/_priors.py: a failed landmark transport alone is a ValueError with the solver's reason
def test_failed_transport_alone_raises_its_reason(monkeypatch):
    import warnings

    import transmodal.model._priors as priors

    def failing(xa, xb, seed=0):
        raise RuntimeError("solver diverged at every epsilon")

    monkeypatch.setattr(priors, "transport_pairs", failing)
    x = np.random.default_rng(0).normal(size=(30, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overlay's pseudo-pairs alone" warning: none exist
        with pytest.raises(ValueError, match="solver diverged at every epsilon"):
            priors._pseudo_pairs(x, x, ["transport"], 0, "geometric_pairs between 'a' and 'b'")


# images/_radial.py: a nucleus with no positive intensity gets an all-NaN profile
def test_radial_profile_of_negative_intensities_is_nan():
    from transmodal.images import radial_profile

    mask = np.zeros((12, 12), bool)
    mask[2:10, 2:10] = True
    image = -np.arange(144, dtype=float).reshape(12, 12) - 1.0
    assert np.isnan(radial_profile(image, mask)).all()
    assert np.isnan(radial_profile(np.zeros((12, 12)), mask)).all()


# images/_radial.py: shell_width and n_bins must be positive
@pytest.mark.parametrize("kw", [{"shell_width": 0}, {"shell_width": 0.0}, {"n_bins": 0}])
def test_radial_profile_refuses_zero_width_or_bins(kw):
    from transmodal.images import radial_profile, shell_names

    mask = np.zeros((12, 12), bool)
    mask[2:10, 2:10] = True
    with pytest.raises(ValueError):
        radial_profile(np.ones((12, 12)), mask, **kw)
    if "n_bins" in kw:
        with pytest.raises(ValueError, match="positive integer"):
            shell_names(0)


# images/_radial.py: channel counts from the end too, down to -n_channels
def test_radial_profiles_take_the_first_channel_as_minus_n():
    import anndata as ad

    from transmodal.images import radial_profiles

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:16, :16]
    disc = (yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 36
    crops = rng.uniform(0.1, 1.0, size=(3, 2, 16, 16)).astype(np.float32)
    masks = np.repeat(disc[None], 3, axis=0)
    adata = ad.AnnData(X=np.zeros((3, 1), np.float32), obsm={"crops": crops, "masks": masks})
    first = radial_profiles(adata, channel=0)
    minus = radial_profiles(adata, channel=-2)
    np.testing.assert_array_equal(first.X, minus.X)
    assert not np.array_equal(first.X, radial_profiles(adata, channel=1).X)
    with pytest.raises(ValueError, match="out of range"):
        radial_profiles(adata, channel=-3)


# images/_radial.py: the spacing read_nuclei recorded, used only where it fits and is not all 1
def test_recorded_spacing_of_another_rank_or_all_ones_is_none():
    import anndata as ad

    from transmodal.images._radial import recorded_spacing

    def with_spacing(value):
        a = ad.AnnData(X=np.zeros((2, 1), np.float32))
        a.uns["crops"] = {"spacing": value}
        return a

    assert recorded_spacing(with_spacing([1.0, 1.0]), 2) is None
    assert recorded_spacing(with_spacing([2.0, 0.5, 0.5]), 2) is None  # a 3-D spacing
    assert recorded_spacing(with_spacing([2.0, 0.5]), 2) == (2.0, 0.5)
    with pytest.raises(ValueError, match="uns\\['crops'\\]\\['spacing'\\]"):
        recorded_spacing(with_spacing([0.0, 1.0]), 2)


# cli/_config.py: YAML 1.2 booleans only (yes stays a string), duplicate keys refused,
# a .JSON suffix (any case) read as JSON
def test_config_yaml_yes_is_a_string_and_duplicates_are_refused(tmp_path):
    from transmodal.cli._config import ConfigError, read_config_file

    p = tmp_path / "c.yaml"
    p.write_text("subset: {obs_key: qc, value: yes}\nout: on\nflag: true\n")
    raw = read_config_file(p)
    assert raw["subset"]["value"] == "yes" and raw["out"] == "on" and raw["flag"] is True
    p.write_text("out: a\nmodel:\n  n_latent: 4\n  n_latent: 8\n")
    with pytest.raises(ConfigError, match="duplicate key 'n_latent'"):
        read_config_file(p)
    j = tmp_path / "c.JSON"
    j.write_text('{"out": "a", "out": "b"}')
    with pytest.raises(ConfigError, match="invalid JSON"):
        read_config_file(j)


# images/_radial.py: a crop with exactly 5 % exact zeros has a zero background (mask: > 0)
def test_segment_crops_zero_background_from_exactly_five_percent():
    from transmodal.images._radial import segment_crops

    rng = np.random.default_rng(2)
    crop = rng.uniform(0.2, 1.0, size=(20, 20))
    crop[:1, :] = 0.0  # 20 of 400 pixels: exactly 5 %
    crop[8:12, 8:12] = 0.05  # dim but positive inside: kept by "> 0", not by Otsu
    masks, n_segmented = segment_crops(crop[None])
    assert n_segmented == 0
    np.testing.assert_array_equal(masks[0], crop > 0)


# cli/_config.py: "|" splits an annotation only outside brackets
def test_config_annotation_union_splits_at_top_level_only():
    from transmodal.cli._config import _split_union

    assert _split_union("int | list[int | str] | None") == ["int", "list[int | str]", "None"]


def _config(tmp_path, text):
    from transmodal.cli._config import load_config

    for name in ("a.h5ad", "b.h5ad"):
        (tmp_path / name).touch()  # (load_config only checks that the files exist)
    p = tmp_path / "run.yaml"
    p.write_text("data: {rna: a.h5ad, prot: b.h5ad}\n"
                 "modalities: {rna: {likelihood: nb}, prot: {likelihood: gaussian}}\n" + text)
    return load_config(p)


# cli/_config.py: the documented checks of model / runs / subset values
@pytest.mark.parametrize("text, match", [
    ("model: {n_latent: true}\n", "n_latent"),  # a boolean is no integer
    ("model: {dropout: true}\n", "dropout"),  # nor a number
    ("runs: {seeds: [true, 2]}\n", "seeds"),  # booleans are no seeds
    ("runs: {seeds: [0, 1], k: true}\n", "'k'"),
    ("runs: {seeds: [3]}\n", "seeds"),
    ("runs: {seeds: [1, 1]}\n", "seeds"),
    ("runs: {seeds: [0, 9223372036854775808]}\n", "seeds"),  # 2**63
    ("runs: {seeds: [0, 1], k: 0}\n", "'k'"),
    ("runs: {seeds: [0, 1]}\ntrain: {checkpoint_dir: ck}\n", "checkpoint_dir"),
    ("runs: {seeds: [0, 1]}\nmodel: {seed: 3}\n", "seed"),
    ("subset: {obs_key: split, value: [a, null]}\n", "value"),
    ("subset: {obs_key: '', value: a}\n", "obs_key"),
])
def test_config_refuses_invalid_values(tmp_path, text, match):
    from transmodal.cli._config import ConfigError

    with pytest.raises(ConfigError, match=match):
        _config(tmp_path, text)


def test_config_runs_defaults_and_subset_as_given(tmp_path):
    cfg = _config(tmp_path, "runs: {seeds: [0, 1]}\nsubset: {obs_key: split, value: a}\n")
    assert cfg.runs == {"seeds": [0, 1], "combine": "consensus", "k": 50}
    assert cfg.subset == {"obs_key": "split", "value": "a"}
    assert cfg.to_dict()["subset"] == {"obs_key": "split", "value": "a"}
    assert cfg.model_params["n_latent"] == 32  # defaults included
    # an annotation the checks do not understand (list[str]) is left to the model
    assert _config(tmp_path, "model: {marker_key: [m1, m2]}\n").model["marker_key"] == [
        "m1", "m2"]


def test_config_needs_two_modalities(tmp_path):
    from transmodal.cli._config import ConfigError, load_config

    (tmp_path / "a.h5ad").touch()
    p = tmp_path / "run.yaml"
    p.write_text("data: {rna: a.h5ad}\nmodalities: {rna: {likelihood: nb}}\n")
    with pytest.raises(ConfigError, match="at least two modalities"):
        load_config(p)


# images/_radial.py: a constant crop without zeros is not segmented (its mask: > 0)
def test_segment_crops_leaves_a_constant_crop_whole():
    from transmodal.images._radial import segment_crops

    crops = np.full((1, 10, 10), 0.7)
    masks, n_segmented = segment_crops(crops)
    assert n_segmented == 0 and masks.all()
    # nor is a crop without any finite pixel (it has no nucleus)
    masks, n_segmented = segment_crops(np.full((1, 10, 10), np.nan))
    assert n_segmented == 0 and not masks.any()


def _unpaired(n=120, seed=0):
    import transmodal as tm

    d = tm.datasets.synthetic(n, modalities={"a": "gaussian", "b": "gaussian"},
                              n_features={"a": 12, "b": 10}, paired=False, seed=seed)
    return d["a"], d["b"], {"a": tm.Modality("gaussian"), "b": tm.Modality("gaussian")}


def _fake_pairs(monkeypatch):
    import transmodal.model._priors as priors

    monkeypatch.setattr(priors, "_pseudo_pairs",
                        lambda xa, xb, sources, seed, label: (np.arange(3), np.arange(3)))


# model/_priors.py: unlabelled cells are no shared class; a marker_key is prior knowledge
def test_default_pseudo_pairs_beside_unlabelled_cells_and_markers(monkeypatch):
    import transmodal as tm

    _fake_pairs(monkeypatch)
    a, b, mods = _unpaired()
    a.obs["cls"] = ["A"] * 100 + [None] * 20  # classes in common: none (unlabelled aside)
    b.obs["cls"] = ["B"] * 100 + [None] * 20
    kw = dict(n_latent=4, hidden=(8,), validation_fraction=0, seed=0)
    with pytest.warns(UserWarning, match="modalities share no label class"):
        model = tm.CrossModalAE({"a": a, "b": b}, mods, labels_key="cls", **kw)
    assert "a|b" in model.geometric_pairs_
    rng = np.random.default_rng(0)
    a.obs["m"], b.obs["m"] = rng.normal(size=120), rng.normal(size=120)
    marked = tm.CrossModalAE({"a": a, "b": b}, mods, marker_key="m", **kw)
    assert marked.geometric_pairs_ == {}


# model/_priors.py: anchor pairs count from MIN_TRAINING_BATCH pairs on
def test_usable_anchors_start_at_min_training_batch():
    from types import SimpleNamespace

    from transmodal.data._batches import MIN_TRAINING_BATCH
    from transmodal.model._priors import PriorsMixin

    n = MIN_TRAINING_BATCH
    fake = SimpleNamespace(anchors_={"a|b": (np.arange(n), np.arange(n)),
                                     "a|c": (np.arange(n - 1), np.arange(n - 1))})
    assert PriorsMixin._usable_anchors(fake) == {"a|b"}


# cli/_commands.py: output files are checked before any data are read
def test_cli_output_checks(tmp_path):
    from transmodal.cli._commands import _check_not_an_input, _check_output

    with pytest.raises(ValueError, match="written as .h5ad"):
        _check_output(tmp_path / "x.csv", overwrite=True, suffix=".h5ad")
    existing = tmp_path / "x.h5ad"
    existing.write_text("")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _check_output(existing, overwrite=False, suffix=".h5ad")
    _check_output(existing, overwrite=True, suffix=".H5AD".lower())
    with pytest.raises(ValueError, match="is the file of --data rna"):
        _check_not_an_input(existing, {"rna": existing})
    _check_not_an_input(tmp_path / "new.h5ad", {"rna": existing})


# cli/_commands.py: --data NAME=PATH parsing
def test_cli_parse_data_args(tmp_path):
    from pathlib import Path

    from transmodal.cli._commands import parse_data_args

    assert parse_data_args(["rna=a.h5ad", " atac = b.h5ad "], ["rna", "atac"]) == {
        "rna": Path("a.h5ad"), "atac": Path("b.h5ad")}
    with pytest.raises(ValueError, match="'rna' given twice"):
        parse_data_args(["rna=a.h5ad", "rna=b.h5ad"], ["rna", "atac"])
    for bad in ("a.h5ad", "=a.h5ad", "rna="):
        with pytest.raises(ValueError, match="expected NAME=PATH.h5ad"):
            parse_data_args([bad], ["rna"])


# cli/_commands.py: a checkpoint_dir may neither hold nor lie in the output directory
def test_cli_checkpoint_dir_apart_from_the_output(tmp_path):
    from types import SimpleNamespace

    from transmodal.cli._commands import _checkpoint_to_resume
    from transmodal.cli._config import ConfigError

    def cfg(ckpt):
        return SimpleNamespace(train={"checkpoint_dir": str(ckpt)}, path="run.yaml")

    for ckpt, out in ((tmp_path / "o", tmp_path / "o"), (tmp_path / "o" / "ck", tmp_path / "o"),
                      (tmp_path / "ck", tmp_path / "ck" / "o")):
        with pytest.raises(ConfigError, match="is, holds or lies in the output"):
            _checkpoint_to_resume(cfg(ckpt), out, resume=False)
    assert _checkpoint_to_resume(cfg(tmp_path / "ck2"), tmp_path / "o2", resume=True) is None
    with pytest.raises(ConfigError, match="--resume needs train: checkpoint_dir"):
        _checkpoint_to_resume(SimpleNamespace(train={}, path="run.yaml"), tmp_path, resume=True)


# cli/_commands.py: --data must cover every modality unless told which are used
def test_cli_data_args_cover_the_model(tmp_path):
    from transmodal.cli._commands import _check_data_args

    f = tmp_path / "a.h5ad"
    f.write_text("")
    with pytest.raises(ValueError, match="every modality it has.*missing: atac"):
        _check_data_args({"rna": f}, ["rna", "atac"], tmp_path)
    _check_data_args({"rna": f}, ["rna", "atac"], tmp_path, ["rna"])
    with pytest.raises(ValueError, match="'prot' is not in the model"):
        _check_data_args({"rna": f, "prot": f}, ["rna", "atac"], tmp_path, ["rna"])


# cli/_commands.py: argument checks that come before any model is read
def test_cli_embed_key_and_demo_epochs(tmp_path):
    from transmodal.cli._commands import cmd_demo, cmd_embed

    for key in ("", "a/b", "  "):
        with pytest.raises(ValueError, match="--key"):
            cmd_embed(str(tmp_path / "none"), [], str(tmp_path / "o"), key=key)
    with pytest.raises(ValueError, match="--max-epochs must be >= 1"):
        cmd_demo(str(tmp_path / "demo"), max_epochs=0)


# images/_files.py: channel axis choice and channel index range
def test_to_channels_first_axes_and_channel_range():
    from transmodal.images._files import to_channels_first

    img = np.arange(2 * 4 * 5).reshape(4, 5, 2)  # channels last
    out = to_channels_first(img, (4, 5))
    np.testing.assert_array_equal(out, np.moveaxis(img, -1, 0))
    # (4, 4, 4) over a (4, 4) mask fits on any axis: refused unless told
    with pytest.raises(ValueError, match="channel_axis="):
        to_channels_first(np.zeros((4, 4, 4)), (4, 4))
    # a negative channel_axis counts in the file's axes, singleton ones included
    img4 = np.arange(2 * 4 * 5).reshape(1, 2, 4, 5)
    np.testing.assert_array_equal(to_channels_first(img4, (4, 5), channel_axis=-3), img4[0])
    chans = np.stack([np.full((4, 5), k) for k in range(3)])
    assert to_channels_first(chans, (4, 5), channels=[-3])[0, 0, 0] == 0
    with pytest.raises(ValueError, match="out of range"):
        to_channels_first(chans, (4, 5), channels=[3])
    with pytest.raises(ValueError, match="out of range"):
        to_channels_first(chans, (4, 5), channels=[-4])


# images/_files.py: a binary mask stored as integers is refused from two big pieces on
def test_refuse_binary_counts_pieces_of_min_size():
    from transmodal.images._files import refuse_binary

    labels = np.zeros((10, 20), np.uint16)
    labels[1:4, 1:4] = 65535  # 9 pixels
    labels[6:9, 10:13] = 65535  # 9 pixels
    with pytest.raises(ValueError, match="binary mask"):
        refuse_binary(labels, "m.tif", min_size=9)
    refuse_binary(labels, "m.tif", min_size=10)  # pieces below min_size: not nuclei
    labels[6:9, 10:13] = 1  # two ids: an instance label image
    refuse_binary(labels, "m.png", min_size=1)


# images/_files.py: find_pairs input forms and their errors
def test_find_pairs_forms_and_errors(tmp_path):
    from transmodal.images._files import find_pairs

    for sub in ("images", "labels", "masks"):
        (tmp_path / sub).mkdir()
    for name in ("x.PNG", "y.tif"):
        (tmp_path / "images" / name).write_bytes(b"")
        (tmp_path / "labels" / name).write_bytes(b"")
    pairs = find_pairs(tmp_path)
    assert [(i, m.parent.name) for i, _, m in pairs] == [("x", "labels"), ("y", "labels")]
    with pytest.raises(ValueError, match="one id per image"):
        find_pairs([(tmp_path / "a.png", tmp_path / "b.png")], image_ids="a")
    with pytest.raises(ValueError, match="differ in length"):
        find_pairs([tmp_path / "a.png", tmp_path / "b.png"], [tmp_path / "m.png"])
    with pytest.raises(ValueError, match="duplicate image id 'a'"):
        find_pairs([(tmp_path / "a.png", tmp_path / "m.png"), (tmp_path / "d" / "a.png",
                                                              tmp_path / "n.png")])
    (tmp_path / "images" / "x.tiff").write_bytes(b"")
    with pytest.raises(ValueError, match="two files with image id 'x'"):
        find_pairs(tmp_path)
    (tmp_path / "images" / "x.tiff").unlink()
    (tmp_path / "images" / "z.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no mask in"):
        find_pairs(tmp_path)


# images/_radial.py: a nucleus without any finite pixel gets NaN; settings record spacing 1
def test_radial_profiles_without_finite_pixels_and_default_spacing():
    import warnings

    from transmodal.images import radial_profile, radial_profiles

    mask = np.zeros((12, 12), bool)
    mask[2:10, 2:10] = True
    image = np.where(mask, np.nan, 1.0)
    assert np.isnan(radial_profile(image, mask)).all()
    labels = mask.astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = radial_profiles(np.where(mask, np.inf, 0.0), labels)
    assert np.isnan(out.X).all()
    out = radial_profiles(np.ones((12, 12)), labels)
    assert out.uns["radial"]["spacing"] == [1.0, 1.0]
    assert out.uns["radial"]["shell_width"] == "per distance value"


# images/_files.py (to_channels_first): channel_axis=-ndim (the first axis, counted from the
# end) is in range: a (3, 1, H, W) image given channel_axis=-4 has its 3 channels on axis 0
def test_channel_axis_minus_ndim_is_the_first_axis():
    from transmodal.images._files import to_channels_first

    img = np.arange(3 * 1 * 4 * 5, dtype=float).reshape(3, 1, 4, 5)
    np.testing.assert_array_equal(to_channels_first(img, (4, 5), channel_axis=-4), img[:, 0])
    with pytest.raises(ValueError, match="out of range for 4 axes"):
        to_channels_first(img, (4, 5), channel_axis=-5)


# model/_priors.py (_use_geometry): anchors that chain every modality are prior knowledge:
# the default pseudo-pairs stay off silently (no "geometric_pairs=None has no effect" warning)
def test_default_pseudo_pairs_off_without_warning_beside_anchors_of_every_modality():
    import warnings

    d = tm.datasets.synthetic(300, modalities={"a": "gaussian", "b": "gaussian"},
                              n_features={"a": 12, "b": 10}, seed=0)
    mods = {"a": tm.Modality("gaussian"), "b": tm.Modality("gaussian")}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model = tm.CrossModalAE(d, mods, n_latent=4, hidden=(8,), anchor_fraction=0.2, seed=0)
    assert model.anchors_ and model.geometric_pairs_ == {}
    assert not [w for w in seen if "geometric_pairs" in str(w.message)], \
        [str(w.message) for w in seen]


# cli/_commands.py (_subset_mask): subset values match obs values by their text too, so a
# YAML number selects string IDs ("1") and a string selects integer codes
def test_config_subset_value_matches_obs_values_by_text():
    import pandas as pd

    from transmodal.cli._commands import _subset_mask

    obs = pd.DataFrame({"donor": ["1", "2", "1", "3"], "plate": [7, 8, 7, 9]})
    np.testing.assert_array_equal(_subset_mask(obs, "donor", 1, "m"), [True, False, True, False])
    np.testing.assert_array_equal(_subset_mask(obs, "plate", "7", "m"), [True, False, True, False])
    np.testing.assert_array_equal(_subset_mask(obs, "donor", [2, "3"], "m"),
                                  [False, True, False, True])


# cli/_commands.py (cmd_train): an existing output directory is refused before any data are
# read (not after the training)
def test_train_refuses_an_existing_output_before_reading_data(tmp_path):
    from test_cli import _config, _write_config
    from transmodal.cli._commands import cmd_train

    (tmp_path / "model").mkdir()
    for name in ("rna", "atac"):  # not HDF5: reading them would fail
        (tmp_path / f"{name}.h5ad").write_text("not an h5ad file")
    cfg = _write_config(tmp_path / "run.yaml", _config(tmp_path))
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        cmd_train(str(cfg))


def _g_fake_pseudo_pairs(monkeypatch):
    import transmodal.model._priors as priors

    monkeypatch.setattr(priors, "_pseudo_pairs",
                        lambda xa, xb, sources, seed, label: (np.arange(3), np.arange(3)))


def _g_gaussian(names, seed):
    import anndata as ad
    import pandas as pd

    x = np.random.default_rng(seed).normal(size=(len(names), 8)).astype(np.float32)
    return ad.AnnData(X=x, obs=pd.DataFrame(index=list(names)))


# model/_priors.py (_geometric_pairs): by default, pseudo-pairs only between modalities that
# no chain of anchors links: a|b and b|c anchored, d alone -> a|d, b|d, c|d (not a|c, which
# the chain through b ties)
def test_default_pseudo_pairs_skip_modalities_chained_through_a_third(monkeypatch):
    _g_fake_pseudo_pairs(monkeypatch)
    b = [f"x{i}" for i in range(120)]
    names = {"a": b[:60] + [f"a{i}" for i in range(60)], "b": b,
             "c": b[60:] + [f"c{i}" for i in range(60)], "d": [f"d{i}" for i in range(120)]}
    data = {n: _g_gaussian(v, k) for k, (n, v) in enumerate(names.items())}
    mods = {n: tm.Modality("gaussian") for n in data}
    model = tm.CrossModalAE(data, mods, n_latent=4, hidden=(8,), validation_fraction=0,
                            anchor_fraction=1.0, seed=0)
    assert sorted(model.anchors_) == ["a|b", "b|c"]
    assert sorted(model.geometric_pairs_) == ["a|d", "b|d", "c|d"]


def _g_cli_workdir(tmp_path):
    from test_cli import _simulate

    for name, adata in _simulate().items():
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
    return tmp_path


# cli/_commands.py (cmd_train --resume): a config's train: pretrain_epochs is the stopped
# run's schedule, not passed on to resume_training (which refuses it): the run goes on
def test_train_resume_with_pretrain_epochs_in_the_config(tmp_path, capsys):
    from test_cli import _config, _write_config
    from transmodal.cli import main

    work = _g_cli_workdir(tmp_path)
    cfg = _config(work, out="m")
    cfg["train"].update(checkpoint_dir="ck", checkpoint_every=1, pretrain_epochs=0, max_epochs=1)
    assert main(["train", "--config", str(_write_config(work / "r.yaml", cfg))]) == 0
    cfg["train"]["max_epochs"] = 2
    assert main(["train", "--config", str(_write_config(work / "r.yaml", cfg)),
                 "--overwrite", "--resume"]) == 0, capsys.readouterr().err
    assert list(tm.CrossModalAE.load(work / "m").history.index) == [0, 1]


# cli/_commands.py (cmd_train): train: progress_bar: false also turns off the progress bar
# of the model's construction (construction_bars(False))
def test_train_progress_bar_false_reaches_the_construction(tmp_path, monkeypatch):
    import contextlib

    import transmodal.model._priors as priors
    from test_cli import _config, _write_config
    from transmodal.cli._commands import cmd_train

    shown = []

    class _GStop(Exception):
        pass

    @contextlib.contextmanager
    def record(show):
        shown.append(show)
        raise _GStop  # (the construction itself is not needed)
        yield

    monkeypatch.setattr(priors, "construction_bars", record)
    work = _g_cli_workdir(tmp_path)
    for bar in (False, True):
        cfg = _config(work, out=f"m{bar}")
        cfg["train"]["progress_bar"] = bar
        with pytest.raises(_GStop):
            cmd_train(str(_write_config(work / "r.yaml", cfg)))
    assert shown == [False, True]


# model/_priors.py (_pair_features): the pseudo-pairs use at most max_cells training cells
# (max_values numbers) of each modality, but never fewer than 100 (wide inputs); all of
# them where there are fewer than that
def test_pseudo_pair_features_subsample_to_the_cap_but_not_below_100_cells():
    from types import SimpleNamespace

    d = tm.datasets.synthetic(150, modalities={"a": "gaussian", "b": "gaussian"},
                              n_features={"a": 12, "b": 10}, paired=False, seed=0)
    mods = {"a": tm.Modality("gaussian"), "b": tm.Modality("gaussian")}
    m = tm.CrossModalAE({"a": d["a"], "b": d["b"]}, mods, n_latent=4, hidden=(8,),
                        validation_fraction=0, geometric_pairs=False, seed=0)
    bar = SimpleNamespace(set_postfix_str=lambda *a, **k: None, update=lambda *a: None)
    train = {n: ~v for n, v in m.val_masks_.items()}

    def sizes(**kw):
        feats = m._pair_features(train, np.random.default_rng(0), bar, **kw)
        return {n: len(v[0]) for n, v in feats.items()}

    assert sizes(max_cells=20_000, max_values=12 * 50) == {"a": 100, "b": 100}
    assert sizes(max_cells=120, max_values=10**9) == {"a": 120, "b": 120}
    assert sizes(max_cells=20_000, max_values=10**9) == {"a": 150, "b": 150}


# model/_priors.py (_set_marker_scale): marker mean / sd in float64: values ~1e20, whose
# float32 squares overflow, still give a finite sd (not a "not a finite float32" refusal)
def test_marker_sd_of_values_near_1e20_is_finite():
    d = tm.datasets.synthetic(60, modalities={"a": "gaussian", "b": "gaussian"},
                              n_features={"a": 12, "b": 10}, seed=0)
    rng = np.random.default_rng(0)
    for a in d.values():
        a.obs["m"] = rng.normal(size=a.n_obs) * 1e20
    mods = {"a": tm.Modality("gaussian"), "b": tm.Modality("gaussian")}
    model = tm.CrossModalAE(d, mods, n_latent=4, hidden=(8,), marker_key="m",
                            validation_fraction=0, anchor_fraction=0, seed=0)
    values = np.concatenate([a.obs["m"].to_numpy(np.float32) for a in d.values()])
    np.testing.assert_allclose(model.module.marker_std.item(), values.astype(np.float64).std(),
                               rtol=1e-4)


def _g_saved_model(tmp_path, modalities=None):
    """The CLI tests' data written to tmp_path, and an (untrained) model saved to
    tmp_path / "model" with the CLI config's settings."""
    from test_cli import _simulate

    data = _simulate()
    for name, adata in data.items():
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
    mods = modalities or {"rna": tm.Modality("nb"), "atac": tm.Modality("poisson")}
    model = tm.CrossModalAE(data, mods, n_latent=4, hidden=[16], labels_key="label",
                            validation_fraction=0.2, anchor_fraction=0, seed=0)
    model.save(tmp_path / "model")
    return tmp_path / "model"


# cli/_commands.py (_check_resumed_settings): a checkpoint whose modalities come in another
# order than the config's is another run's: --resume refuses it
def test_resume_refuses_a_checkpoint_with_the_modalities_in_another_order(tmp_path):
    from test_cli import _config, _write_config
    from transmodal.cli._commands import _check_resumed_settings
    from transmodal.cli._config import ConfigError, load_config

    ckpt = _g_saved_model(tmp_path, {"atac": tm.Modality("poisson"), "rna": tm.Modality("nb")})
    cfg = _config(tmp_path, out="m")
    cfg["train"]["checkpoint_dir"] = "model"
    loaded = load_config(_write_config(tmp_path / "r.yaml", cfg))
    with pytest.raises(ConfigError, match=r"modalities \['rna', 'atac'\] \(checkpoint: "
                                          r"\['atac', 'rna'\]\)"):
        _check_resumed_settings(loaded, ckpt)


# cli/_commands.py (cmd_embed): without --modality, an --out ending in .h5mu (as .h5ad) is
# refused, not made a directory of NAME.h5ad files
def test_embed_without_modality_refuses_an_h5mu_out(tmp_path):
    from transmodal.cli._commands import cmd_embed

    model = _g_saved_model(tmp_path)
    data = [f"rna={tmp_path / 'rna.h5ad'}", f"atac={tmp_path / 'atac.h5ad'}"]
    for out in ("emb.h5mu", "emb.H5AD"):
        with pytest.raises(ValueError, match="without --modality every modality is embedded"):
            cmd_embed(str(model), data, str(tmp_path / out))
        assert not (tmp_path / out).exists()


# cli/_commands.py (cmd_translate): --library-size 0 is refused by the CLI's own check,
# before any data are read
def test_translate_refuses_library_size_zero_before_reading_data(tmp_path):
    from transmodal.cli._commands import cmd_translate

    model = _g_saved_model(tmp_path)
    (tmp_path / "bad.h5ad").write_text("not an h5ad file")
    for size in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="--library-size must be a positive number"):
            cmd_translate(str(model), [f"rna={tmp_path / 'bad.h5ad'}"], "rna", "atac",
                          str(tmp_path / "t.h5ad"), library_size=size)


# cli/_commands.py (cmd_evaluate): --source == --target is refused first, before the data
# are checked (the error names the options)
def test_evaluate_refuses_the_same_source_and_target_first(tmp_path):
    from transmodal.cli._commands import cmd_evaluate

    model = _g_saved_model(tmp_path)
    with pytest.raises(ValueError, match="--source and --target must differ, both are 'rna'"):
        cmd_evaluate(str(model), [f"rna={tmp_path / 'rna.h5ad'}"], "rna", "rna")


# cli/_commands.py (cmd_evaluate): inputs that share a single cell name cannot be scored as
# pairs (two at least): with labels they are scored as cells measured apart
def test_evaluate_one_shared_cell_is_scored_by_labels(tmp_path, capsys):
    import anndata as ad

    from transmodal.cli._commands import cmd_evaluate

    model = _g_saved_model(tmp_path)
    atac = ad.read_h5ad(tmp_path / "atac.h5ad")
    atac.obs_names = [n if i == 0 else f"x{i}" for i, n in enumerate(atac.obs_names)]
    atac.write_h5ad(tmp_path / "atac1.h5ad")
    with pytest.warns(UserWarning, match="untrained model"):  # (as saved: a small stand-in)
        assert cmd_evaluate(str(model), [f"rna={tmp_path / 'rna.h5ad'}",
                                         f"atac={tmp_path / 'atac1.h5ad'}"], "rna", "atac") == 0
    res = capsys.readouterr()
    assert "share 1 cell name(s): scored as cells measured apart" in res.err
    assert "label_transfer_rna_to_atac" in res.out and "foscttm" not in res.out


# model/_priors.py: labels whose every labelled cell is a validation cell act on nothing
def test_labels_only_on_validation_cells_warn():
    d = tm.datasets.synthetic(60, modalities={"a": "gaussian", "b": "gaussian"},
                              n_features={"a": 12, "b": 10}, seed=0)
    mods = {"a": tm.Modality("gaussian"), "b": tm.Modality("gaussian")}
    kw = dict(n_latent=4, hidden=(8,), geometric_pairs=False, anchor_fraction=0, seed=0)
    split = tm.CrossModalAE(d, mods, **kw).val_masks_  # (the labels leave the split as is)
    for n in d:
        d[n].obs["cls"] = pd.Categorical(np.where(split[n], "x", None), categories=["x"])
    with pytest.warns(UserWarning, match=r"labels_key 'cls': no labelled cell is a training "
                      r"cell \(all are validation cells\)"):
        model = tm.CrossModalAE(d, mods, labels_key="cls", **kw)
    assert all((model.val_masks_[n] == split[n]).all() for n in d)
    # one training cell labelled: the classes it leaves untrained are named instead
    d["a"].obs["cls"] = d["a"].obs["cls"].cat.add_categories(["y"])
    d["a"].obs.loc[d["a"].obs_names[np.flatnonzero(~split["a"])[0]], "cls"] = "y"
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        tm.CrossModalAE(d, mods, labels_key="cls", **kw)
    said = [str(w.message) for w in told]
    assert any("class(es) ['x'] have no training cell" in m for m in said)
    assert not any("no labelled cell is a training cell" in m for m in said)

