"""What the training core does, pinned down: the loss the plan assembles (train/_plan.py),
the loss formulas of CrossModalModule (model/_module.py) and train()'s defaults and
bookkeeping (model/_training.py). Found by mutation testing (round 8): each test fails on a
change of the code that the rest of the suite let pass."""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import transmodal as tm


def _model(data, **kw):
    params = {"n_latent": 8, "hidden": (32,), "seed": 0, **kw}
    specs = {"rna": tm.Modality("nb", layer="counts"), "atac": tm.Modality("poisson")}
    if "prot" in data:
        specs["prot"] = tm.Modality("gaussian", obsm_key="X_prot")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return tm.CrossModalAE(data, specs, **params)


def _first_batch(model, batch_size=32):
    batches, _ = model._epoch_batches(batch_size, 0, warn_no_validation=False, max_epochs=1)
    return next(iter(batches))


def _bind_objective(plan, lam_adv=1.0, lam_latent=0.0, lam_mmd=0.0, lam_batch=0.0, beta=0.0):
    """Give a stand-in plan the objective (the history's loss) of CrossModalPlan."""
    from transmodal.train._plan import CrossModalPlan

    for k, v in dict(lam_adv=lam_adv, lam_latent=lam_latent, lam_mmd=lam_mmd,
                     lam_batch=lam_batch, beta=beta).items():
        setattr(plan, k, v)
    plan._adv_weight = lambda: CrossModalPlan._adv_weight(plan)
    plan.pretraining = False
    plan._objective = lambda terms: CrossModalPlan._objective(plan, terms)
    return plan


def _monitor_plan(current_epoch, pretrain_epochs, adv_warmup_epochs):
    """A stand-in for CrossModalPlan holding what on_validation_epoch_end reads."""
    from transmodal.train._plan import CrossModalPlan

    plan = SimpleNamespace(_sums={}, _counts={}, device=torch.device("cpu"), lam_cls=1.0,
                           lam_anchor=1.0, current_epoch=current_epoch,
                           pretrain_epochs=pretrain_epochs,
                           adv_warmup_epochs=adv_warmup_epochs, _val_means={})
    _bind_objective(plan)
    plan._means = lambda split: CrossModalPlan._means(plan, split)
    plan.logged = {}
    plan.log = lambda name, value, **kw: plan.logged.update({name: value})
    return plan


# -- train/_plan.py -----------------------------------------------------------------------
def test_plan_objective_is_the_documented_weighted_sum_of_its_terms(paired_data):
    """The autoencoders' objective is recon + beta * KL + lam_latent * latent prior + lam_adv *
    adversarial + lam_mmd * MMD + lam_cls * classifier + lam_anchor * anchor, with the latent
    prior the mean over the trained modalities and the MMD that of the step's latents."""
    from transmodal.train._plan import CrossModalPlan

    model = _model(paired_data, labels_key="label", anchor_fraction=0.5,
                         variational=True)
    m = model.module.eval()
    batch = _first_batch(model)
    assert batch.get("pairs")
    w = dict(beta=0.3, lam_latent=0.7, lam_adv=1.3, lam_mmd=2.1, lam_cls=0.4, lam_anchor=1.7)
    with torch.no_grad():
        terms, _ = CrossModalPlan(m, **w)._losses(batch, train=False)
        zs = {n: m.reconstruction(n, c["x"])[0] for n, c in batch["cells"].items()}
    for key in ("kl_rna", "kl_atac", "latent_l2", "adv", "mmd", "cls", "anchor"):
        assert key in terms
    expected = (
        sum(terms[f"recon_{n}"] + w["beta"] * terms[f"kl_{n}"] for n in m.names)
        + w["lam_latent"] * terms["latent_l2"] + w["lam_adv"] * terms["adv"]
        + w["lam_mmd"] * terms["mmd"] + w["lam_cls"] * terms["cls"]
        + w["lam_anchor"] * terms["anchor"]
    )
    assert float(terms["loss"]) == pytest.approx(float(expected), rel=1e-5)
    latent = np.mean([float(z.pow(2).mean()) for z in zs.values()])
    assert float(terms["latent_l2"]) == pytest.approx(latent, rel=1e-5)
    assert float(terms["mmd"]) == pytest.approx(float(m.mmd_loss(zs)), rel=1e-5)


