"""Registered network architectures: a modality's encoder / decoder bodies plugged in by name."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import transmodal as tm
from transmodal.nn import _architectures

N_LATENT = 6


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """Each test registers into its own copy of the registry (nothing leaks out)."""
    monkeypatch.setattr(_architectures, "_REGISTRY", dict(_architectures._REGISTRY))


class Residual(tm.nn.Architecture):
    """Residual blocks in the encoder; an encoder-only and a decoder-only option."""

    name = "residual"

    def encoder(self, n_in, n_out, *, dropout, width=32, depth=2):
        return _ResidualNet(n_in, n_out, width, depth, dropout)

    def decoder(self, n_in, *, dropout, width=32, activation="gelu"):
        act = {"gelu": nn.GELU, "relu": nn.ReLU}[activation]
        return nn.Sequential(nn.Linear(n_in, width), act()), width


class _ResidualNet(nn.Module):
    def __init__(self, n_in, n_out, width, depth, dropout):
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                          nn.Dropout(dropout))
            for _ in range(depth)
        )
        self.out = nn.Linear(width, n_out)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class SameAsBuiltIn(tm.nn.Architecture):
    """The built-in MLP, written as a registered architecture."""

    name = "same_mlp"

    def encoder(self, n_in, n_out, *, dropout, hidden=(32,)):
        return tm.nn.mlp(n_in, hidden, n_out, dropout=dropout)

    def decoder(self, n_in, *, dropout, hidden=(32,)):
        return tm.nn.mlp(n_in, tuple(reversed(hidden)), None, dropout=dropout), hidden[0]


class _Pair(nn.Module):  # (scVI's encoders return mean and log-variance)
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x), self.layer(x)


class _Double(nn.Module):
    def forward(self, x):
        return x.double()


@pytest.fixture(scope="module")
def data():
    return tm.datasets.synthetic(
        300, modalities={"rna": "nb", "atac": "bernoulli"},
        n_features={"rna": 60, "atac": 80}, seed=1,
    )


def _model(data, rna=None, **kw):
    specs = {"rna": rna or tm.Modality("nb", architecture="residual"),
             "atac": tm.Modality("bernoulli")}
    kw.setdefault("anchor_fraction", 1.0)
    kw.setdefault("hidden", (32,))
    return tm.CrossModalAE(data, specs, n_latent=N_LATENT, seed=0, **kw)


# -------------------------------------------------------------------------- registration
def test_registration_refuses_what_it_cannot_use():
    with pytest.raises(TypeError, match="pass the class itself"):
        tm.register_architecture(Residual())
    with pytest.raises(TypeError, match="Architecture subclass"):
        tm.register_architecture(nn.Linear)

    class NoDecoder(tm.nn.Architecture):
        name = "no_decoder"

        def encoder(self, n_in, n_out, *, dropout):
            return nn.Linear(n_in, n_out)

    with pytest.raises(TypeError, match="must implement decoder"):
        tm.register_architecture(NoDecoder)
    for name, match in (("", "non-empty"), (5, "a non-empty string"), (" lead", "spaces"),
                        ("mlp", "reserved"), ("Conv", "reserved")):
        cls = type("A", (Residual,), {"name": name})
        with pytest.raises(ValueError, match=match):
            tm.register_architecture(cls)
    class NoDropout(Residual):
        name = "no_dropout"

        def decoder(self, n_in, width=8):
            return nn.Linear(n_in, width), width

    class TypeDefault(Residual):
        name = "type_default"

        def decoder(self, n_in, *, dropout, activation=nn.GELU):
            return nn.Sequential(nn.Linear(n_in, 8), activation()), 8

    class NeedsArguments(Residual):
        name = "needs_arguments"

        def __init__(self, depth):
            self.depth = depth

    class StarSizes(Residual):
        name = "star_sizes"

        def encoder(self, *sizes, dropout, width=8):
            return nn.Linear(sizes[0], sizes[1])

    with pytest.raises(TypeError, match=r"decoder must take \(n_in, \*, dropout, \*\*options\)"):
        tm.register_architecture(NoDropout)
    with pytest.raises(TypeError, match=r"encoder must take \(n_in, n_out, \*, dropout"):
        tm.register_architecture(StarSizes)
    with pytest.raises(ValueError, match="the default of decoder option 'activation' .* cannot "
                       "be recorded in a saved model"):
        tm.register_architecture(TypeDefault)
    with pytest.raises(TypeError, match=r"NeedsArguments\(\) failed .* built without arguments"):
        tm.register_architecture(NeedsArguments)
    assert tm.register_architecture(Residual) is Residual  # (a decorator)
    assert tm.nn.available_architectures() == ["residual"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.register_architecture(Residual)  # the same class again (a cell re-run): quiet
    other = type("Other", (Residual,), {"name": "residual"})
    with pytest.warns(UserWarning, match="Other replaces Residual"):
        tm.register_architecture(other)


def test_spec_errors_name_the_modality_and_field(data):
    tm.register_architecture(Residual)
    cases = [
        (tm.Modality("nb", architecture="resnet"), re.escape(
            "field 'architecture': unknown architecture 'resnet'; registered: ['residual']")),
        (tm.Modality("nb", architecture_options={"width": 8}),
         "field 'architecture_options' needs 'architecture'"),
        (tm.Modality("nb", architecture="residual", hidden=(8,)), "field 'hidden'"),
        (tm.Modality("nb", architecture="residual", architecture_options={"widht": 8}),
         "takes no option 'widht'.*options: \\['activation', 'depth', 'width'\\]"),
        (tm.Modality("nb", architecture="residual", architecture_options={"activation": nn.ReLU}),
         "JSON values.*a type is not a JSON value"),
        (tm.Modality("nb", architecture="residual", architecture_options=[("width", 8)]),
         "mapping"),
        (tm.Modality("nb", architecture=3), "field 'architecture' must be an architecture name"),
        (tm.Modality("nb", architecture="residual", architecture_options={"n_in": 8}),
         "option 'n_in' of architecture 'residual' is one the library passes its encoder "
         "itself"),
        (tm.Modality("nb", architecture="residual", architecture_options={"dropout": 0.5}),
         "option 'dropout' of architecture 'residual' is one the library passes"),
        (tm.Modality("nb", architecture="residual", architecture_options={"width": {1: 2}}),
         "key 1 is not a string"),
    ]
    for spec, match in cases:
        with pytest.raises(ValueError, match="modality 'rna': .*" + match):
            _model(data, spec)


def test_images_keep_the_built_in_convolutional_networks():
    tm.register_architecture(Residual)
    rng = np.random.default_rng(0)
    import anndata as ad

    img = ad.AnnData(np.zeros((20, 1)), obsm={"crops": rng.random((20, 1, 8, 8))})
    vec = ad.AnnData(rng.random((20, 5)).astype(np.float32))
    for a in (img, vec):
        a.obs_names = [f"c{i}" for i in range(20)]
    with pytest.raises(ValueError, match="modality 'img': field 'architecture'.*convolutional"):
        tm.CrossModalAE({"img": img, "vec": vec}, {
            "img": tm.Modality("gaussian", obsm_key="crops", architecture="residual"),
            "vec": tm.Modality("gaussian")})


# ------------------------------------------------------------------------------- building
def test_bodies_get_their_sizes_and_options(data):
    tm.register_architecture(Residual)
    spec = tm.Modality("nb", architecture="residual", batch_key=None,
                       architecture_options={"width": 24, "depth": 3, "activation": "relu"})
    module = _model(data, spec, variational=True, n_private=2).module
    enc, dec = module.encoders["rna"], module.decoders["rna"]
    body = enc.net
    assert isinstance(body, _ResidualNet) and len(body.blocks) == 3  # encoder-only option
    assert body.inp.in_features == 60 and body.out.out_features == 2 * (N_LATENT + 2)
    assert isinstance(dec.net[1], nn.ReLU) and dec.n_out == 24  # decoder-only option
    assert dec.net[0].in_features == N_LATENT + 2
    # what the library adds: the latent standardisation, the likelihood's head
    assert isinstance(enc.standardize, nn.BatchNorm1d)
    assert "rna: 300 x 60 (nb, architecture 'residual')" in repr(_model(data))
    z = enc(torch.zeros(4, 60))
    assert z.shape == (4, N_LATENT + 2)
    # n_pca: the encoder sees the components; batches: the decoder their one-hot
    data2 = {k: v.copy() for k, v in data.items()}
    data2["rna"].obs["sample"] = np.where(np.arange(data2["rna"].n_obs) % 2, "s1", "s2")
    spec = tm.Modality("nb", architecture="residual", n_pca=10, batch_key="sample")
    module = _model(data2, spec).module
    assert module.encoders["rna"].net.inp.in_features == 10
    assert module.decoders["rna"].net[0].in_features == N_LATENT + 2


def test_bodies_that_do_not_fit_are_named(data):
    class WrongWidth(Residual):
        name = "wrong_width"

        def encoder(self, n_in, n_out, *, dropout):
            return nn.Linear(n_in, n_out + 1)

    class NotAModule(Residual):
        name = "not_a_module"

        def decoder(self, n_in, *, dropout):
            return nn.Linear(n_in, 8)  # (the width is missing)

    class ReturnsTuple(Residual):
        name = "returns_tuple"

        def encoder(self, n_in, n_out, *, dropout):
            return _Pair(nn.Linear(n_in, n_out))

    class Raises(Residual):
        name = "raises"

        def encoder(self, n_in, n_out, *, dropout):
            raise RuntimeError("out of ideas")

    class FailsForward(Residual):
        name = "fails_forward"

        def encoder(self, n_in, n_out, *, dropout):
            return nn.Linear(n_in + 1, n_out)

    class Float64(Residual):
        name = "float64"

        def encoder(self, n_in, n_out, *, dropout):
            return nn.Linear(n_in, n_out).double()

    class ReturnsFloat64(Residual):
        name = "returns_float64"

        def decoder(self, n_in, *, dropout):
            return nn.Sequential(nn.Linear(n_in, 8), _Double()), 8

    class Lazy(Residual):
        name = "lazy"

        def encoder(self, n_in, n_out, *, dropout):
            return nn.Sequential(nn.LazyLinear(16), nn.GELU(), nn.Linear(16, n_out))

    class Tied(Residual):
        name = "tied"

        def encoder(self, n_in, n_out, *, dropout):
            layer = nn.Linear(16, 16)
            return nn.Sequential(nn.Linear(n_in, 16), layer, nn.GELU(), layer,
                                 nn.Linear(16, n_out))

    shared = nn.Linear(N_LATENT, 16)

    class SharedAcrossModalities(Residual):  # (one module object for both modalities)
        name = "shared"

        def decoder(self, n_in, *, dropout):
            return shared, 16

    class SharedMemory(Residual):
        name = "shared_memory"

        def encoder(self, n_in, n_out, *, dropout):
            a, b = nn.Linear(16, 16), nn.Linear(16, 16)
            b.weight = nn.Parameter(a.weight.data)  # (two parameters, one memory)
            return nn.Sequential(nn.Linear(n_in, 16), a, b, nn.Linear(16, n_out))

    cases = {
        WrongWidth: r"its encoder maps \(2, 60\) to shape \(2, 7\), expected a float32 tensor "
                    r"of shape \(2, 6\)",
        NotAModule: r"its decoder must return \(nn.Module, output width: a positive int\)",
        ReturnsTuple: r"its encoder maps \(2, 60\) to a tuple, expected a float32 tensor of "
                      r"shape \(2, 6\); return one tensor \(the library splits",
        Raises: r"its encoder\(60, 6, dropout=0.1\) raised RuntimeError: out of ideas",
        FailsForward: r"its encoder failed on an input of shape \(2, 60\): RuntimeError",
        Float64: r"its encoder has torch.float64 tensors \('weight'\): build them in float32",
        ReturnsFloat64: r"its decoder maps \(2, 6\) to shape \(2, 8\) of torch.float64, "
                        r"expected a float32 tensor",
        Lazy: r"its encoder has parameters of a lazy module \('0.weight'\)",
    }
    for cls, match in cases.items():
        tm.register_architecture(cls)
        with pytest.raises(ValueError, match=f"modality 'rna': architecture {cls.name!r}: {match}"):
            _model(data, tm.Modality("nb", architecture=cls.name))
    tm.register_architecture(Tied)
    with pytest.raises(ValueError, match=r"one tensor under two names, 'encoders.rna.net.1.weight' "
                       r"and 'encoders.rna.net.3.weight'"):
        _model(data, tm.Modality("nb", architecture="tied"))
    tm.register_architecture(SharedMemory)
    with pytest.raises(ValueError, match=r"one tensor under two names, 'encoders.rna.net.1.weight' "
                       r"and 'encoders.rna.net.2.weight' \(.*parameters sharing memory"):
        _model(data, tm.Modality("nb", architecture="shared_memory"))
    tm.register_architecture(SharedAcrossModalities)
    with pytest.raises(ValueError, match=r"'decoders.rna.net.weight' and 'decoders.atac.net"):
        tm.CrossModalAE(data, {k: tm.Modality(lik, architecture="shared") for k, lik in
                               (("rna", "nb"), ("atac", "bernoulli"))}, n_latent=N_LATENT)


def test_the_built_in_mlp_as_an_architecture_trains_bit_identically(data):
    """The library wraps a registered body exactly as its own MLP's: same weights drawn,
    same training, same embedding (and the dry runs draw no random numbers)."""
    tm.register_architecture(SameAsBuiltIn)
    kw = dict(dropout=0.1, anchor_fraction=0.5)
    built_in = _model(data, tm.Modality("nb"), **kw)
    plugged = _model(data, tm.Modality("nb", architecture="same_mlp"), **kw)
    a, b = built_in.module.state_dict(), plugged.module.state_dict()
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    for m in (built_in, plugged):
        m.train(max_epochs=3, progress_bar=False)
    np.testing.assert_array_equal(built_in.get_latent_representation("rna"),
                                  plugged.get_latent_representation("rna"))


class WithBatchNorm(tm.nn.Architecture):
    name = "batchnorm"

    def encoder(self, n_in, n_out, *, dropout):
        return nn.Sequential(nn.Linear(n_in, 16), nn.BatchNorm1d(16), nn.ReLU(),
                             nn.Linear(16, n_out))

    def decoder(self, n_in, *, dropout):
        return nn.Sequential(nn.Linear(n_in, 16), nn.BatchNorm1d(16), nn.ReLU()), 16


def test_batch_norm_in_a_body_is_left_as_training_set_it(data):
    """The latent statistics recomputed after training pass the cells in blocks with the
    encoder as it embeds: a body's batch norms stay in evaluation mode there, as at
    inference, so their running statistics are not moved and a block of one cell does not
    fail."""
    tm.register_architecture(WithBatchNorm)
    model = _model(data, tm.Modality("nb", architecture="batchnorm"))
    enc = model.module.encoders["rna"]
    bn = enc.net[1]
    bn.running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(5, 60)
    with enc.exact_statistics():
        enc(x[:4])
        enc(x[4:])  # (one cell)
    for k, v in bn.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not torch.equal(enc.standardize.running_mean, torch.zeros(N_LATENT))  # (recorded)
    # end to end: 270 training cells in steps of 269 (the last block of the recalibration: 1)
    model.train(max_epochs=2, batch_size=269, progress_bar=False)
    assert np.isfinite(model.get_latent_representation("rna")).all()


# ------------------------------------------------------------------- training, save, load
def test_trains_translates_saves_and_loads(data, tmp_path):
    tm.register_architecture(Residual)
    model = _model(data, tm.Modality("nb", architecture="residual",
                                     architecture_options={"width": 48}))
    before = model.module.encoders["rna"].net.out.weight.detach().clone()
    model.train(max_epochs=20, progress_bar=False)
    assert not torch.equal(before, model.module.encoders["rna"].net.out.weight)
    hist = model.history_
    assert hist["train_recon_rna"].iloc[-1] < hist["train_recon_rna"].iloc[0]
    z_rna = model.get_latent_representation("rna")
    z_atac = model.get_latent_representation("atac")
    assert tm.metrics.foscttm(z_rna, z_atac) < 0.3  # every pair an anchor: aligned
    out = model.translate(data["atac"], source="atac", target="rna")
    assert out.shape == data["rna"].shape and np.all(np.asarray(out.X) >= 0)

    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["modalities"]
    assert saved["rna"]["architecture"] == "residual"
    assert saved["rna"]["architecture_options"] == {"width": 48}
    assert "architecture" not in saved["atac"]  # (files of the built-in stay as they were)
    loaded = tm.CrossModalAE.load(tmp_path / "m", data)
    np.testing.assert_array_equal(loaded.get_latent_representation("rna"), z_rna)

    # not registered in the process that loads it: said so, with how to
    _architectures._REGISTRY.clear()
    with pytest.raises(ValueError, match="modality 'rna' was saved with architecture "
                       "'residual', which is not registered.*--import MODULE"):
        tm.CrossModalAE.load(tmp_path / "m", data)
    # registered again, but building other networks (the class was edited since)
    edited = type("Residual", (Residual,), {
        "encoder": lambda self, n_in, n_out, *, dropout, width=32, depth=2:
        _ResidualNet(n_in, n_out, width, depth + 1, dropout)})
    tm.register_architecture(edited)
    with pytest.raises(ValueError, match="modality 'rna' was built by architecture 'residual' "
                       "as registered in this process"):
        tm.CrossModalAE.load(tmp_path / "m", data)


def test_options_are_recorded_with_the_defaults_they_were_built_with(data, tmp_path):
    """A saved model records every option its networks were built with, the class's
    defaults included, and is rebuilt with them where the class's defaults changed since
    (warned); options given as any mapping save as JSON."""
    import types

    tm.register_architecture(Residual)
    spec = tm.Modality("nb", architecture="residual",
                       architecture_options=types.MappingProxyType({"depth": np.int64(1)}))
    assert spec.architecture_options == {"depth": 1}
    assert hash(spec) == hash(tm.Modality("nb", architecture="residual"))  # (hashable)
    model = _model(data, spec).train(max_epochs=2, progress_bar=False)
    z = model.get_latent_representation("rna")
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["modalities"]["rna"]["architecture_options"] == {"depth": 1}  # as given
    assert config["architecture_options"] == {"rna": {  # as built, each body's defaults
        "encoder": {"depth": 1, "width": 32}, "decoder": {"width": 32, "activation": "gelu"}}}

    # an option both bodies name, with defaults of their own: each gets its own default
    two = type("TwoWidths", (Residual,), {"name": "two_widths", "decoder": lambda self, n_in, *,
                                          dropout, width=16: (nn.Linear(n_in, width), width)})
    tm.register_architecture(two)
    module = _model(data, tm.Modality("nb", architecture="two_widths")).module
    assert module.encoders["rna"].net.inp.out_features == 32
    assert module.decoders["rna"].n_out == 16
    module = _model(data, tm.Modality("nb", architecture="two_widths",
                                      architecture_options={"width": 8})).module
    assert module.encoders["rna"].net.inp.out_features == 8 == module.decoders["rna"].n_out

    # a default stays the method's own; a list given (a tuple, as JSON records it) for an
    # option whose default is a tuple arrives as a tuple
    seen = []

    class TupleDefault(Residual):
        name = "tuple_default"

        def decoder(self, n_in, *, dropout, widths=(8, 4)):
            seen.append(widths)
            sizes = (n_in, *widths)
            return nn.Sequential(*(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))), sizes[-1]

    tm.register_architecture(TupleDefault)
    _model(data, tm.Modality("nb", architecture="tuple_default"))
    _model(data, tm.Modality("nb", architecture="tuple_default",
                             architecture_options={"widths": (6, 3)}))
    assert seen == [(8, 4), (6, 3)]

    wider = type("Residual", (Residual,), {
        "encoder": lambda self, n_in, n_out, *, dropout, width=48, depth=2:
        _ResidualNet(n_in, n_out, width, depth, dropout),
        "decoder": lambda self, n_in, *, dropout, width=48, activation="relu":
        (nn.Sequential(nn.Linear(n_in, width), nn.ReLU()), width)})
    tm.register_architecture(wider)
    with pytest.warns(UserWarning, match=r"the options of architecture 'residual' differ from "
                      r"those the model was trained with: encoder option 'width' defaults to 48 "
                      r"now: built with 32, as trained; decoder option 'activation' defaults to "
                      r"'relu' now: built with 'gelu', as trained; decoder option 'width'"):
        loaded = tm.CrossModalAE.load(tmp_path / "m", data)
    np.testing.assert_array_equal(loaded.get_latent_representation("rna"), z)
    loaded.save(tmp_path / "again")  # (and saved again with them)
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["architecture_options"] == config["architecture_options"]

    # a default the class no longer names (its networks the same): built without it, warned
    fewer = type("Residual", (Residual,), {
        "decoder": lambda self, n_in, *, dropout, width=32:
        (nn.Sequential(nn.Linear(n_in, width), nn.GELU()), width)})
    tm.register_architecture(fewer)
    with pytest.warns(UserWarning, match=r"decoder option 'activation' \(trained: 'gelu'\) is "
                      r"no longer taken by the class: left out"):
        loaded = tm.CrossModalAE.load(tmp_path / "m", data)
    np.testing.assert_array_equal(loaded.get_latent_representation("rna"), z)
    # an option added to the class since (the networks' shapes the same): named
    more = type("Residual", (Residual,), {
        "decoder": lambda self, n_in, *, dropout, width=32, activation="gelu", bias=True:
        (nn.Sequential(nn.Linear(n_in, width, bias=bias), nn.GELU()), width)})
    tm.register_architecture(more)
    with pytest.warns(UserWarning, match=r"decoder option 'bias' was not recorded \(added to "
                      r"the class since\?\): built with the class's default True"):
        tm.CrossModalAE.load(tmp_path / "m", data)
    # an option given when it was trained that the class no longer takes: refused, named
    fewer = type("Residual", (Residual,), {
        "encoder": lambda self, n_in, n_out, *, dropout, width=32:
        _ResidualNet(n_in, n_out, width, 1, dropout)})
    tm.register_architecture(fewer)
    with pytest.raises(ValueError, match=r"config.json: modality 'rna' was trained with the "
                       r"options \{'depth': 1\} of architecture 'residual', which the class "
                       r"registered now does not take \(architecture 'residual' takes no option "
                       r"'depth'.*register the class the model was trained with"):
        tm.CrossModalAE.load(tmp_path / "m", data)
    # the spec's options edited in config.json: built as the spec says, named
    tm.register_architecture(Residual)
    config["modalities"]["rna"]["architecture_options"]["activation"] = "relu"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=r"decoder option 'activation' is 'relu' in the spec but "
                      r"was 'gelu' when trained: built with 'relu'"):
        loaded = tm.CrossModalAE.load(tmp_path / "m", data)
    assert isinstance(loaded.module.decoders["rna"].net[1], nn.ReLU)
    # saved again, the record is what was built: it loads again without a word
    loaded.save(tmp_path / "edited")
    record = json.loads((tmp_path / "edited" / "config.json").read_text())
    assert record["architecture_options"]["rna"]["decoder"]["activation"] == "relu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.CrossModalAE.load(tmp_path / "edited", data)
    # an option added to the class since: recorded with the default it was built with
    tm.register_architecture(more)
    with pytest.warns(UserWarning, match="'bias' was not recorded"):
        loaded = tm.CrossModalAE.load(tmp_path / "edited", data)
    loaded.save(tmp_path / "more")
    record = json.loads((tmp_path / "more" / "config.json").read_text())
    assert record["architecture_options"]["rna"]["decoder"]["bias"] is True


def test_a_reference_built_with_an_architecture_is_extended(data):
    tm.register_architecture(Residual)
    reference = _model(data, tm.Modality("nb", architecture="residual"), hidden=(16,))
    reference.train(max_epochs=3, progress_bar=False)
    protein = data["rna"].copy()
    protein.X = np.log1p(protein.X.toarray().astype(np.float32))
    protein.var_names = [f"p{i}" for i in range(protein.n_vars)]
    model = tm.CrossModalAE.from_reference(
        reference, {"rna": data["rna"], "protein": protein},
        {"protein": tm.Modality("gaussian")}, anchor_fraction=1.0,
    )
    assert model.mods["rna"].spec.architecture == "residual"
    assert model.mods["rna"].spec.hidden is None  # (its widths are its options)
    np.testing.assert_array_equal(model.get_latent_representation("rna"),
                                  reference.get_latent_representation("rna"))


# ---------------------------------------------------------------------------- command line
# (a dataclass, which looks its module up by name, and a sibling module's import: as a
# script run by Python would)
PLUGIN = '''
from __future__ import annotations

from dataclasses import dataclass

from torch import nn
import transmodal as tm

from my_layers import activation


@dataclass
class Sizes:
    width: int


@tm.register_architecture
class Wide(tm.nn.Architecture):
    name = "wide"

    def encoder(self, n_in, n_out, *, dropout, width=32):
        w = Sizes(width).width
        return nn.Sequential(nn.Linear(n_in, w), activation(), nn.Linear(w, n_out))

    def decoder(self, n_in, *, dropout, width=32):
        return nn.Sequential(nn.Linear(n_in, width), activation()), width
'''


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("transmodal: error:")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_command_line_imports_the_module_that_registers_it(data, tmp_path, capsys, monkeypatch,
                                                         request):
    import sys

    import yaml

    monkeypatch.setattr(sys, "path", list(sys.path))  # (--import puts the file's folder there)
    request.addfinalizer(lambda: [sys.modules.pop(m, None) for m in ("my_networks", "my_layers")])

    from transmodal.cli import main

    for name, adata in data.items():
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
    plugin = tmp_path / "plugins" / "my_networks.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN)
    (plugin.parent / "my_layers.py").write_text("from torch import nn\nactivation = nn.SiLU\n")
    cfg = {
        "data": {"rna": "rna.h5ad", "atac": "atac.h5ad"},
        "modalities": {"rna": {"likelihood": "nb", "architecture": "wide",
                               "architecture_options": {"width": 24}},
                       "atac": "bernoulli"},
        "model": {"n_latent": 4, "anchor_fraction": 1.0},
        "train": {"max_epochs": 2, "progress_bar": False},
        "out": "model",
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    train = ["train", "--config", str(tmp_path / "run.yaml")]
    assert main(train) == 2  # not registered: refused before any data are read
    line = _one_error_line(capsys)
    assert "field 'architecture': unknown architecture 'wide'" in line and "--import" in line
    assert main([*train, "--import", "no_such_module_xyz"]) == 2
    assert ("--import no_such_module_xyz: ModuleNotFoundError: No module named "
            "'no_such_module_xyz' (not on the Python path; a file is given by its path, e.g. "
            "--import no_such_module_xyz.py)" in _one_error_line(capsys))
    assert main(["--import", str(plugin), *train]) == 0  # (before the command too)
    recorded = yaml.safe_load((tmp_path / "model" / "run_config.yaml").read_text())
    assert recorded["import"] == [str(plugin)]  # (so that it trains again as it is)
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["modalities"]["rna"]["architecture_options"] == {"width": 24}

    _architectures._REGISTRY.clear()  # a new process: only what --import registers
    for module in ("my_networks", "my_layers"):
        sys.modules.pop(module, None)
    embed = ["embed", "--model", str(tmp_path / "model"), "--data",
             f"rna={tmp_path / 'rna.h5ad'}", "--modality", "rna"]
    assert main([*embed, "--out", str(tmp_path / "z.h5ad")]) == 2
    line = _one_error_line(capsys)
    assert "architecture 'wide', which is not registered" in line and "--import" in line
    assert main([*embed, "--out", str(tmp_path / "z.h5ad"), "--import", str(plugin)]) == 0
    import anndata as ad

    z = ad.read_h5ad(tmp_path / "z.h5ad").obsm["X_transmodal"]
    assert z.shape == (data["rna"].n_obs, 4)

    # the config's own import section (relative to it), recorded in run_config.yaml, which
    # then trains again as it is
    _architectures._REGISTRY.clear()
    for module in ("my_networks", "my_layers"):
        sys.modules.pop(module, None)
    cfg["import"] = ["plugins/my_networks.py"]
    cfg["out"] = "model2"
    (tmp_path / "run2.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "run2.yaml")]) == 0
    recorded = yaml.safe_load((tmp_path / "model2" / "run_config.yaml").read_text())
    assert recorded["import"] == [str(plugin)]
    assert main(["train", "--config", str(tmp_path / "model2" / "run_config.yaml"),
                 "--out", str(tmp_path / "model3")]) == 0
    cfg["import"] = "plugins/no_such_file.py"
    (tmp_path / "run3.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "run3.yaml")]) == 2
    line = _one_error_line(capsys)
    assert "run3.yaml: import: " in line and "no_such_file.py: FileNotFoundError" in line
    cfg["import"] = ["no_such_module_xyz"]
    (tmp_path / "run3.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "run3.yaml")]) == 2
    assert ("(not on the Python path; a file is given by its path, e.g. import: "
            "[no_such_module_xyz.py], relative to the config)" in _one_error_line(capsys))


def test_a_failed_import_leaves_the_interpreter_as_it_was(tmp_path, monkeypatch):
    import sys

    from transmodal.nn._registry import import_modules

    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "json.py").write_text("x = 1\n")  # (a file named as a module imported already)
    with pytest.raises(ValueError, match=r"json.py: ImportError: a module named 'json' is "
                       r"imported already .*rename the file"):
        import_modules([str(tmp_path / "json.py")])
    assert json.dumps({}) == "{}" and sys.modules["json"] is json
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match="broken_plugin.py: RuntimeError: boom"):
        import_modules([str(broken)])
    assert "broken_plugin" not in sys.modules and str(tmp_path) not in sys.path


def test_checkpoints_resume_and_ensembles_carry_the_architecture(data, tmp_path):
    """A run stopped and resumed from its checkpoint, and an ensemble saved and loaded, are
    rebuilt with the registered architecture and its options (a body with batch norms:
    its running statistics are saved and restored with the weights)."""
    tm.register_architecture(WithBatchNorm)
    tm.register_architecture(Residual)
    spec = tm.Modality("nb", architecture="batchnorm")
    model = _model(data, spec)
    model.train(max_epochs=4, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=2,
                progress_bar=False)
    resumed = tm.workflows.resume_training(tmp_path / "ckpt", data, max_epochs=6)
    assert len(resumed.history_) == 6
    assert resumed.mods["rna"].spec.architecture == "batchnorm"
    bn = resumed.module.encoders["rna"].net[1]
    assert int(bn.num_batches_tracked) > 0

    spec = tm.Modality("nb", architecture="residual", architecture_options={"depth": 1})
    ensemble = tm.workflows.train_ensemble(
        lambda s: tm.CrossModalAE(data, {"rna": spec, "atac": tm.Modality("bernoulli")},
                                  n_latent=N_LATENT, anchor_fraction=1.0, seed=s),
        seeds=(0, 1), max_epochs=2, progress_bar=False,
    )
    z = ensemble.get_latent_representation("rna")
    ensemble.save(tmp_path / "ens")
    loaded = tm.Ensemble.load(tmp_path / "ens", data)
    np.testing.assert_array_equal(loaded.get_latent_representation("rna"), z)
    assert all(len(m.module.encoders["rna"].net.blocks) == 1 for m in loaded.models)


class Pretrained(tm.nn.Architecture):
    """A body whose first layer its author froze (a pretrained layer), that reads its
    weights' values while it is built, and that counts its calls (state a forward sets)."""

    name = "pretrained"

    def encoder(self, n_in, n_out, *, dropout, frozen=True):
        body = _Counting(nn.Linear(n_in, 16), nn.GELU(), nn.Linear(16, n_out))
        if float(body[0].weight.detach().abs().max()) > 0 and frozen:  # (a value: not meta)
            body[0].requires_grad_(False)
        return body

    def decoder(self, n_in, *, dropout):
        return nn.Sequential(nn.Linear(n_in, 16), nn.GELU()), 16


