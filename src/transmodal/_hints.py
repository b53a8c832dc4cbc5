"""'Did you mean': how transmodal spells the arguments users of other tools (scvi-tools,
scGLUE, totalVI, Lightning) type, and the nearest spelling of a misspelt one, for the public
methods (:func:`argument_hints`), config files and keyword dictionaries
(:func:`known_name_hint`)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar, cast


# what users of scvi-tools / scanpy type, and the transmodal way (see argument_hints)
_MODALITY_FIRST = (
    "name the modality the cells come from first, e.g. model.{method}('rna', adata) "
    "(the model's modalities: model.modality_names)"
)
_INFERENCE_DEVICE = "the device is device= ('cpu', 'cuda', 'gpu', 'mps' or 'auto')"
_TRAINING_DEVICE = ("choose the device with accelerator= ('cpu', 'gpu', 'cuda', 'mps' or "
                    "'auto'), devices= how many")
_PER_CALL_DEVICE = ("the device is chosen per call: train(accelerator='gpu'), "
                    "get_latent_representation / translate / predict_labels(device='cuda')")
_ADT_LIKELIHOOD = ("there is no protein background model: ADT counts take Modality('nb') "
                   "(CLR-normalised values Modality('gaussian'))")
_ARGUMENT_HINTS: dict[str, dict[str, str] | Callable[[], dict[str, str]]] = {
    "__init__": {
        "n_hidden": "the hidden layers' widths are hidden=, e.g. hidden=(256, 128) (per "
                    "modality: Modality(hidden=))",
        "n_layers": "the hidden layers are hidden=, one width per layer, e.g. hidden=(256, "
                    "128) (per modality: Modality(hidden=))",
        "dropout_rate": "the dropout rate is dropout=",
        "gene_likelihood": "the likelihood is each modality's: Modality('nb'), "
                           "Modality('zinb'), ...",
        "batch_key": "batches are each modality's: Modality(..., batch_key=)",
        "categorical_covariate_keys": "batches are each modality's: Modality(..., "
                                      "batch_key=)",
        "layer": "the layer is each modality's: Modality(..., layer=)",
        "latent_distribution": "the latent is deterministic; variational=True gives "
                               "Gaussian posteriors, a VAE (train(beta=) weighs its KL "
                               "term)",
        # scGLUE's (configure_dataset / init_kws)
        "latent_dim": "the latent dimensions are n_latent=",
        "latent_size": "the latent dimensions are n_latent=",
        "n_components": "the latent dimensions are n_latent=",
        "h_dim": "the hidden layers' widths are hidden=, e.g. hidden=(256, 256)",
        "h_depth": "the hidden layers are hidden=, one width per layer, e.g. hidden=(256, "
                   "256)",
        "random_seed": "the seed is seed=",
        "use_cell_type": "the shared label column is labels_key=",
        "use_batch": "batches are each modality's: Modality(..., batch_key=)",
        "use_layer": "the layer is each modality's: Modality(..., layer=)",
        "prob_model": "the likelihood is each modality's: Modality('nb'), Modality("
                      "'bernoulli'), ...",
        "use_highly_variable": "the model uses every feature of the matrix: subset the "
                               "AnnData first (adata[:, adata.var['highly_variable']])",
        "validation_split": "the share of validation cells is validation_fraction=",
        "use_rep": "an encoder on principal components is Modality(..., n_pca=50) (fitted "
                   "on the training cells); Modality(obsm_key='X_lsi') makes the "
                   "embedding the modality itself",
        "device": _PER_CALL_DEVICE,
        "accelerator": _PER_CALL_DEVICE,
        "use_gpu": _PER_CALL_DEVICE,
        # totalVI's
        "protein_expression_obsm_key": "each modality is one entry of data with its "
                                       "Modality: data={'rna': adata, 'protein': adata}, "
                                       "modalities={'rna': Modality('nb'), 'protein': "
                                       "Modality('nb', obsm_key='protein_expression')}",
        "protein_names_uns_key": "an obsm matrix's feature names are its columns: store it "
                                 "as a DataFrame (pd.DataFrame(x, index=adata.obs_names, "
                                 "columns=names))",
        "empirical_protein_background_prior": _ADT_LIKELIHOOD,
        "protein_dispersion": "each count feature has its own dispersion (Modality('nb'))",
    },
    "Modality.__init__": {
        "gene_likelihood": "the likelihood is the first argument: Modality('nb')",
        "distribution": "the likelihood is the first argument: Modality('nb')",
        "protein_expression_obsm_key": "a matrix in obsm is obsm_key=",
        "n_hidden": "the hidden layers' widths are hidden=, e.g. hidden=(256, 128)",
        "n_layers": "the hidden layers are hidden=, one width per layer, e.g. hidden=(256, "
                    "128)",
        "use_layer": "the layer is layer=",
        "dropout": "the input's dropout is input_dropout= (the hidden layers': "
                   "CrossModalAE(..., dropout=))",
        "categorical_covariate_keys": "a modality's batches are one column, batch_key=",
        "continuous_covariate_keys": "continuous covariates are not modelled: regress them "
                                     "out first (sc.pp.regress_out); CrossModalAE(..., "
                                     "marker_key=) is no covariate but a quantity shared "
                                     "by the modalities, which they are aligned on",
    },
    "train": {
        "batch_key": "batches are set when the model is built: Modality(..., batch_key=)",
        "learning_rate": "the learning rate is lr=",
        "kl_weight": "the KL weight of a variational model is beta=",
        "max_kl_weight": "the KL weight of a variational model is beta=",
        "n_epochs": "the number of epochs is max_epochs=",
        "epochs": "the number of epochs is max_epochs=",
        "use_gpu": _TRAINING_DEVICE,
        "gpu": _TRAINING_DEVICE,
        "device": _TRAINING_DEVICE,
        "early_stopping_patience": "the epochs without improvement are patience=",
        "enable_checkpointing": "checkpoints (in the model's own format) are written to "
                                "checkpoint_dir= every checkpoint_every= epochs",
        "plan_kwargs": "the optimiser's settings are train()'s own arguments (lr=, "
                       "weight_decay=, lr_disc=, lam_*=)",
        "train_size": "the validation split is set when the model is built: "
                      "CrossModalAE(..., validation_fraction=)",
        "validation_size": "the validation split is set when the model is built: "
                           "CrossModalAE(..., validation_fraction=)",
        "shuffle_set_split": "the validation split is drawn by the model's seed: "
                             "CrossModalAE(..., seed=)",
        "enable_progress_bar": "the progress bar is progress_bar=",
        "check_val_every_n_epoch": "validation cells are scored every epoch",
        "n_latent": "the latent dimensions are the model's: CrossModalAE(..., n_latent=)",
        "latent_dim": "the latent dimensions are the model's: CrossModalAE(..., n_latent=)",
        "num_workers": "rows are read by the training process itself (a file's ahead, in "
                       "a background thread)",
        "ckpt_dir": "checkpoints are written to checkpoint_dir=",
        "checkpoint_freq": "checkpoints are written every checkpoint_every= epochs (to "
                           "checkpoint_dir=)",
        "every_n_epochs": "checkpoints are written every checkpoint_every= epochs (to "
                          "checkpoint_dir=)",
        # scGLUE's (compile_kws / fit_kws)
        "lam_align": "the weights of the alignment are lam_adv= (adversarial) and "
                     "lam_mmd= (kernel MMD)",
        "lam_kl": "the KL weight of a variational model is beta=",
        "lam_sup": "the latent classifier's weight is lam_cls= (labels: CrossModalAE(..., "
                   "labels_key=))",
        "lam_data": "the reconstruction has weight 1; the other terms are weighed against "
                    "it (lam_adv=, lam_mmd=, lam_cls=, lam_anchor=)",
        "lam_graph": "there is no feature guidance graph",
        "align_burnin": "the adversarial weight rises linearly over adv_warmup_epochs= "
                        "(it is on from the first epoch)",
        "directory": "checkpoints are written to checkpoint_dir=",
        "random_seed": "the seed is seed=",
        "reduce_lr_patience": "the learning rate is constant (no scheduler); the epochs "
                              "without improvement before early stopping are patience=",
    },
    "get_latent_representation": {
        "*modality": _MODALITY_FIRST.format(method="get_latent_representation"),
        "give_mean": "embeddings are the posterior means (translate(..., sample=True) draws)",
        "mc_samples": "embeddings are the posterior means (translate(..., sample=True) "
                      "draws)",
        "accelerator": _INFERENCE_DEVICE,
        "use_gpu": _INFERENCE_DEVICE,
    },
    "predict_labels": {
        "*modality": _MODALITY_FIRST.format(method="predict_labels"),
        "accelerator": _INFERENCE_DEVICE,
        "use_gpu": _INFERENCE_DEVICE,
    },
    "translate": {
        "accelerator": _INFERENCE_DEVICE,
        "use_gpu": _INFERENCE_DEVICE,
        "n_samples": "translations decode each cell's latent (its posterior mean where "
                     "variational=True); sample=True decodes one posterior draw (seed=): "
                     "average calls with several seeds for a Monte Carlo mean",
        "transform_batch": "the batch the cells are decoded in is target_batch=",
        "*source": "name the modalities: model.translate(adata, source='rna', target='atac')",
        "*target": "name the modalities: model.translate(adata, source='rna', target='atac')",
        "*positional": "source and target are named: model.translate(adata, source='rna', "
                       "target='atac')",
        "libsize": "the library size of translated counts is library_size=",
        "target_libsize": "the library size of translated counts is library_size= (one "
                          "number; for one per cell, scale the result's rows)",
    },
    "save": {
        "save_anndata": "the data are not saved with the model: load(path, data) takes them "
                        "again (load(path) alone embeds and translates new cells)",
    },
    "load": {
        "adata": "the data are load()'s second argument: load(path, data), a dict of "
                 "AnnData or a MuData",
    },
}
_ENSEMBLE_MEANS = "an ensemble's translations are the mean of its members' (no draws)"
_ARGUMENT_HINTS["Ensemble.translate"] = {
    **_ARGUMENT_HINTS["translate"], "n_samples": _ENSEMBLE_MEANS, "sample": _ENSEMBLE_MEANS,
}
_ARGUMENT_HINTS["Ensemble.get_latent_representation"] = {
    **_ARGUMENT_HINTS["get_latent_representation"],
    "give_mean": "an ensemble's embedding is its members' posterior means side by side",
    "mc_samples": "an ensemble's embedding is its members' posterior means side by side",
}
# a Modality's fields as keys of a mapping (a config file's modality section)
_ARGUMENT_HINTS["Modality fields"] = {
    "gene_likelihood": "the likelihood is the field 'likelihood' (e.g. likelihood: nb)",
    "distribution": "the likelihood is the field 'likelihood' (e.g. likelihood: nb)",
    "protein_expression_obsm_key": "a matrix in obsm is the field 'obsm_key'",
    "n_hidden": "the hidden layers' widths are the field 'hidden' (e.g. hidden: [256, 128])",
    "n_layers": "the hidden layers are the field 'hidden', one width per layer (e.g. "
                "hidden: [256, 128])",
    "use_layer": "the layer is the field 'layer'",
    "dropout": "the input's dropout is the field 'input_dropout' (the hidden layers': the "
               "model's dropout)",
    "categorical_covariate_keys": "a modality's batches are one column, the field "
                                  "'batch_key'",
    "continuous_covariate_keys": _ARGUMENT_HINTS["Modality.__init__"][
        "continuous_covariate_keys"],
}
# methods of other tools looked up on a CrossModalAE (model.<name> or CrossModalAE.<name>)
_TRANSLATE_OWN = ("the decoder's expected values are translate(adata, source={m!r}, "
                  "target={m!r}) (transform_batch: target_batch=; library_size=)")
_ATTRIBUTE_HINTS: dict[str, str] = {
    "setup_anndata": "there is no setup step: the model is built from the data, one "
                     "Modality per modality, e.g. CrossModalAE(data, {'rna': Modality('nb', "
                     "layer='counts', batch_key='batch'), 'atac': Modality('bernoulli')})",
    "get_normalized_expression": _TRANSLATE_OWN.format(m="rna"),
    "get_normalized_accessibility": _TRANSLATE_OWN.format(m="atac"),
    "get_accessibility_estimates": _TRANSLATE_OWN.format(m="atac"),
    "differential_expression": "differential expression, also on translated data, is "
                               "tm.analysis.differential_expression(adata, groupby, group)",
    "load_query_data": "new cells are embedded and translated without retraining: "
                       "model.get_latent_representation('rna', query_adata); a new "
                       "modality joins a trained model's latent space through "
                       "tm.CrossModalAE.from_reference(model, data, modalities)",
    "get_elbo": "the losses of each epoch are model.history (train_* and val_* columns)",
    "get_reconstruction_error": "the losses of each epoch are model.history (train_* and "
                                "val_* columns)",
    # scGLUE's
    "encode_data": "embeddings are model.get_latent_representation(modality, adata)",
    "decode_data": "translations are model.translate(adata, source=, target=)",
}


def attribute_hint(owner: str, name: str, *, of_class: bool = False) -> str:
    """The ``AttributeError`` message for attribute ``name`` missing on a ``owner``
    (an instance, or the class itself: ``of_class``), as Python words it, with how
    transmodal does what other tools' methods of that name do."""
    what = f"type object {owner!r}" if of_class else f"{owner!r} object"
    hint = _ATTRIBUTE_HINTS.get(name)
    return f"{what} has no attribute {name!r}" + (f"; {hint}" if hint else "")