def test_history_loss_is_the_weighted_sum_of_the_terms_beside_it(paired_data):
    """Each epoch's history ``loss`` (train and validation) is the objective of the terms'
    epoch means, which are per cell: the mean of the steps' objectives weighed a short
    last step (8 of 40 cells) as a full one, and the history's loss was 0.24 off the
    weighted sum of the columns beside it."""
    w = dict(beta=0.3, lam_latent=0.7, lam_adv=1.3, lam_mmd=2.1, lam_cls=0.4,
             lam_anchor=1.7)
    model = _model(paired_data, labels_key="label", anchor_fraction=0.5, variational=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=3, batch_size=32, adv_warmup_epochs=2, progress_bar=False,
                    **w)
    h = model.history
    for split in ("train", "val"):
        expected = (
            sum(h[f"{split}_recon_{n}"] + w["beta"] * h[f"{split}_kl_{n}"]
                for n in ("rna", "atac"))
            + w["lam_latent"] * h[f"{split}_latent_l2"]
            + h["lam_adv_effective"] * h[f"{split}_adv"]
            + w["lam_mmd"] * h[f"{split}_mmd"] + w["lam_cls"] * h[f"{split}_cls"]
            + w["lam_anchor"] * h[f"{split}_anchor"]
        )
        np.testing.assert_allclose(h[f"{split}_loss"], expected, rtol=1e-5)
    assert list(h["lam_adv_effective"]) == [0.65, 1.3, 1.3]


def test_plan_without_mmd_weight_leaves_the_mmd_out(paired_data):
    """lam_mmd=0 computes no MMD term (the paper's purely adversarial alignment)."""
    from transmodal.train._plan import CrossModalPlan

    model = _model(paired_data)
    batch = _first_batch(model)
    with torch.no_grad():
        off, _ = CrossModalPlan(model.module.eval(), lam_mmd=0.0)._losses(batch, train=False)
        on, _ = CrossModalPlan(model.module.eval(), lam_mmd=1.0)._losses(batch, train=False)
    assert "mmd" not in off and "mmd" in on


def test_plan_anchor_term_after_pretraining_and_not_during_it(paired_data):
    """With prior='anchor:rna' the anchor-pair loss acts once the pre-training is over (the
    pairs link the others to the frozen anchor), and not while the anchor trains alone."""
    from transmodal.train._plan import CrossModalPlan

    model = _model(paired_data, prior="anchor:rna", anchor_fraction=0.5)
    m = model.module.eval()
    batch = _first_batch(model)
    assert batch.get("pairs")
    with torch.no_grad():
        after, _ = CrossModalPlan(m, anchor="rna", pretrain_epochs=0)._losses(batch, train=False)
        during, _ = CrossModalPlan(m, anchor="rna", pretrain_epochs=3)._losses(batch,
                                                                                train=False)
    assert "anchor" in after and float(after["anchor"]) > 0
    assert "anchor" not in during and set(during) == {"recon_rna", "loss"}


def test_plan_learned_prior_never_pretrains():
    """pretrain_epochs is for the anchor prior only: a learned prior (anchor=None) is never in
    its pre-training phase, whatever pretrain_epochs says."""
    from transmodal.model._module import CrossModalModule, ModalityArch
    from transmodal.train._plan import CrossModalPlan

    arch = ModalityArch(n_vars=5, likelihood="gaussian", normalize=False, log1p=False,
                        scale=False, n_pca=0, hidden=(8,))
    m = CrossModalModule({"a": arch, "b": arch}, n_latent=2)
    plan = CrossModalPlan(m, anchor=None, pretrain_epochs=3, lam_adv=2.0)
    assert plan.pretrain_epochs == 0
    assert plan.pretraining is False
    assert plan._adv_weight() == 2.0


