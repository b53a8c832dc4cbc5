"""Details of training, resuming, inference and ensembles that a changed line could break
without another test noticing (each test fails on such a change, found by mutation
testing): optimiser options reaching their optimisers, the schedule's size-aware
defaults, a resume's seed, how loss terms are averaged and weighted, latent
statistics of the training cells, block-wise translation with per-cell batches, label
order, default pseudo-pairs, ensemble library sizes and histories."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import transmodal as tm


def _quiet_train(model, **kw):
    params = {"max_epochs": 1, "batch_size": 32, "progress_bar": False, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return model.train(**params)


def _weights(model, prefix):
    return torch.cat([v.flatten() for k, v in model.module.state_dict().items()
                      if k.startswith(prefix) and v.is_floating_point()])


@pytest.mark.parametrize("option, value, part", [
    ("n_disc_steps", 3, "discriminator."),   # more discriminator updates per step
    ("lr_disc", 5e-2, "discriminator."),     # the discriminator's own learning rate
    ("weight_decay", 0.5, "encoders."),      # the autoencoders' weight decay
])
def test_each_optimiser_option_changes_the_weights_it_acts_on(paired_data, make_model,
                                                              option, value, part):
    """train()'s n_disc_steps, lr_disc and weight_decay must reach the optimisers: a seeded
    1-epoch run with the option set ends with other weights than one with its default."""
    base = _quiet_train(make_model(paired_data, seed=0))
    other = _quiet_train(make_model(paired_data, seed=0), **{option: value})
    assert other.train_params_[option] == value
    assert not torch.allclose(_weights(base, part), _weights(other, part))


def test_size_aware_defaults_of_the_schedule(paired_data, make_model, monkeypatch):
    """The documented defaults: pretrain_epochs a quarter of max_epochs, adv_warmup_epochs a
    tenth, patience a fifth (at least 10). (The fit itself is skipped: only the schedule.)"""
    from transmodal.model._training import TrainingMixin

    seen = {}

    def no_fit(self, plan, train_batches, val_batches, *, max_epochs, **trainer):
        seen.update(trainer, plan_pretrain=plan.pretrain_epochs,
                    plan_warmup=plan.adv_warmup_epochs)
        return pd.DataFrame(), False, None

    monkeypatch.setattr(TrainingMixin, "_fit", no_fit)
    model = make_model(paired_data, prior="anchor:rna", anchor_fraction=0.5, seed=0)
    _quiet_train(model, max_epochs=40)
    p = model.train_params_
    assert (p["pretrain_epochs"], p["adv_warmup_epochs"], p["patience"]) == (10, 4, 10)
    assert (seen["plan_pretrain"], seen["plan_warmup"], seen["patience"]) == (10, 4, 10)
    assert seen["min_epochs"] == 14
    _quiet_train(make_model(paired_data, seed=0), max_epochs=100)
    assert seen["patience"] == 20


def test_resume_keeps_the_seed_the_stopped_training_was_given(paired_data, make_model,
                                                              tmp_path, monkeypatch):
    """resume_training goes on "with the settings it was trained with (... seed ...)": a
    train(seed=7) of a seed-0 model resumes with seed 7, not the model's seed."""
    from transmodal.train._callbacks import SaveEvery

    real = SaveEvery.on_train_epoch_end

    class Lost(Exception):
        pass

    def lost_after_2(self, trainer, plan):
        real(self, trainer, plan)
        if len(plan.history_rows) == 2:
            raise Lost

    model = make_model(paired_data, anchor_fraction=0.5, seed=0)
    with monkeypatch.context() as mp:
        mp.setattr(SaveEvery, "on_train_epoch_end", lost_after_2)
        with pytest.raises(Lost):
            _quiet_train(model, max_epochs=4, seed=7, early_stopping=False,
                         checkpoint_dir=tmp_path / "c", checkpoint_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        resumed = tm.workflows.resume_training(tmp_path / "c", paired_data, progress_bar=False)
    assert len(resumed.history) == 4
    assert resumed.train_params_["seed"] == 7


def test_ensemble_translation_reports_the_library_size_its_profiles_sum_to(
        paired_data, make_model):
    """Members decode counts at their own training cells' median library size (each seed has
    its own validation split); uns["transmodal"]["library_size"] is their mean, which the
    ensemble's mean profiles sum to."""
    models = [_quiet_train(make_model(paired_data, seed=s)) for s in (0, 1, 2)]
    libs = [float(m.module.transforms["atac"].library_size) for m in models]
    assert len(set(libs)) > 1  # (else this test tells nothing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = tm.Ensemble(models).translate(source="rna", target="atac")
    assert out.uns["transmodal"]["library_size"] == pytest.approx(np.mean(libs))
    np.testing.assert_allclose(out.X.sum(1), np.mean(libs), rtol=1e-4)


def test_latent_statistics_are_those_of_the_training_cells(paired_data, make_model):
    """The latent standardisation is set from the *training* cells (not the validation
    ones): with dropout off, the training cells' embedding has mean 0 and variance 1."""
    model = _quiet_train(make_model(paired_data, seed=0, validation_fraction=0.3, dropout=0.0),
                         max_epochs=2, early_stopping=False)
    for name in model.modality_names:
        train_rows = ~model.val_masks_[name]
        assert model.val_masks_[name].sum() >= 30
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            z = model.get_latent_representation(name)[train_rows]
        assert np.abs(z.mean(0)).max() < 1e-4, name
        np.testing.assert_allclose(z.var(0, ddof=1), 1.0, rtol=1e-3, err_msg=name)


def test_separability_check_embeds_the_validation_cells(paired_data, make_model, monkeypatch):
    """With 50+ validation cells per modality the after-training check scores the validation
    cells' embeddings (RowSubset must map its rows to the source's rows)."""
    import transmodal.metrics as metrics

    model = _quiet_train(make_model(paired_data, seed=0, validation_fraction=0.4))
    seen = []
    real = metrics.mixing_accuracy_multi
    monkeypatch.setattr(metrics, "mixing_accuracy_multi",
                        lambda embs, **kw: (seen.append(embs), real(embs, **kw))[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model._warn_if_separable()
        for name, z in zip(model.modality_names, seen[0]):
            rows = np.flatnonzero(model.val_masks_[name])
            assert len(rows) >= 50
            np.testing.assert_allclose(z, model.get_latent_representation(name)[rows],
                                       rtol=1e-5, atol=1e-6)


def test_cells_with_some_non_finite_outputs_are_counted(trained_model, paired_data,
                                                        monkeypatch):
    """The NaN / infinity warning counts a cell whose outputs are partly non-finite."""
    encode = trained_model.module.encode

    def partly_nan(name, x):
        z = encode(name, x).clone()
        z[:3, 0] = float("nan")
        return z

    monkeypatch.setattr(trained_model.module, "encode", partly_nan)
    with pytest.warns(UserWarning, match=r"the embeddings: 3 of 10 cell"):
        trained_model.get_latent_representation("rna", paired_data["rna"][:10])


def test_per_cell_target_batches_follow_the_cells_across_blocks():
    """translate(target_batch=<one batch per cell>) decodes each cell in its own batch
    whatever the block size: the per-cell codes must advance with the blocks."""
    data = tm.datasets.synthetic(120, n_features={"rna": 30, "atac": 40}, n_batches={"rna": 2},
                                 batch_effect=1.5, seed=0)
    model = tm.CrossModalAE(data, {"rna": tm.Modality("nb", batch_key="batch"),
                                   "atac": tm.Modality("bernoulli")},
                            n_latent=4, hidden=(16,), anchor_fraction=0.3, seed=0)
    _quiet_train(model, max_epochs=1)
    per_cell = data["rna"].obs["batch"]
    whole = model.translate(data["atac"], source="atac", target="rna", target_batch=per_cell)
    blocks = model.translate(data["atac"], source="atac", target="rna", target_batch=per_cell,
                             batch_size=16)
    np.testing.assert_allclose(blocks.X, whole.X, rtol=1e-5, atol=1e-5)


def test_ensemble_file_translation_in_per_cell_batches_block_by_block(tmp_path):
    """Ensemble.translate(out=, target_batch=<per cell>) writes each block decoded in its own
    cells' batches, and every block, down to a last one of a single cell (120 cells in
    blocks of 17: 7 x 17 + 1), as the in-memory translation does."""
    data = tm.datasets.synthetic(120, n_features={"rna": 30, "atac": 40}, n_batches={"rna": 2},
                                 batch_effect=1.5, seed=0)
    specs = {"rna": tm.Modality("nb", batch_key="batch"), "atac": tm.Modality("bernoulli")}
    models = [_quiet_train(tm.CrossModalAE(data, specs, n_latent=4, hidden=(16,),
                                           anchor_fraction=0.3, seed=s), max_epochs=1)
              for s in (0, 1)]
    ens = tm.Ensemble(models)
    per_cell = data["rna"].obs["batch"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want = ens.translate(data["atac"], source="atac", target="rna", target_batch=per_cell)
        got = ens.translate(data["atac"], source="atac", target="rna", target_batch=per_cell,
                            batch_size=17, out=tmp_path / "t.h5ad")
    np.testing.assert_allclose(np.asarray(got.X[:]), want.X, rtol=1e-5, atol=1e-5)


def _first_batch(model):
    batches, _ = model._epoch_batches(32, 0, warn_no_validation=False, max_epochs=1)
    return next(iter(batches))


def test_classifier_term_is_weighed_by_the_labelled_cells_of_a_step(paired_data, make_model):
    """The classifier loss is a mean over a step's labelled cells, so the epoch mean weighs
    it by their number (not by all the cells of the step)."""
    from transmodal.train._plan import CrossModalPlan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = make_model(paired_data, labels_key="label", seed=0)
    batch = _first_batch(model)
    batch["cells"]["rna"]["y"][:10] = -1  # 10 unlabelled cells in this step
    _, weights = CrossModalPlan(model.module)._losses(batch, train=False)
    labelled = sum(int((c["y"] >= 0).sum()) for c in batch["cells"].values())
    assert int(weights["cls"]) == labelled == 2 * 32 - 10


def test_reconstruction_and_kl_terms_are_weighed_by_the_cells_of_a_step(paired_data,
                                                                        make_model):
    """A modality's reconstruction (and KL) term is a mean over the step's cells of it, so
    the epoch means weigh it by their number: a short last step counts as few cells, not
    as a full step."""
    from transmodal.train._plan import CrossModalPlan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = make_model(paired_data, variational=True, seed=0)
    batch = _first_batch(model)
    batch["cells"]["atac"] = {k: v[:7] if torch.is_tensor(v) and len(v) == 32 else v
                              for k, v in batch["cells"]["atac"].items()}
    terms, weights = CrossModalPlan(model.module)._losses(batch, train=False)
    for name, cells in batch["cells"].items():
        n = len(cells["x"])
        assert int(weights[f"recon_{name}"]) == n == (32 if name == "rna" else 7), name
        assert int(weights[f"kl_{name}"]) == n and f"kl_{name}" in terms


def test_adversarial_term_is_the_mean_over_the_modalities(three_mod_data, make_model):
    """With three modalities the adversarial term is the mean of the modalities' adversarial
    losses (lam_adv means the same whatever the number of modalities)."""
    from transmodal.train._plan import CrossModalPlan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = make_model(three_mod_data, seed=0)
    m = model.module.eval()
    batch = _first_batch(model)
    terms, _ = CrossModalPlan(m)._losses(batch, train=False)
    with torch.no_grad():
        each = [m.adversarial_loss(n, m.reconstruction(n, c["x"], None, None)[0], None,
                                   None, None) for n, c in batch["cells"].items()]
    assert len(each) == 3
    assert float(terms["adv"].detach()) == pytest.approx(float(torch.stack(each).mean()), rel=1e-5)


def test_predicted_labels_follow_the_order_of_classes_given(trained_model):
    """predict_labels(classes=) in an order of the caller's: each cell's label is the class
    of its highest probability (the labels must not be read in the model's class order)."""
    classes = ["type2", "type0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        proba = trained_model.predict_labels("rna", classes=classes, return_proba=True)
        labels = trained_model.predict_labels("rna", classes=classes)
    assert list(proba.columns) == classes
    np.testing.assert_array_equal(labels, proba.idxmax(axis=1).to_numpy())
    assert set(labels) == set(classes)


def test_latent_prior_term_leaves_out_the_frozen_anchor(paired_data, make_model):
    """After pre-training, lam_latent's term is the mean square latent of the modalities this
    phase trains: the frozen anchor's (constant) latent would halve its weight."""
    from transmodal.train._plan import CrossModalPlan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = make_model(paired_data, prior="anchor:rna", anchor_fraction=0.5, seed=0)
    m = model.module.eval()
    batch = _first_batch(model)
    plan = CrossModalPlan(m, anchor="rna", pretrain_epochs=0, lam_latent=1.0)
    assert not plan.pretraining
    terms, _ = plan._losses(batch, train=False)
    with torch.no_grad():
        z = m.reconstruction("atac", batch["cells"]["atac"]["x"], None, None)[0]
    assert float(terms["latent_l2"].detach()) == pytest.approx(float(z.pow(2).mean()), rel=1e-5)


def test_default_pseudo_pairs_when_only_one_modality_is_labelled(paired_data, make_model):
    """Labels on one modality tie nothing (no class that every modality holds): the
    shape-based pseudo-pairs are on by default, and they pair training cells (rows of the
    data, not positions among the cells they were computed on)."""
    del paired_data["atac"].obs["label"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = make_model(paired_data, labels_key="label", anchor_fraction=0, seed=0)
    assert "rna|atac" in model.geometric_pairs_
    ra, rb = model.geometric_pairs_["rna|atac"]
    assert len(ra) and not model.val_masks_["rna"][ra].any()
    assert not model.val_masks_["atac"][rb].any()


def test_checkpoint_dir_of_a_longer_training_is_refused_clearly(paired_data, make_model,
                                                                tmp_path):
    """A model with a shorter history than the checkpoint there (another run) is refused
    with the FileExistsError that names resume_training, not a broadcasting error."""
    ckpt = tmp_path / "ckpt"
    _quiet_train(make_model(paired_data, seed=0), max_epochs=3, checkpoint_dir=ckpt)
    shorter = _quiet_train(make_model(paired_data, seed=1), max_epochs=2)
    with pytest.raises(FileExistsError, match="whose training this one does not continue"):
        shorter.train(max_epochs=1, checkpoint_dir=ckpt, progress_bar=False)


def test_ensemble_history_of_members_that_share_a_seed_is_indexed_by_member(paired_data,
                                                                            make_model):
    """Members with one seed (other architectures): the history is indexed by (member,
    epoch), so its index stays unique."""
    models = [_quiet_train(make_model(paired_data, seed=0, hidden=h)) for h in ((32,), (16,))]
    hist = tm.Ensemble(models).history
    assert hist.index.names[0] == "member"
    assert hist.index.is_unique and len(hist) == 2


def test_conditional_discriminator_links_a_modality_half_unlabelled(paired_data, make_model):
    """A modality with (at least) half its training cells unlabelled links to every other
    (its cells are conditioned on predictions), even where its labelled cells share no
    class with the other modality."""
    rna, atac = paired_data["rna"], paired_data["atac"]
    labels = rna.obs["label"].astype(object).to_numpy()
    labels[:] = "type0"
    labels[: rna.n_obs // 2] = None  # exactly half unlabelled
    rna.obs["label"] = pd.Categorical(labels, categories=["type0", "type1", "type2"])
    atac.obs["label"] = pd.Categorical(
        np.where(np.arange(atac.n_obs) % 2, "type1", "type2"),
        categories=["type0", "type1", "type2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        make_model(paired_data, labels_key="label", disc_conditional=True,
                   validation_fraction=0.0, anchor_fraction=0, geometric_pairs=False, seed=0)


def test_an_interrupt_of_the_callers_own_class_is_raised_as_a_keyboard_interrupt(
        paired_data, make_model, monkeypatch):
    """SIGTERM comes back as Terminated, the command line's (its own class) or
    Lightning's in a script (SIGTERMException, a SystemExit); another KeyboardInterrupt
    subclass (whose constructor may take no message) comes back as KeyboardInterrupt with
    the epochs done, not as a TypeError; the caller's own SystemExit as it is."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from transmodal._interrupts import Terminated
    from transmodal.train._plan import CrossModalPlan

    class Mine(KeyboardInterrupt):
        def __init__(self):
            super().__init__()

    plan_end = CrossModalPlan.on_train_epoch_end
    for raised, expected in ((Mine, KeyboardInterrupt), (Terminated, Terminated),
                             (SIGTERMException, Terminated)):
        def stop(self, raised=raised):
            plan_end(self)
            raise raised()

        model = make_model(paired_data, seed=0)
        with monkeypatch.context() as mp:
            mp.setattr(CrossModalPlan, "on_train_epoch_end", stop)
            with pytest.raises(KeyboardInterrupt, match="after 1 complete") as err:
                _quiet_train(model, max_epochs=3)
        assert type(err.value) is expected and len(model.history) == 1
        assert ("terminated (SIGTERM)" in str(err.value)) is (expected is Terminated)
    # the caller's own SystemExit (its SIGTERM handler's sys.exit(3)) comes back as it is,
    # the epochs done kept
    def leave(self):
        plan_end(self)
        sys.exit(3)

    model = make_model(paired_data, seed=0)
    with monkeypatch.context() as mp:
        mp.setattr(CrossModalPlan, "on_train_epoch_end", leave)
        with pytest.raises(SystemExit) as err:
            _quiet_train(model, max_epochs=3)
    assert err.value.code == 3 and len(model.history) == 1



def test_training_uses_fused_adam_with_adams_update(paired_data, make_model, monkeypatch):
    """Both optimisers of a CPU model take torch's fused Adam kernel (one pass per tensor
    and step; the default loop over tensors cost the demo ~10 % of its time), whose update
    is Adam's: the same as the loop's up to rounding, weight decay included."""
    from transmodal.nn import _optim

    made = []
    real = torch.optim.Adam

    def spy(params, **kw):
        opt = real(params, **kw)
        made.append(opt)
        return opt

    monkeypatch.setattr(_optim.torch.optim, "Adam", spy)
    _quiet_train(make_model(paired_data))
    assert len(made) == 2 and all(o.defaults["fused"] for o in made)
    monkeypatch.undo()

    torch.manual_seed(0)
    w = [torch.randn(40, 30), torch.randn(30)]
    runs = []
    for opt_of in (_optim.adam, lambda p, **kw: torch.optim.Adam(p, foreach=False, **kw)):
        params = [torch.nn.Parameter(t.clone()) for t in w]
        opt = opt_of(params, lr=1e-2, weight_decay=0.1)
        for step in range(20):
            g = torch.Generator().manual_seed(step)
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        runs.append(torch.cat([p.detach().flatten() for p in params]))
    assert runs[0].sub(torch.cat([t.flatten() for t in w])).abs().max() > 0.1  # it moved
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)


def test_fused_adam_only_where_every_parameter_allows_it():
    """Mixed device types, integer tensors and tensor subclasses (FSDP's sharded
    parameters) are left to torch's own choice; so is an empty list. A parameter viewing
    part of a larger tensor (columns of a pretrained weight) is updated by the loop over
    tensors, inside its view: the fused kernel wrote outside it."""
    from transmodal.nn._optim import adam, fusable

    class Sub(torch.Tensor):
        pass

    assert fusable([torch.zeros(3), torch.nn.Parameter(torch.zeros(2))])
    assert not fusable([torch.zeros(3, dtype=torch.int64)])
    assert not fusable([torch.zeros(3).as_subclass(Sub)])
    assert not fusable([torch.zeros(3), torch.zeros(3, device="meta")])
    assert not fusable([])
    assert not fusable([torch.zeros(3, 1).expand(3, 4)])
    big = torch.zeros(3, 4)
    w = torch.nn.Parameter(big[:, :2])
    opt = adam([w], lr=0.1)
    w.grad = torch.ones(3, 2)  # (contiguous, as autograd gives it)
    opt.step()
    assert not opt.defaults["fused"]
    torch.testing.assert_close(big[:, :2], torch.full((3, 2), -0.1))
    assert not big[:, 2:].any()


def test_training_leaves_other_warning_blocks_alone():
    """The Lightning warnings a training ignores are filters added and taken out one by
    one: a catch_warnings(record=True) block of another thread that opens before a training
    and closes while it runs records its own warnings and stops recording when it closes
    (with the training's catch_warnings, the warnings after it went on into the closed
    block's list), and the process's filters are as before."""
    from transmodal.train._trainer import _quiet_lightning

    filters, show = list(warnings.filters), warnings.showwarning
    quiet = _quiet_lightning()
    with warnings.catch_warnings(record=True) as recorded:  # (another thread's block)
        warnings.simplefilter("always")
        quiet.__enter__()  # a training starts
        warnings.warn("inside the block")
    quiet.__exit__(None, None, None)  # (the block closed while the training ran)
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        warnings.warn("after both")
    assert [str(w.message) for w in recorded] == ["inside the block"]
    assert [str(w.message) for w in after] == ["after both"]
    assert warnings.filters == filters and warnings.showwarning is show