class _Counting(nn.Sequential):
    def __init__(self, *layers):
        super().__init__(*layers)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


def test_a_body_is_built_trained_and_loaded_as_its_author_wrote_it(data, tmp_path):
    """The shape check leaves no trace in the body (it runs on a copy); the layers the
    body's author froze stay frozen through training (also the anchor's pre-training and
    freezing); a body that reads its weights' values while built loads (the check of a
    saved model's shapes builds it on the CPU where the meta device holds no values)."""
    tm.register_architecture(Pretrained)
    for prior in ("learned", "anchor:rna"):
        model = _model(data, tm.Modality("nb", architecture="pretrained"), prior=prior)
        body = model.module.encoders["rna"].net
        assert int(body.calls) == 0  # (the dry run ran on a copy)
        frozen = body[0].weight.detach().clone()
        pretrain = {"pretrain_epochs": 1} if prior != "learned" else {}
        for _ in range(2):
            model.train(max_epochs=2, progress_bar=False, **pretrain)
        assert int(body.calls) > 0 and not body[0].weight.requires_grad
        torch.testing.assert_close(body[0].weight, frozen, rtol=0, atol=0)
        assert body[2].weight.requires_grad  # (the rest trains)
    model.save(tmp_path / "m")
    loaded = tm.CrossModalAE.load(tmp_path / "m", data)
    np.testing.assert_array_equal(loaded.get_latent_representation("rna"),
                                  model.get_latent_representation("rna"))