def test_plan_monitor_sums_the_modalities_reconstructions():
    """The monitored validation loss is the sum of every modality's reconstruction mean."""
    from transmodal.train._plan import CrossModalPlan

    plan = _monitor_plan(current_epoch=3, pretrain_epochs=0, adv_warmup_epochs=0)
    CrossModalPlan._accumulate(plan, "val", {"recon_a": torch.tensor(1.0),
                                             "recon_b": torch.tensor(2.5)}, {})
    CrossModalPlan.on_validation_epoch_end(plan)
    assert plan._val_means["val_monitor"] == pytest.approx(3.5)
    assert plan.logged["val_monitor"] == pytest.approx(3.5)


def test_plan_monitor_starts_in_the_first_epoch_after_the_warm_up():
    """Early stopping watches the monitor from epoch pretrain_epochs + adv_warmup_epochs on
    (the first epoch after the warm-up, as min_epochs), not earlier and not one later."""
    from transmodal.train._plan import CrossModalPlan

    logged = {}
    for epoch in (3, 4):
        plan = _monitor_plan(current_epoch=epoch, pretrain_epochs=1, adv_warmup_epochs=3)
        CrossModalPlan._accumulate(plan, "val", {"recon_a": torch.tensor(1.0)}, {})
        CrossModalPlan.on_validation_epoch_end(plan)
        logged[epoch] = "val_monitor" in plan.logged
        assert "val_monitor" in plan._val_means  # (in the history either way)
    assert logged == {3: False, 4: True}


def test_plan_conditional_discriminator_term_is_given_the_labels(paired_data):
    """The history's disc term of a conditional discriminator is its loss on the step's
    latents conditioned on the cells' labels (as the discriminator is trained)."""
    from transmodal.train._plan import CrossModalPlan

    model = _model(paired_data, labels_key="label", disc_conditional=True)
    m = model.module.eval()
    batch = _first_batch(model)
    ys = {n: c["y"] for n, c in batch["cells"].items()}
    with torch.no_grad():
        terms, _ = CrossModalPlan(m)._losses(batch, train=False)
        zs = {n: m.reconstruction(n, c["x"])[0] for n, c in batch["cells"].items()}
        with_labels = m.discriminator_loss(zs, ys)[0]
        without = m.discriminator_loss(zs, {})[0]
    assert float(with_labels) != pytest.approx(float(without), rel=1e-4)
    assert float(terms["disc"]) == pytest.approx(float(with_labels), rel=1e-5)


def test_plan_settled_anchor_statistics_are_what_a_divergence_puts_back(paired_data):
    """Setting the anchor's exact latent statistics at the end of its pre-training updates
    the snapshot of the last finite weights (weights put back after a divergence keep
    those statistics)."""
    from transmodal.train._plan import CrossModalPlan

    model = _model(paired_data, prior="anchor:rna", anchor_fraction=0.5)
    batches, _ = model._epoch_batches(32, 0, warn_no_validation=False, max_epochs=1)
    plan = CrossModalPlan(model.module, anchor="rna", pretrain_epochs=1, batches=batches)
    plan._snapshot()
    before = {k: v.clone() for k, v in plan._last_finite.items()}
    plan._settle_anchor()
    state = model.module.state_dict()
    changed = [k for k in before if k.startswith("encoders.rna.")
               and not torch.equal(before[k], state[k])]
    assert changed  # (the running statistics of the anchor's latent standardisation)
    for k in changed:
        assert torch.equal(plan._last_finite[k], state[k].cpu())


def test_train_advances_the_batches_epoch_and_logs_the_warm_up_weight(
        paired_data, monkeypatch):
    """Each epoch draws its own batches (EpochBatches.set_epoch(epoch) at its start), and the
    history's lam_adv_effective is the epoch's adversarial weight during the warm-up."""
    from transmodal.data._batches import EpochBatches

    seen = []
    original = EpochBatches.set_epoch

    def record(self, epoch):
        seen.append(epoch)
        return original(self, epoch)

    monkeypatch.setattr(EpochBatches, "set_epoch", record)
    model = _model(paired_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=2, batch_size=64, adv_warmup_epochs=2, lam_adv=3.0,
                    early_stopping=False, progress_bar=False)
    assert 1 in seen and 0 in seen
    np.testing.assert_allclose(model.history_["lam_adv_effective"].to_numpy(), [1.5, 3.0])