class AttributeHints:
    """Mixin: an attribute missing on an instance (``model.get_normalized_expression``)
    is told how transmodal does what other tools' methods of that name do. An
    ``AttributeError`` raised inside a property (or another descriptor) of the class is
    raised again as it was, not taken for the property missing."""

    def __getattr__(self, name: str) -> Any:
        import inspect

        if inspect.getattr_static(type(self), name, _MISSING) is not _MISSING:
            # Python calls __getattr__ when a descriptor raises AttributeError: run it
            # again, without this fallback, so that its own error and traceback show
            return object.__getattribute__(self, name)
        # (name and obj kept: Python's 'Did you mean' for a misspelt one still works)
        raise AttributeError(attribute_hint(type(self).__name__, name), name=name, obj=self)


_MISSING = object()


# tl.integrate's model_kwargs / train_kwargs (the device and the epochs are its own)
_INTEGRATE_DEVICE = "the device is integrate(accelerator=) ('cpu', 'gpu', 'cuda', 'mps', 'auto')"
_INTEGRATE_EPOCHS = "the number of epochs is integrate(max_epochs=)"
_ARGUMENT_HINTS["integrate.__init__"] = {
    "device": _INTEGRATE_DEVICE, "accelerator": _INTEGRATE_DEVICE, "use_gpu": _INTEGRATE_DEVICE,
    "random_seed": "the seed is integrate(seed=)",
}
_ARGUMENT_HINTS["integrate.train"] = {
    "device": _INTEGRATE_DEVICE, "use_gpu": _INTEGRATE_DEVICE, "gpu": _INTEGRATE_DEVICE,
    "n_epochs": _INTEGRATE_EPOCHS, "epochs": _INTEGRATE_EPOCHS,
    "random_seed": "the seed is integrate(seed=)",
}
# resume_training's keyword arguments (its checkpoint is its first argument)
_RESUMED_FROM = "the checkpoint is resume_training's first argument (it sets checkpoint_dir=)"
_ARGUMENT_HINTS["resume_training"] = {
    "ckpt_dir": _RESUMED_FROM, "directory": _RESUMED_FROM, "checkpoint": _RESUMED_FROM,
    "*checkpoint_dir": "the checkpoint is its first argument: resume_training('ckpt/', data)",
    "pretrain": "resume_training sets the pre-training epochs from the checkpoint",
}


