"""Inference of :class:`~transmodal.CrossModalAE`: embeddings, translations and label
predictions, block by block, in memory or written to .h5ad files."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._hints import argument_hints
from .._utils import resolve_device, user_stacklevel
from ..data._h5ad import check_output_h5ad, write_rows_h5ad
from ..data._prefetch import Prefetcher
from ..data._setup import features_differ, label_str, target_batch_codes, warn_unnamed_columns
from ..data._source import (
    CHUNK_VALUES, MatrixSource, check_values, matrix_of, warn_other_units,
)
from ..nn._likelihoods import get_likelihood
from ._checks import FLOAT32_MAX, brief, check_number, check_seed, shape_of


def _collect(blocks: Iterator[np.ndarray], n: int) -> np.ndarray:
    """The row blocks of ``n`` rows in all as one array, filled in place (concatenating the
    list of blocks held them and the result at once: twice the output's memory)."""
    out, pos = None, 0
    for block in blocks:
        if out is None:
            out = np.empty((n, *block.shape[1:]), dtype=block.dtype)
        out[pos : pos + len(block)] = block
        pos += len(block)
    return out


class RowSubset:
    """A subset of rows of a :class:`MatrixSource` with the same ``rows`` interface."""

    def __init__(self, src: MatrixSource, rows: np.ndarray) -> None:
        self.src, self.idx = src, np.asarray(rows)
        self.n_obs = len(self.idx)
        self.n_vars = src.n_vars
        self.on_disk = src.on_disk

    def rows(self, idx: np.ndarray) -> np.ndarray:  # noqa: D102
        return self.src.rows(self.idx[idx])

    def chunk_rows(self, chunk_size: int) -> int:  # noqa: D102
        return self.src.chunk_rows(chunk_size)


class InferenceMixin:
    """Embedding, translation and label prediction of :class:`~transmodal.CrossModalAE`."""

    def _check_name(self, modality: str, what: str = "modality") -> None:
        """A modality name of this model (``what`` names the argument in the error)."""
        if not isinstance(modality, str):
            raise TypeError(
                f"{what} must be a modality name (one of {self.modality_names}), got a "
                f"{type(modality).__name__}; pass the cells as adata"
            )
        if modality not in self.mods:
            raise ValueError(f"unknown {what} {modality!r}; the model has {self.modality_names}")

    def _warn_untrained(
        self, what: str, modalities: tuple[str, ...] = (), classifier: bool = False
    ) -> None:
        """Warn that ``what`` come from random weights (``train()`` never ran, or stopped
        while pre-training the anchor modality, e.g. a checkpoint taken then), unless they
        come from ``modalities`` (and the latent ``classifier``) that all carry a reference's
        trained networks (:meth:`from_reference`)."""
        copied = self.train_params_.get("reference_modalities") or ()
        if not self.is_trained_ and modalities and set(modalities) <= set(copied) and (
                not classifier or self.train_params_.get("classifier_trained")):
            return
        if not self.is_trained_:
            warnings.warn(
                f"{what} come from an untrained model (random weights): call model.train() "
                "first, or load a trained model with CrossModalAE.load",
                UserWarning, stacklevel=user_stacklevel(),
            )
        elif self.train_params_.get("pretrain_left"):
            warnings.warn(
                f"{what} come from a model whose training stopped while it pre-trained the "
                f"anchor modality {self.anchor_modality_!r} ({self.train_params_['pretrain_left']} "
                "epoch(s) left): the other modalities' networks are untrained; train further "
                "(tm.workflows.resume_training for a checkpoint)",
                UserWarning, stacklevel=user_stacklevel(),
            )

    def _source_for(self, modality: str, adata: AnnData | None, *, check: bool = True) -> MatrixSource:
        self._check_name(modality)
        md = self.mods[modality]
        if adata is None:
            if md.n_obs == 0:
                raise ValueError(
                    f"modality {modality!r}: the model holds no cells of it (loaded without its "
                    "data?); pass the cells as adata"
                )
            md.check_current()
            if check and self._check_data:  # values edited in place since (sc.pp.log1p)
                self._warn_other_units(md.source, check_values(
                    md.source, md.spec, new_cells=self.is_trained_))
            return md.source
        src, var_names = matrix_of(adata, md.spec, modality)
        if src.image_shape != md.source.image_shape:
            raise ValueError(
                f"modality {modality!r}: obsm[{md.spec.obsm_key!r}] holds images of shape "
                f"{src.image_shape}; the model was built for {md.source.image_shape}"
            )
        differ = features_differ(var_names, md.var_names, md.spec)
        warn_unnamed_columns(var_names, md.var_names, md.spec, modality)
        if src.n_vars != md.source.n_vars or differ:
            detail = differ or f"{src.n_vars} features given, {md.source.n_vars} expected"
            raise ValueError(
                f"modality {modality!r}: the features of the given data do not match the "
                f"model's var_names ({detail})"
            )
        if check:
            self._warn_other_units(src, check_values(src, md.spec, new_cells=True))
        return src

    def _warn_other_units(self, src: MatrixSource, integers: bool | None) -> None:
        """:func:`~transmodal.data._source.warn_other_units` for cells of modality
        ``src.name`` given to this model, against its training cells' record."""
        warn_other_units(src, self.mods[src.name].spec, integers,
                         self.integer_input_.get(src.name))

    def _iter_apply(
        self, src: MatrixSource, fn, *, batch_size: int, device, what: str | None = None,
        out_width: int = 0,
    ) -> Iterator[np.ndarray]:
        """``fn`` applied to consecutive row blocks of ``src``, block by block.

        Blocks hold ``batch_size`` rows, fewer where the rows read or the ``out_width``
        values computed per row would make a block of more than :data:`CHUNK_VALUES`
        numbers (wide peak matrices: 111 rows at 150,000 features). For sources on disk
        the next blocks are read by a background thread while the model runs on the
        current one. An empty source still runs the network once (to give the
        width). ``batch_size`` and ``device`` are checked at once, before any block is asked
        for (and before an output file is begun). With ``what`` (the outputs, as named in
        the message), cells whose outputs hold NaN or infinite values are counted and warned
        about once all blocks are done.
        """
        check_number("batch_size", batch_size, low=1, integer=True)
        rows = min(src.chunk_rows(int(batch_size)), max(1, CHUNK_VALUES // max(out_width, 1)))
        return self._blocks(src, fn, batch_size=rows, dev=resolve_device(device), what=what)

    def _blocks(
        self, src: MatrixSource, fn, *, batch_size: int, dev, what: str | None
    ) -> Iterator[np.ndarray]:
        """The generator of :meth:`_iter_apply`."""
        self.module.to(dev).eval()
        n = src.n_obs
        reads = (src.rows(np.arange(s, min(s + batch_size, n))) for s in range(0, n, batch_size))
        if getattr(src, "on_disk", False):
            reads = Prefetcher(reads, depth=2)

        def run(x: torch.Tensor) -> np.ndarray:
            with torch.no_grad():  # not held across the yields
                return fn(x.to(dev)).float().cpu().numpy()

        bad = 0
        try:
            if n == 0:
                yield run(torch.zeros((0, src.n_vars)))
            for x in reads:
                out = run(torch.from_numpy(x))
                if what is not None:
                    bad += int((~np.isfinite(out.reshape(len(out), -1))).any(axis=1).sum())
                yield out
        finally:
            reads.close()
            self.module.cpu()
        if bad:
            warnings.warn(
                f"{what}: {bad} of {n} cell(s) gave NaN or infinite values; their inputs lie far "
                "outside the range of the training data (check them for extreme values)",
                UserWarning, stacklevel=user_stacklevel(),
            )

    def _apply(
        self, src: MatrixSource, fn, *, batch_size: int, device, what: str | None = None
    ) -> np.ndarray:
        blocks = self._iter_apply(src, fn, batch_size=batch_size, device=device, what=what)
        return _collect(blocks, src.n_obs)

    def _output(
        self, src: MatrixSource, fn, *, batch_size: int, device, cells: AnnData,
        var_names, uns: dict, images: dict[str, tuple[int, ...]], out, overwrite: bool,
        var_annotations: pd.DataFrame | None = None, what: str | None = None,
    ) -> AnnData:
        """``fn`` over every row of ``src`` (the matrix of ``cells``) as an AnnData with
        ``cells.obs`` (and ``var_annotations``' columns, one row per feature): in memory, or
        (``out``) written block by block to an .h5ad file and returned opened read-only
        (``backed="r"``)."""
        obs = cells.obs.copy()
        index = pd.Index(np.asarray(var_names).astype(str))
        if var_annotations is not None:
            var = var_annotations.copy()
            var.index = index.rename(var_annotations.index.name)  # (e.g. "gene_ids")
        else:
            var = pd.DataFrame(index=index)
        if out is not None:
            check_output_h5ad(out, (src.file, cells.filename if cells.isbacked else None))
        blocks = self._iter_apply(src, fn, batch_size=batch_size, device=device, what=what,
                                  out_width=len(index))
        if out is not None:
            import anndata as ad

            write_rows_h5ad(
                out, blocks, n_obs=src.n_obs, obs=obs, var=var, uns=uns, images=images,
                overwrite=overwrite,
            )
            return ad.read_h5ad(out, backed="r")
        X = _collect(blocks, src.n_obs)
        result = AnnData(X=X, obs=obs, var=var)
        for key, shape in images.items():  # images also in their own shape
            result.obsm[key] = X.reshape(X.shape[0], *shape)
        result.uns.update(uns)
        return result

    @argument_hints
    def get_latent_representation(
        self,
        modality: str,
        adata: AnnData | None = None,
        *,
        batch_size: int = 1024,
        device: str | None = None,
        out: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> np.ndarray | AnnData:
        """Embed cells of one modality into the shared latent space.

        Parameters
        ----------
        modality
            Which modality (encoder) the cells come from.
        adata
            Cells to embed; default: the modality's training data. Backed (``.h5ad``
            opened with ``backed="r"``) and zarr data are read batch by batch.
        batch_size
            Cells per forward pass (fewer for wide data: at most 2^24 values read, or
            computed, per pass).
        device
            ``"cpu"`` (default), ``"cuda"`` (or ``"gpu"``, as for training), ``"mps"`` (an
            Apple GPU) or ``"auto"`` (CUDA, else MPS, where available).
        out
            Write the embedding to this .h5ad file instead (``X`` = latent coordinates,
            ``var_names`` ``latent0...``, the cells' ``obs``), batch by batch, so memory
            holds one batch; the file appears only once complete. (In a multi-process run
            every process that calls this writes: give each its own file, or call it on one
            rank.)
        overwrite
            Replace an existing ``out``.

        Returns
        -------
        ``(n_cells, n_latent)`` float32 array (store it in ``adata.obsm["X_transmodal"]``),
        or with ``out`` the written AnnData opened read-only (``backed="r"``).
        """
        src = self._source_for(modality, adata)
        self._warn_untrained("Embeddings", (modality,))

        def fn(x):
            return self.module.encode(modality, x)

        what = f"modality {modality!r}: the embeddings"
        if out is None:
            return self._apply(src, fn, batch_size=batch_size, device=device, what=what)
        return self._output(
            src, fn, batch_size=batch_size, device=device,
            cells=self.mods[modality].adata if adata is None else adata,
            var_names=[f"latent{i}" for i in range(self.module.n_latent)],
            uns={"transmodal": {"modality": modality, "units": "latent"}}, images={},
            out=out, overwrite=overwrite, what=what,
        )

    @argument_hints
    def translate(
        self,
        adata: AnnData | None = None,
        *,
        source: str,
        target: str,
        batch_size: int = 1024,
        library_size: float | None = None,
        sample: bool = False,
        seed: int = 0,
        target_batch: str | Sequence[str] | np.ndarray | pd.Series | None = None,
        device: str | None = None,
        out: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> AnnData:
        """Translate cells of ``source`` into modality ``target``: ``D_target(E_source(x))``.

        Parameters
        ----------
        adata
            Cells of the source modality; default: its training data. Backed (``.h5ad``
            opened with ``backed="r"``) and zarr data are read batch by batch.
        source, target
            Modality names.
        batch_size
            Cells per forward pass (fewer for wide data: at most 2^24 values read, or
            computed, per pass).
        library_size
            Count likelihoods: library size of the translated profiles, a finite number
            > 0 (default: the median library size of the target's training cells).
        sample
            Variational models: decode a draw from each cell's posterior instead of its
            mean (seeded with ``seed``; the draws depend on the cells per pass too:
            ``batch_size``, fewer for wide data, see ``batch_size``).
        seed
            Seed of the posterior draws (an integer >= 0).
        target_batch
            A target with a ``batch_key``: decode every cell as if measured in this batch
            (one of ``model.batch_categories_[target]``), or each cell in its own (one batch
            per cell, e.g. the ``obs`` column of the cells' partners in the target; a pandas
            Series is aligned to the cells by its index, one with a default RangeIndex or an
            array is taken by position); default: the mean of the decodings in every batch.
            Also for ``source == target`` (reconstruction: pass the cells' own batches).
        device
            ``"cpu"`` (default), ``"cuda"`` (or ``"gpu"``, as for training), ``"mps"`` (an
            Apple GPU) or ``"auto"`` (CUDA, else MPS, where available).
        out
            Write the result to this .h5ad file instead of memory, batch by batch (memory
            holds one batch); the file appears only once complete, and the result equals
            the in-memory one. (In a multi-process run every process that calls this writes:
            give each its own file, or call it on one rank.)
        overwrite
            Replace an existing ``out``.

        Returns
        -------
        AnnData with the source cells' ``obs`` and the target's ``var_names`` (and ``var``
        columns, for a target held in ``X`` or a layer); ``X`` is in the
        target's original units (expected counts at ``library_size`` for count likelihoods
        - for ``"zinb"`` the negative binomial mean times the chance of no dropout, so a
        profile sums to less than ``library_size`` by its expected dropouts -, probabilities
        for Bernoulli, rates (e.g. methylation levels) for binomial and beta-binomial,
        inverse-transformed values for Gaussian - scaling and log1p undone, and with
        ``normalize=True`` in the units of cells normalised to the median training library
        size (``expm1`` of a predicted mean of log values: a profile sums to less than that
        size, as the geometric mean lies below the mean); ``uns
        ["transmodal"]["units"]`` says which, and for count likelihoods ``uns["transmodal"]
        ["library_size"]`` the library size). For an image
        target, ``X`` holds the flattened pixels and ``obsm[<the target's obsm_key>]`` the
        images, ``(cells, channels, [D,] H, W)``. With ``out``: the written file, opened
        read-only (``backed="r"``).
        """
        self._check_name(target, "target")
        if library_size is not None:
            likelihood = self.mods[target].spec.likelihood
            counts = get_likelihood(likelihood).counts
            if shape_of(library_size):  # (an array, a tensor, a list: one per cell?)
                how = ("for one per cell, scale the rows of the result: X * sizes[:, None] / "
                       "uns['transmodal']['library_size']" if counts else
                       f"and none has any effect here: target {target!r} has the "
                       f"{likelihood!r} likelihood, not a count one")
                raise ValueError(
                    f"library_size must be one number (the library size of every translated "
                    f"cell), got {brief(library_size)}; {how}"
                )
            check_number("library_size", library_size, strict=True)
            if float(library_size) > FLOAT32_MAX:
                raise ValueError(
                    f"library_size must be at most {FLOAT32_MAX:.3g} (translations "
                    f"are float32), got {library_size!r}"
                )
            if not counts:
                warnings.warn(
                    f"library_size={library_size} has no effect: target {target!r} has the "
                    f"{likelihood!r} likelihood, not a count one ('nb', 'zinb', 'poisson')",
                    UserWarning, stacklevel=user_stacklevel(),
                )
        check_seed(seed)
        if sample and not self.init_params_.get("variational"):
            warnings.warn(
                "sample=True has no effect: the model is not variational (variational=True); "
                "the translation is the decoder's mean", UserWarning, stacklevel=user_stacklevel(),
            )
        src = self._source_for(source, adata)
        self._warn_untrained("Translations", (source, target))
        cells = self.mods[source].adata if adata is None else adata
        batch_code = target_batch_codes(
            self.batch_categories_.get(target), target, target_batch, cells.obs_names
        )
        lib = None if library_size is None else float(library_size)
        done = [0]  # rows translated so far (blocks come in order)
        # posterior draws from a generator of this call's own: seeded, and independent of
        # torch's global one (which other threads, and the caller, draw from)
        generator = (
            torch.Generator(device=resolve_device(device)).manual_seed(int(seed))
            if sample and self.init_params_.get("variational") else None
        )

        def fn(x):
            library = None if lib is None else torch.full((x.shape[0],), lib, device=x.device)
            code = batch_code
            if isinstance(code, np.ndarray):
                code = torch.from_numpy(code[done[0] : done[0] + x.shape[0]]).to(x.device)
                done[0] += x.shape[0]
            return self.module.translate(
                x, source, target, library, sample=sample, target_batch=code,
                generator=generator,
            )

        tmd = self.mods[target]
        # the target's feature annotations (gene symbols, peak coordinates)
        target_var = tmd.feature_annotations()
        images = {}
        if tmd.source.image_shape is not None:
            images[tmd.spec.obsm_key] = tuple(tmd.source.image_shape)
        likelihood = get_likelihood(tmd.spec.likelihood)
        units, linear = likelihood.units_of_mean(), not likelihood.preprocessed
        if likelihood.preprocessed:
            opts = tmd.spec.resolved(image=bool(images))
            linear = bool(opts["log1p"])  # (the inverse undoes it)
            notes = ["log1p undone: linear values"] if linear else []
            if opts["normalize"]:
                notes.append(
                    "in units of cells normalised to the median training library size; with "
                    "log1p undone on a mean of log values, a profile sums to less than it"
                    if linear else "of cells normalised to the median training library size"
                )
            units += f" ({'; '.join(notes)})" if notes else ""
        # (linear: counts, probabilities, rates, exponentiated values; read by
        # tm.analysis.differential_expression)
        uns = {"transmodal": {"source": source, "target": target, "units": units,
                              "linear": linear}}
        if likelihood.counts:  # the library size the counts are expected at
            uns["transmodal"]["library_size"] = float(
                self.module.transforms[target].library_size if lib is None else lib
            )
        if images and target in self.image_spacing_:  # (read by radial_profiles)
            uns["crops"] = {"spacing": list(self.image_spacing_[target])}
        if target in self.batch_categories_:
            uns["transmodal"]["target_batch"] = (
                "mean over batches" if batch_code is None
                else "per cell" if isinstance(batch_code, np.ndarray)
                else self.batch_categories_[target][batch_code]
            )
        return self._output(
            src, fn, batch_size=batch_size, device=device, cells=cells,
            var_names=tmd.var_names, uns=uns, images=images, out=out, overwrite=overwrite,
            var_annotations=target_var, what=f"translation {source!r} -> {target!r}",
        )

    @argument_hints
    def predict_labels(
        self,
        modality: str,
        adata: AnnData | None = None,
        *,
        classes: Sequence[str] | None = None,
        return_proba: bool = False,
        batch_size: int = 1024,
        device: str | None = None,
    ) -> np.ndarray | pd.DataFrame:
        """Transfer labels with the latent classifier (needs ``labels_key``).

        Parameters
        ----------
        modality
            Which encoder the cells come from.
        adata
            Cells to label; default: the modality's training data.
        classes
            Restrict predictions to these classes (e.g. the classes shared between
            modalities); default: every class the model knows, so that an unlabelled or
            partly labelled modality can receive the other modalities' classes. For cells of
            a modality whose labels name all its cell types, ``classes=
            model.classes_seen[modality]`` keeps them off the other modalities' private
            classes (where alignment has laid two private classes on top of each other, the
            default can confuse them: see ``partial_alignment``). Numbers name classes as
            they do in ``labels_key``
            (``[0, 1]`` for the classes ``"0"``, ``"1"``).
        return_proba
            Return a DataFrame of class probabilities (cells x classes) instead of labels.
        batch_size, device
            As in :meth:`get_latent_representation`.

        Returns
        -------
        The predicted label per cell, or the class probabilities. Labels are the model's
        class names (:attr:`label_categories_`, strings as in scanpy's cluster columns):
        numeric or boolean training labels come back as ``"3"``, ``"True"`` (``"3"`` also
        for a float column's 3.0, e.g. one with a missing value): compare numeric labels as
        numbers (``pd.to_numeric(pred) == adata.obs[key]``), others with
        ``adata.obs[key].astype(str)``.
        """
        if self.module.classifier is None:
            raise ValueError("predict_labels needs a model trained with labels_key")
        cats = list(self.label_categories_)
        keep = np.arange(len(cats))
        if classes is not None:
            if isinstance(classes, str):
                classes = [classes]
            # each class once, in the order given; numbers and booleans as class names
            classes = list(dict.fromkeys(
                c if isinstance(c, str) else label_str(c) for c in classes
            ))
            if not classes:
                raise ValueError("classes must name at least one of the model's labels")
            unknown = [c for c in classes if c not in cats]
            if unknown:
                raise ValueError(f"classes {unknown} are not among the model's labels {cats}")
            keep = np.array([cats.index(c) for c in classes], dtype=np.int64)
        src = self._source_for(modality, adata)
        self._warn_untrained("Label predictions", (modality,), classifier=True)
        if self.is_trained_ and not self.train_params_.get("classifier_trained", True):
            warnings.warn(
                "label predictions come from an untrained latent classifier (every train() "
                "ran with lam_cls=0): its weights are random; train with lam_cls > 0",
                UserWarning, stacklevel=user_stacklevel(),
            )
        cols = torch.from_numpy(keep)

        def fn(x):
            logits = self.module.classifier(self.module.encode(modality, x))
            return torch.softmax(logits[:, cols.to(x.device)], dim=-1)

        proba = self._apply(
            src, fn, batch_size=batch_size, device=device,
            what=f"modality {modality!r}: the label probabilities",
        )
        names = (self.mods[modality].adata if adata is None else adata).obs_names
        if return_proba:
            return pd.DataFrame(proba, index=names, columns=[cats[i] for i in keep])
        return np.asarray([cats[i] for i in keep], dtype=object)[proba.argmax(1)]