# -- model/_module.py ---------------------------------------------------------------------
def _module(n_labels=0, **kw):
    from transmodal.model._module import CrossModalModule, ModalityArch

    torch.manual_seed(0)
    arch = ModalityArch(n_vars=6, likelihood="gaussian", normalize=False, log1p=False,
                        scale=False, n_pca=0, hidden=(16,))
    return CrossModalModule({"a": arch, "b": arch}, n_latent=3, n_labels=n_labels, **kw)


def _x(n=12, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32))


def test_module_variational_kl_and_posterior_samples():
    """reconstruction() of a variational module: the KL to N(0, I) summed over the latent
    coordinates (shared and private); posterior samples mean + eps * exp(logvar / 2) in
    training, the posterior mean in evaluation; only the shared part is returned."""
    m = _module(variational=True, n_private=2, dropout=0.0)
    x = _x()
    enc = m.encoders["a"]
    t = m.transforms["a"]
    m.train()
    torch.manual_seed(1)
    z, _, kl = m.reconstruction("a", x)
    torch.manual_seed(1)
    mean, logvar = enc.distribution(t.encoder_input(t.process(x)))
    noise = torch.randn_like(mean)
    assert z.shape == (12, 3)
    expected_z = (mean + noise * (0.5 * logvar).exp())[:, :3]
    torch.testing.assert_close(z, expected_z, rtol=1e-5, atol=1e-6)
    expected_kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
    assert mean.shape[1] == 5
    torch.testing.assert_close(kl, expected_kl, rtol=1e-5, atol=1e-6)
    m.eval()
    z_eval, _, _ = m.reconstruction("a", x)
    torch.testing.assert_close(z_eval, m.encode("a", x))


def test_module_discriminator_noise_only_in_training():
    """Instance noise (disc_noise) is added to the discriminator's inputs in training mode
    only: evaluation logits are deterministic."""
    m = _module(disc_noise=0.5).eval()
    z = torch.randn(10, 3)
    torch.testing.assert_close(m.discriminate(z), m.discriminate(z))
    m.train()
    assert not torch.allclose(m.discriminate(z), m.discriminate(z))


def test_module_label_zero_is_a_label():
    """Label code 0 is a class like any other (only -1 is unlabelled): the conditional
    discriminator keeps it, and the classifier loss counts it."""
    m = _module(n_labels=3, disc_conditional=True).eval()
    z = torch.randn(6, 3)
    y = torch.tensor([0, 0, -1, 2, 1, 0])
    with torch.no_grad():
        predicted = m.classifier(z).argmax(-1)
        cond = m.condition_labels(z, y)
        loss = m.classifier_loss({"a": z}, {"a": y})
        logits = m.classifier(z)
    expected = torch.where(y >= 0, y, predicted)
    torch.testing.assert_close(cond, expected)
    keep = y >= 0
    ce = F.cross_entropy(logits[keep], y[keep])
    assert float(loss) == pytest.approx(float(ce), rel=1e-5)


def test_module_classifier_loss_is_the_mean_over_every_labelled_cell():
    """classifier_loss over several modalities: the mean cross-entropy over all their
    labelled cells (not a mean per modality, and unlabelled cells add nothing)."""
    m = _module(n_labels=3).eval()
    za, zb = torch.randn(5, 3), torch.randn(3, 3)
    ya, yb = torch.tensor([1, -1, 2, 0, -1]), torch.tensor([2, 2, 1])
    with torch.no_grad():
        loss = m.classifier_loss({"a": za, "b": zb}, {"a": ya, "b": yb})
        logits = m.classifier(torch.cat([za, zb]))
    y = torch.cat([ya, yb])
    expected = F.cross_entropy(logits[y >= 0], y[y >= 0])
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_module_mmd_formula():
    """The MMD is mean k(x, x') + mean k(y, y') - 2 mean k(x, y) with the multi-bandwidth
    Gaussian kernel sum over s = 0.5, 1, 2, 4, 8; zero between identical sets; over three
    modalities the mean of the pairs."""
    from transmodal.model._module import CrossModalModule

    g = torch.Generator().manual_seed(0)
    x, y, w = (torch.randn(7, 3, generator=g) for _ in range(3))
    d2 = torch.cdist(x, x).pow(2)
    k = sum(torch.exp(-d2 / (2.0 * s * s)) for s in (0.5, 1.0, 2.0, 4.0, 8.0))
    torch.testing.assert_close(CrossModalModule._kernel(x), k)
    assert float(CrossModalModule._mmd(x, x)) == pytest.approx(0.0, abs=1e-5)
    kxy = CrossModalModule._kernel(torch.cat([x, y]))
    expected = kxy[:7, :7].mean() + kxy[7:, 7:].mean() - 2 * kxy[:7, 7:].mean()
    assert float(CrossModalModule._mmd(x, y)) == pytest.approx(float(expected), rel=1e-5)
    m = _module()
    pairs = [CrossModalModule._mmd(a, b) for a, b in ((x, y), (x, w), (y, w))]
    assert float(m.mmd_loss({"a": x, "b": y, "c": w})) == pytest.approx(
        float(torch.stack(pairs).mean()), rel=1e-5)