def nearest_names(name: str, known: Collection[str]) -> list[str]:
    """The names of ``known`` that ``name`` was most likely meant to be (none, one, or
    several a name cut short begins: checkpoint -> checkpoint_dir, checkpoint_every): a
    name cut short (batch -> batch_size) or lengthened (hidden_dims -> hidden, beta_kl ->
    beta), else the closest spelling (loss weights: closer, lam_align is not lam_latent);
    none for names merely alike (num_workers is not num_nodes; validation, which begins
    validation_fraction, is taken for it, not for variational)."""
    import difflib

    known = list(known)
    near = [p for p in known if len(name) >= 4 and p.startswith(name)] or [
        p for p in known if len(p) >= 4 and name.startswith(p)]
    if not near:
        cutoff = 0.8 if name.startswith("lam_") else 0.75
        near = difflib.get_close_matches(name, known, 1, cutoff=cutoff)
    return near if len(near) <= 3 else []


def _did_you_mean(near: list[str], form: str) -> str | None:
    """``did you mean a= or b=?`` (``form``: how one name is written, e.g. ``"{}="``)."""
    return f"did you mean {' or '.join(form.format(p) for p in near)}?" if near else None


def known_name_hint(
    where: str | Sequence[str], name: str, known: Collection[str], *, loose: bool = False
) -> str | None:
    """How transmodal spells an unknown argument ``name`` of ``where`` (keys of
    ``_ARGUMENT_HINTS``, the first that has ``name``: a method's name, ``"__init__"`` for the
    model, ``"Modality fields"``) where it is one users of other tools type, else the nearest
    of ``known`` (``"did you mean 'x'?"``; ``loose``: for a config file's keys, also a
    spelling merely alike, as difflib's default finds), else ``None``."""
    for table in ([where] if isinstance(where, str) else where):
        hints = _ARGUMENT_HINTS.get(table, {})
        hint = (hints() if callable(hints) else hints).get(name)
        if hint is not None:
            return hint
    near = nearest_names(name, known)
    if not near and loose:
        import difflib

        near = difflib.get_close_matches(name, list(known), 1)
    return _did_you_mean(near, "{!r}")