def test_a_required_option_left_out_is_named_by_the_spec_check():
    class Required(Residual):
        name = "required"

        def encoder(self, n_in, n_out, *, dropout, width):
            return nn.Linear(n_in, n_out)

    tm.register_architecture(Required)
    with pytest.raises(ValueError, match="modality 'rna': field 'architecture_options': "
                       "architecture 'required': its encoder needs option 'width' "):
        tm.Modality("nb", architecture="required").check("rna")
    tm.Modality("nb", architecture="required", architecture_options={"width": 4}).check("rna")


def test_the_docstring_example_runs():
    import doctest

    result = doctest.testmod(_architectures, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0
    assert "my_mlp" in tm.nn.available_architectures()


def test_a_class_registered_again_after_the_build_does_not_change_what_is_saved(data, tmp_path):
    """A notebook cell defining the class run again with other defaults after the model was
    built: the model saves the options its networks were built with."""
    tm.register_architecture(Residual)
    model = _model(data, tm.Modality("nb", architecture="residual"))
    wider = type("Residual", (Residual,), {
        "decoder": lambda self, n_in, *, dropout, width=32, activation="relu":
        (nn.Sequential(nn.Linear(n_in, width), nn.ReLU()), width)})
    tm.register_architecture(wider)
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["architecture_options"]
    assert saved["rna"]["decoder"]["activation"] == "gelu"  # (as built)


def test_the_example_plugin_registers_and_trains(data, monkeypatch):
    """``benchmarks/plugins/residual.py``, imported as ``--import`` does."""
    import sys
    from pathlib import Path

    from transmodal.nn._registry import import_modules

    monkeypatch.setattr(sys, "path", list(sys.path))
    plugin = Path(__file__).resolve().parents[1] / "benchmarks" / "plugins" / "residual.py"
    import_modules([str(plugin)])
    monkeypatch.delitem(sys.modules, "residual")
    spec = tm.Modality("nb", architecture="residual", architecture_options={"width": 32})
    model = _model(data, spec).train(max_epochs=2, progress_bar=False)
    assert len(model.module.encoders["rna"].net.blocks) == 2
    assert np.isfinite(model.get_latent_representation("rna")).all()