def test_module_anchor_distances():
    """anchor_loss: 'l1' the mean L1 distance of paired latent points, 'l2' their mean
    Euclidean distance, 'contrastive' the symmetric InfoNCE of cosine similarities divided
    by the temperature; pairs are standardised as their modality's batches."""
    m = _module(dropout=0.0).train()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # a training step's batches: the statistics few pairs borrow
        m.encode("a", 3 * torch.randn(40, 6, generator=g) + 1)
        m.encode("b", 3 * torch.randn(40, 6, generator=g) - 1)
    pa, pb = torch.randn(6, 6, generator=g), torch.randn(6, 6, generator=g)
    pairs = {"a|b": {"a": pa, "b": pb}}
    with torch.no_grad():
        za, zb = m.encode("a", pa, True), m.encode("b", pb, True)
        l1 = m.anchor_loss(pairs, "l1")
        l2 = m.anchor_loss(pairs, "l2")
        con = m.anchor_loss(pairs, "contrastive", temperature=0.3)
        own = m.encode("a", pa)
    assert not torch.allclose(za, own, atol=1e-2)  # (the batch's vs their own statistics)
    assert float(l1) == pytest.approx(float((za - zb).abs().sum(-1).mean()), rel=1e-5)
    assert float(l2) == pytest.approx(float((za - zb).norm(dim=-1).mean()), rel=1e-5)
    logits = F.normalize(za, dim=-1) @ F.normalize(zb, dim=-1).T / 0.3
    target = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert float(con) == pytest.approx(float(expected), rel=1e-5)


def test_module_discriminator_loss_is_the_mean_over_the_modalities():
    """discriminator_loss: the mean of the modalities' cross-entropies (each modality weighted
    equally, whatever its cells), and the mean of their accuracies."""
    m = _module().eval()
    za, zb = torch.randn(5, 3), torch.randn(9, 3)
    with torch.no_grad():
        loss, acc = m.discriminator_loss({"a": za, "b": zb})
        la, lb = m.discriminate(za), m.discriminate(zb)
    ce = [F.cross_entropy(la, torch.zeros(5, dtype=torch.long)),
          F.cross_entropy(lb, torch.ones(9, dtype=torch.long))]
    accs = [(la.argmax(-1) == 0).float().mean(), (lb.argmax(-1) == 1).float().mean()]
    assert float(loss) == pytest.approx(float((ce[0] + ce[1]) / 2), rel=1e-5)
    assert float(acc) == pytest.approx(float((accs[0] + accs[1]) / 2), rel=1e-5)


def test_module_marker_conditioning_is_standardised():
    """Markers enter the discriminator standardised by marker_mean / marker_std (with an
    indicator of measured values)."""
    m = _module(n_markers=1).eval()
    m.marker_mean.fill_(10.0)
    m.marker_std.fill_(4.0)
    z = torch.randn(3, 3)
    mk = torch.tensor([[14.0], [float("nan")], [6.0]])
    captured = {}
    handle = m.discriminator.register_forward_pre_hook(
        lambda mod, args: captured.update(x=args[0].clone()))
    with torch.no_grad():
        m.discriminate(z, None, mk)
    handle.remove()
    torch.testing.assert_close(captured["x"][:, 3:], torch.tensor(
        [[1.0, 1.0], [0.0, 0.0], [-1.0, 1.0]]))