def _same_value(a: Any, b: Any) -> bool:
    """Whether an argument given twice is the same value twice (the same object, or equal
    names or paths)."""
    if a is b:
        return True
    paths = (str, os.PathLike)
    return isinstance(a, paths) and isinstance(b, paths) and os.fspath(a) == os.fspath(b)


_F = TypeVar("_F", bound=Callable[..., Any])


def argument_hints(func: _F) -> _F:
    """Decorate a public method: a call Python would refuse with a bare ``TypeError`` (an
    unknown keyword, a missing argument) names the method and, for the names in
    ``_ARGUMENT_HINTS[<qualified name, else name>]`` (a table, or a function making it when
    a call fails; keywords given; ``"*name"``: a required argument left out or given twice;
    ``"*positional"``: too many positional arguments), how transmodal spells it; a misspelt
    keyword gets the nearest (:func:`nearest_names`). The signature is kept
    (``inspect.signature`` follows ``__wrapped__``)."""
    import functools
    import inspect

    table = _ARGUMENT_HINTS.get(func.__qualname__, _ARGUMENT_HINTS.get(func.__name__, {}))
    sig = inspect.signature(func)
    any_keyword = any(q.kind is q.VAR_KEYWORD for q in sig.parameters.values())
    first = next(iter(sig.parameters), None)

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as err:
            hints = table() if callable(table) else table  # (a table made when needed)
            # an unknown keyword first, as Python's own call reports it (bind names a
            # missing argument first); else the argument the error names
            unknown = [] if any_keyword else [k for k in kwargs if k not in sig.parameters]
            if unknown:
                name, text = unknown[0], f"got an unexpected keyword argument {unknown[0]!r}"
                hint = hints.get(name)
                if hint is None:  # a misspelt keyword
                    hint = _did_you_mean(nearest_names(
                        name, [p for p in sig.parameters if p not in ("self", "cls")]), "{}=")
            else:
                text = str(err)  # a required argument left out, or given twice (by
                # position and by name: another argument put in its place, not the same
                # value twice)
                quoted = re.search(r"(?:missing .*|multiple values for argument )'([^']+)'", text)
                name = quoted.group(1) if quoted else None
                hint = hints.get(f"*{name}") if quoted else None
                if hint and "multiple values" in text and name in sig.parameters:
                    slot = list(sig.parameters).index(name)
                    if _same_value(args[slot] if slot < len(args) else None, kwargs.get(name)):
                        hint = None
                if hint is None and "positional" in text:
                    hint = hints.get("*positional")
            where = func.__qualname__.split(".")[-2:]
            if len(where) == 2 and args and first in ("self", "cls"):  # the class called,
                owner = args[0] if isinstance(args[0], type) else type(args[0])
                where[0] = owner.__name__  # not the mixin defining the method
            if where[-1] == "__init__":  # the class is what the user called
                where = where[:-1]
            raise TypeError(
                f"{'.'.join(where)}(): {text}" + (f"; {hint}" if hint else "")
            ) from None
        return func(*args, **kwargs)

    return cast(_F, checked)