# -- model/_training.py -------------------------------------------------------------------
def _no_fit(monkeypatch, rows=1, interrupted=None, anchor_frozen=False, seen=None):
    """Skip the Lightning run of train(): ``rows`` epochs of history, the interrupt given."""
    import pandas as pd

    from transmodal.model._training import TrainingMixin

    def no_fit(self, plan, train_batches, val_batches, *, max_epochs, **trainer):
        plan.anchor_frozen = anchor_frozen
        if seen is not None:
            seen.update(trainer, plan=plan)
        history = pd.DataFrame({"epoch": np.arange(rows, dtype=float),
                                "train_loss": np.ones(rows)})
        return history, interrupted, None

    monkeypatch.setattr(TrainingMixin, "_fit", no_fit)


def _batched(paired_data, batches):
    paired_data["rna"].obs["batch"] = _categorical(batches)
    return paired_data


def _categorical(values):
    import pandas as pd

    return pd.Categorical(values)


def test_training_frozen_anchor_keeps_its_latent_statistics(paired_data, monkeypatch):
    """After training, the latent statistics of every modality but the frozen anchor are set
    anew; the frozen anchor keeps the ones it was aligned to."""
    _no_fit(monkeypatch, rows=2, anchor_frozen=True)
    model = _model(paired_data, prior="anchor:rna", anchor_fraction=0.5)
    stats = {n: model.module.encoders[n].standardize.running_mean.clone()
             for n in ("rna", "atac")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=4, progress_bar=False)
    assert torch.equal(model.module.encoders["rna"].standardize.running_mean, stats["rna"])
    assert not torch.equal(model.module.encoders["atac"].standardize.running_mean,
                           stats["atac"])


def test_training_lam_batch_needs_two_batches_of_two_training_cells(paired_data):
    """lam_batch warns that it cannot act where no modality (other than a frozen anchor) has
    two batches with at least 2 training cells each."""
    batches = ["b0"] * 149 + ["b1"]  # the second batch: one cell
    data = _batched(paired_data, batches)
    specs = {"rna": tm.Modality("nb", layer="counts", batch_key="batch"),
             "atac": tm.Modality("poisson")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = tm.CrossModalAE(data, specs, n_latent=4, hidden=(16,), seed=0,
                                validation_fraction=0.0)
    with pytest.warns(UserWarning, match="lam_batch=1.0 has no effect"):
        assert model._warn_batches(1.0, None) is False
    data["rna"].obs["batch"] = _categorical(["b0", "b1"] * 75)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = tm.CrossModalAE(data, specs, n_latent=4, hidden=(16,), seed=0,
                                validation_fraction=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model._warn_batches(1.0, None) is True
    with pytest.warns(UserWarning, match="but the anchor modality 'rna'"):
        assert model._warn_batches(1.0, "rna") is False


def test_training_idle_option_set_to_zero_does_not_warn(paired_data):
    """An option that nothing reads warns only when set away from its default and from 0
    (lam_cls=0 on a model without labels says nothing)."""
    model = _model(paired_data)
    given = dict(beta=1e-3, lam_latent=1.0, lam_cls=0.0, lam_anchor=1.0,
                 anchor_distance="l1", anchor_temperature=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model._check_options_used(given)
    with pytest.warns(UserWarning, match="lam_cls=2.0 has no effect"):
        model._check_options_used({**given, "lam_cls": 2.0})


def test_training_discriminator_accuracy_is_not_measured_with_markers(monkeypatch):
    """_disc_accuracy is None for a marker-conditioned discriminator (it also reads the
    markers, which the check does not give it)."""
    from conftest import make_data

    data = make_data()
    rng = np.random.default_rng(0)
    for a in data.values():
        a.obs["ratio"] = rng.normal(2.0, 0.5, a.n_obs)
    model = _model(data, marker_key="ratio")
    embs = {n: np.zeros((30, 8), np.float32) for n in ("rna", "atac")}
    rows = {n: np.arange(30) for n in ("rna", "atac")}
    assert model._disc_accuracy(embs, rows) is None
