"""Deep ensembles: several trained models of the same data used as one."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData, read_h5ad

from .._hints import AttributeHints, argument_hints
from .._utils import (
    ENSEMBLE_CONFIG, MODEL_CONFIG, atomic_directory, check_int, is_global_zero, warnings_once,
)
from ..data._h5ad import check_output_h5ad, write_rows_h5ad
from ..data._source import CHUNK_VALUES
from ..data._setup import target_batch_codes
from ._io import read_json
from ._model import CrossModalAE

ENSEMBLE_FORMAT_VERSION = 1


def _units(md) -> tuple:
    """What a member's translations of a modality are: its likelihood, the data it reads and
    the preprocessing that translations invert."""
    opts = md.spec.resolved()
    return (md.spec.likelihood, md.spec.layer, md.spec.total_layer, md.spec.obsm_key,
            opts["normalize"], opts["log1p"])


def _same_values(md, ref, n_rows: int = 64) -> bool:
    """Whether two members' data of a modality agree on their first ``n_rows`` cells (the
    same AnnData, or equal values: a cheap check that they were trained on the same data)."""
    if md.adata is ref.adata or not md.n_obs or not ref.n_obs:
        return True
    rows = np.arange(min(n_rows, md.n_obs, ref.n_obs))
    return np.array_equal(md.source_now().rows(rows), ref.source_now().rows(rows),
                          equal_nan=True)


def _latent_scale(model: CrossModalAE) -> float:
    """Root-mean-square distance of the latents of the model's own data (every modality,
    validation cells included) from their mean: divides the member's latent so that every
    member weighs the same."""
    z = np.concatenate([model.get_latent_representation(m) for m in model.modality_names])
    z = z.astype(np.float64)
    return max(float(np.sqrt(((z - z.mean(0)) ** 2).sum(1).mean())), 1e-12)


class Ensemble(AttributeHints):
    """Several trained :class:`CrossModalAE` models of the same data, used as one model.

    A deep ensemble (Lakshminarayanan et al., NeurIPS 2017): models that differ only in
    their seed make different errors, so combining them is more accurate than any one.
    The embedding of a cell is the concatenation of the members' latents, each divided by
    the root-mean-square spread of that member's latents of its own data, so that distances are
    the members' (squared) distances averaged with equal weights; translations are the
    members' translations averaged. On the paper's A549 test cells, ensembles of three seeds
    reach FOSCTTM 0.334 ± 0.002 (no anchor pairs) and 0.351 ± 0.007 (25 % anchors) against
    0.347 ± 0.011 and 0.369 ± 0.004 for one model (``benchmarks/a549_pairing.py``, README).

    Combine only runs that found the same alignment: without pairs or labels, seeds can
    match different cells (check :func:`~transmodal.metrics.seed_agreement`; there
    :func:`~transmodal.workflows.train_consensus`, which keeps one run, is the better
    choice). Build one with :func:`~transmodal.workflows.train_ensemble`.

    Parameters
    ----------
    models
        At least two trained models with the same modalities (in the same order), trained
        on the same data (cells, features and values, labels, batches) and reading and
        modelling each modality alike (likelihood, layer / obsm_key, normalisation, so
        that translations share their units); their architecture, latent size and
        ``n_pca`` may differ.
    scales
        Per-member divisors of the latent (default: computed from each member's own data;
        given when loading).

    Attributes
    ----------
    models
        The members.
    scales_
        The per-member divisors.
    """

    def __init__(self, models: Sequence[CrossModalAE], *, scales: Sequence[float] | None = None):
        models = list(models)
        if len(models) < 2:
            raise ValueError(f"an Ensemble needs at least two models; got {len(models)}")
        for i, m in enumerate(models):
            if not isinstance(m, CrossModalAE):
                raise TypeError(f"models[{i}] is a {type(m).__name__}, not a CrossModalAE")
            if not m.is_trained_:
                raise ValueError(f"models[{i}] is not trained; train it before combining")
            same = next((j for j in range(i) if models[j] is m), None)
            if same is not None:
                raise ValueError(
                    f"models[{i}] is models[{same}]: an ensemble combines distinct runs "
                    "(e.g. the same model trained with other seeds)"
                )
            if m.modality_names != models[0].modality_names:
                raise ValueError(
                    f"models[{i}] has modalities {m.modality_names}; models[0] has "
                    f"{models[0].modality_names}"
                )
            for name, md in m.mods.items():  # the members embed their own cells (adata=None)
                first = models[0].mods[name]
                if md.n_obs and first.n_obs and not np.array_equal(md.obs_names, first.obs_names):
                    raise ValueError(
                        f"models[{i}], modality {name!r}: holds other cells than models[0] "
                        f"({md.n_obs} against {first.n_obs}, or other obs_names); members must "
                        "be trained on the same data"
                    )
            for name, md in m.mods.items():  # translations are averaged feature by feature
                ref = models[0].mods[name]
                if _units(md) != _units(ref):
                    raise ValueError(
                        f"models[{i}], modality {name!r}: reads or models its data otherwise "
                        f"than models[0] ((likelihood, layer, total_layer, obsm_key, normalize, log1p) "
                        f"{_units(md)} against {_units(ref)}); their translations would be "
                        "averaged across units"
                    )
                if not np.array_equal(md.var_names, models[0].mods[name].var_names):
                    raise ValueError(
                        f"models[{i}], modality {name!r}: var_names differ from models[0]'s "
                        f"({len(md.var_names)} against {len(models[0].mods[name].var_names)} "
                        "features, or another order); members must be trained on the same features"
                    )
                if not _same_values(md, ref):
                    raise ValueError(
                        f"models[{i}], modality {name!r}: its cells hold other values than "
                        "models[0]'s under the same obs_names; members must be trained on the "
                        "same data"
                    )
            if m.label_categories_ != models[0].label_categories_:
                raise ValueError(
                    f"models[{i}] has label categories {m.label_categories_}; models[0] has "
                    f"{models[0].label_categories_} (class probabilities are averaged by class)"
                )
            if m.batch_categories_ != models[0].batch_categories_:
                raise ValueError(
                    f"models[{i}] has batches {m.batch_categories_}; models[0] has "
                    f"{models[0].batch_categories_} (translations are decoded per batch)"
                )
        if scales is None:
            # (the scale is measured on every modality's training cells)
            empty = [(i, n) for i, m in enumerate(models) for n, md in m.mods.items()
                     if not md.n_obs]
            if empty:
                i, name = empty[0]
                raise ValueError(
                    f"models[{i}] holds no cells of modality {name!r} (loaded without its "
                    "data), so its latent scale cannot be measured; load it with its "
                    "training data, or pass scales= (e.g. the scales_ of the ensemble it "
                    "came from)"
                )
            scales = [_latent_scale(m) for m in models]
        scales = np.asarray(scales, dtype=np.float64)
        # (the latents are divided by them in float32: within its normal range)
        tiny, big = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
        if scales.shape != (len(models),) or not ((scales >= tiny) & (scales <= big)).all():
            raise ValueError(
                f"scales must be {len(models)} positive numbers within float32's range "
                f"[{tiny:.3g}, {big:.3g}]; got {scales.tolist()}"
            )
        self.models = models
        self.scales_ = scales

    @property
    def modality_names(self) -> list[str]:
        """Names of the modalities, in model order."""
        return self.models[0].modality_names

    @property
    def mods(self) -> dict:
        """The modalities' data and specs (``ens.mods[name].var_names``: the features the
        ensemble reads, in order), as a model's: the first member's, which every member
        shares."""
        return self.models[0].mods

    @property
    def classes_seen(self) -> dict[str, list[str]]:
        """The label classes of each modality's training cells (the members share them)."""
        return self.models[0].classes_seen

    @property
    def n_latent(self) -> int:
        """Dimensions of the ensemble's embedding (the members' latents side by side)."""
        return sum(m.module.n_latent for m in self.models)

    @property
    def history(self) -> pd.DataFrame | None:
        """The members' per-epoch losses, indexed by (seed, epoch) - by (member, epoch)
        where members share a seed - as :func:`transmodal.pl.history` draws them; ``None``
        if no member has a history."""
        seeds = [m.init_params_["seed"] for m in self.models]
        level = "seed" if len(set(seeds)) == len(seeds) else "member"
        keys = seeds if level == "seed" else range(len(self.models))
        hists = {k: m.history for k, m in zip(keys, self.models) if m.history is not None}
        return pd.concat(hists, names=[level]) if hists else None

    def __repr__(self) -> str:
        return (f"Ensemble({len(self.models)} models, modalities={self.modality_names}, "
                f"n_latent={self.n_latent})")

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
        """Embed cells of one modality: the members' scaled latents side by side.

        Parameters
        ----------
        modality
            Which modality (encoder) the cells come from.
        adata
            Cells to embed; default: the modality's training data.
        batch_size
            Cells per forward pass (fewer for wide data: at most 2^24 values read, or
            computed, per pass).
        device
            ``"cpu"`` (default), ``"cuda"`` (or ``"gpu"``, as for training), ``"mps"`` (an
            Apple GPU) or ``"auto"`` (CUDA, else MPS, where available).
        out, overwrite
            As in :meth:`CrossModalAE.get_latent_representation`: write the embedding
            (``var_names`` ``latent0...``, member by member) to this .h5ad file,
            ``batch_size`` cells at a time, and return it opened read-only.

        Returns
        -------
        ``(n_cells, n_members * n_latent)`` float32 array: the members' latents side by side
        (store it in ``adata.obsm["X_transmodal"]``), or with ``out`` the written AnnData.
        """
        if out is None:
            return self._embed_rows(modality, adata, batch_size, device)
        cells = self._cells_for_file(modality, adata, out, overwrite, batch_size, "modality")
        var = pd.DataFrame(index=[f"latent{i}" for i in range(self.n_latent)])
        uns = {"transmodal": {"modality": modality, "units": "latent",
                              "ensemble": len(self.models)}}

        def embed(rows: AnnData, start: int, stop: int) -> AnnData:
            x = self._embed_rows(modality, rows, batch_size, device)
            return AnnData(x, var=var, uns=uns)

        width = self.models[0].mods[modality].source.n_vars
        return self._write_by_blocks(cells, embed, out, overwrite, batch_size, width)

    def _embed_rows(self, modality, adata, batch_size, device) -> np.ndarray:
        """The members' scaled latents of ``adata`` side by side, in memory."""
        parts = [
            m.get_latent_representation(modality, adata, batch_size=batch_size, device=device)
            / np.float32(s)
            for m, s in zip(self.models, self.scales_)
        ]
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    @argument_hints
    def translate(
        self,
        adata: AnnData | None = None,
        *,
        source: str,
        target: str,
        batch_size: int = 1024,
        library_size: float | None = None,
        target_batch: str | Sequence[str] | np.ndarray | pd.Series | None = None,
        device: str | None = None,
        out: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> AnnData:
        """Translate cells of ``source`` into ``target``: the mean of the members'
        :meth:`CrossModalAE.translate` (the mean of the mixture of their predictions).

        The parameters are those of :meth:`CrossModalAE.translate`, less ``sample`` and
        ``seed`` (means only); the result is in the same units, with the same ``obs``,
        ``var_names`` and image ``obsm``.

        Parameters
        ----------
        adata
            Cells of the source modality; default: its training data. Backed (``.h5ad``
            opened with ``backed="r"``) and zarr data are read batch by batch.
        source, target
            Modality names.
        batch_size
            Cells per forward pass of each member (fewer for wide data: at most 2^24 values
            read, or computed, per pass); with ``out``, also the cells written per block.
        library_size
            Count likelihoods: library size of the translated profiles, a finite number
            > 0. Default: each member decodes counts at its own training cells' median
            library size, and the translated profiles sum to their mean.
        target_batch
            A target with a ``batch_key``: decode every cell as if measured in this batch
            (one of ``model.batch_categories_[target]``, which the members share), or each
            cell in its own (one batch per cell, e.g. the ``obs`` column of the cells'
            partners in the target; a pandas Series is aligned to the cells by its index,
            one with a default RangeIndex or an array is taken by position); default: the
            mean of the decodings in every batch.
        device
            ``"cpu"`` (default), ``"cuda"`` (or ``"gpu"``, as for training), ``"mps"`` (an
            Apple GPU) or ``"auto"`` (CUDA, else MPS, where available).
        out
            Write the result to this .h5ad file instead of memory, ``batch_size`` cells at a
            time (memory holds one block of the members' summed translation and one
            member's); the file appears only once complete, and the result equals the
            in-memory one.
        overwrite
            Replace an existing ``out``.

        Returns
        -------
        AnnData with the source cells' ``obs`` and the target's ``var_names``; ``X`` is the
        members' mean translation, in the target's original units as for
        :meth:`CrossModalAE.translate` (for an image target also the images in
        ``obsm[<the target's obsm_key>]``). ``uns["transmodal"]`` is a member's, with
        ``"ensemble"`` the number of members and, for count likelihoods without
        ``library_size``, ``"library_size"`` the mean of the members' library sizes. With
        ``out``: the written file, opened read-only (``backed="r"``).
        """
        if out is None:
            return self._translate_rows(adata, source, target, batch_size, library_size,
                                        target_batch, device)
        self.models[0]._check_name(target, "target")
        cells = self._cells_for_file(source, adata, out, overwrite, batch_size, "source")
        batches = self.models[0].batch_categories_.get(target)
        codes = target_batch_codes(batches, target, target_batch, cells.obs_names)
        per_cell = isinstance(codes, np.ndarray)  # (validated once, then sliced per block)
        names = np.asarray(batches, dtype=object)[codes] if per_cell else None

        def translate(rows: AnnData, start: int, stop: int) -> AnnData:
            tb = names[start:stop] if per_cell else target_batch
            return self._translate_rows(rows, source, target, batch_size, library_size, tb,
                                        device)

        mods = self.models[0].mods
        width = max(mods[source].source.n_vars, mods[target].source.n_vars)
        return self._write_by_blocks(cells, translate, out, overwrite, batch_size, width)

    def _cells_for_file(self, modality: str, adata: AnnData | None, out, overwrite: bool,
                        batch_size: int, what: str) -> AnnData:
        """The cells of ``modality`` to write to ``out`` block by block (the training cells
        for ``adata=None``), once the arguments are checked."""
        check_output_h5ad(out, ())
        if Path(out).exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
        first_model = self.models[0]
        first_model._check_name(modality, what)
        if adata is None:  # the training cells (an error where the model holds none)
            first_model._source_for(modality, None)
        cells = first_model.mods[modality].adata if adata is None else adata
        check_output_h5ad(out, (cells.filename if cells.isbacked else None,))
        check_int(batch_size, "batch_size", minimum=1)
        return cells

    @staticmethod
    def _write_by_blocks(cells: AnnData, compute, out, overwrite: bool, batch_size: int,
                         width: int) -> AnnData:
        """Write ``compute(rows, start, stop)`` (an AnnData) of consecutive blocks of
        ``batch_size`` cells (fewer where ``width`` values per cell, read or computed, would
        make a block of more than :data:`CHUNK_VALUES` numbers) to the .h5ad file ``out``,
        with the cells' ``obs``; return it opened read-only. Memory holds one block."""
        batch_size = max(1, min(batch_size, CHUNK_VALUES // max(width, 1)))
        base, positions = cells, None
        if cells.isbacked and cells.is_view:  # (anndata cannot take a view of such a view)
            base = cells._adata_ref
            positions = np.arange(base.n_obs)[cells._oidx]

        def block(start: int) -> AnnData:
            stop = start + batch_size
            rows = cells[start:stop] if positions is None else base[positions[start:stop]]
            if rows.isbacked:
                rows = rows.to_memory()
            return compute(rows, start, stop)

        first = block(0)

        def blocks():
            yield first.X
            for start in range(batch_size, cells.n_obs, batch_size):
                yield block(start).X

        images = {k: tuple(v.shape[1:]) for k, v in first.obsm.items()}
        write_rows_h5ad(out, blocks(), n_obs=cells.n_obs, obs=cells.obs.copy(),
                        var=first.var, uns=dict(first.uns), images=images,
                        overwrite=overwrite)
        return read_h5ad(out, backed="r")

    def _translate_rows(self, adata, source, target, batch_size, library_size, target_batch,
                        device) -> AnnData:
        """The members' mean translation of ``adata``, in memory."""
        out = None
        for m in self.models:  # summed in place: the sum and one member's result in memory
            t = m.translate(adata, source=source, target=target, batch_size=batch_size,
                            library_size=library_size, target_batch=target_batch,
                            device=device)
            if out is None:
                out = t
            else:
                out.X += t.X
            del t
        out.X /= len(self.models)
        for key in out.obsm:  # images: the averaged pixels in their own shape
            out.obsm[key] = out.X.reshape(out.obsm[key].shape)
        info = {**out.uns["transmodal"], "ensemble": len(self.models)}
        if "library_size" in info and library_size is None:
            # each member decodes at its own training cells' median: the mean is the sum
            info["library_size"] = float(np.mean([
                float(m.module.transforms[target].library_size) for m in self.models
            ]))
        out.uns["transmodal"] = info
        return out

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
        """Transfer labels with the members' latent classifiers: the class with the highest
        mean probability over members (needs ``labels_key``).

        Parameters
        ----------
        modality
            Which encoder the cells come from.
        adata
            Cells to label; default: the modality's training data.
        classes
            Restrict predictions to these classes (e.g. the classes shared between
            modalities): each member's probabilities are taken over these classes only;
            default: every class the ensemble knows (the members share their classes).
            Numbers name classes as they do in ``labels_key`` (``[0, 1]`` for the classes
            ``"0"``, ``"1"``).
        return_proba
            Return a DataFrame of the members' mean class probabilities (cells x classes)
            instead of labels.
        batch_size
            Cells per forward pass of each member (fewer for wide data: at most 2^24 values
            read, or computed, per pass).
        device
            ``"cpu"`` (default), ``"cuda"`` (or ``"gpu"``, as for training), ``"mps"`` (an
            Apple GPU) or ``"auto"`` (CUDA, else MPS, where available).

        Returns
        -------
        The predicted label per cell (the class with the highest mean probability), or with
        ``return_proba`` the mean class probabilities. Labels are the model's class names,
        strings as in :meth:`CrossModalAE.predict_labels`.
        """
        proba = sum(
            m.predict_labels(modality, adata, classes=classes, return_proba=True,
                             batch_size=batch_size, device=device)
            for m in self.models
        ) / len(self.models)
        if return_proba:
            return proba
        return proba.columns.to_numpy(dtype=object)[proba.to_numpy().argmax(1)]

    # -- persistence -----------------------------------------------------------------------
    @argument_hints
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save to a directory: ``ensemble.json`` and one :meth:`CrossModalAE.save`
        directory per member (``member0``, ``member1``, ...), written atomically as a whole.

        In a multi-process (``torch.distributed``) run only rank 0 writes.

        Parameters
        ----------
        path
            The directory to write (created; it must not exist unless ``overwrite``).
        overwrite
            Replace ``path`` if it holds a saved ensemble or model (and nothing else); any
            other existing directory or file is refused, never deleted.
        """
        if not is_global_zero():  # (as CrossModalAE.save: the first process writes)
            return
        names = [f"member{i}" for i in range(len(self.models))]
        with atomic_directory(path, overwrite=overwrite) as tmp:
            for name, m in zip(names, self.models):
                m.save(tmp / name)
            config = {
                "format": "transmodal-ensemble",
                "format_version": ENSEMBLE_FORMAT_VERSION,
                "members": names,
                "scales": self.scales_.tolist(),
                # (loaded members are checked against them: all of this ensemble)
                "weights_sha256": [
                    read_json(tmp / name / MODEL_CONFIG)["weights_sha256"] for name in names
                ],
            }
            (tmp / ENSEMBLE_CONFIG).write_text(json.dumps(config, indent=1))

    @classmethod
    @argument_hints
    def load(
        cls, path: str | os.PathLike, data: Mapping[str, AnnData] | Any = None, *,
        check_data: bool = True,
    ) -> Ensemble:
        """Load an ensemble saved with :meth:`save`, re-validating ``data`` against it.

        Parameters
        ----------
        path
            The directory written by :meth:`save`.
        data
            ``{name: AnnData}`` or ``MuData`` with the model's ``var_names``, given to every
            member's :meth:`CrossModalAE.load`. Modalities it lacks (all of them with
            ``data=None``; one left out, or given as ``None`` in the dict) stand in
            without cells: the ensemble then embeds and translates new cells passed as
            ``adata=``.
        check_data
            Scan the matrices for values the likelihoods reject (once, by the first
            member's load: the members share the data).

        Returns
        -------
        The ensemble of the loaded members, with the saved per-member scales.

        Raises
        ------
        ValueError
            If a member directory is not the one the ensemble recorded (its weights
            differ), or the members do not form an ensemble.
        """
        path = Path(path)
        names, scales, checksums = read_manifest(path)
        # each member's warnings (e.g. other cells than the training cells) once, at the
        # caller's line; an "error" filter still raises in the first member
        with warnings_once():
            members = [
                CrossModalAE.load(path / name, data, check_data=check_data and i == 0)
                for i, name in enumerate(names)
            ]
        for i, (name, m) in enumerate(zip(names, members)):
            if checksums is not None and getattr(m, "_weights_sha256", None) != checksums[i]:
                raise ValueError(
                    f"{path / name} is not the member that {path / ENSEMBLE_CONFIG} lists "
                    "(its weights differ from those recorded there): saved again on its "
                    "own since, or the ensemble replaced while being read (another process "
                    "saving one there: load it again)"
                )
        try:
            return cls(members, scales=scales)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def read_manifest(path: Path) -> tuple[list[str], list[float], list[str] | None]:
    """The member directories (``member0``, ...), latent scales and the members' weight
    checksums (``None`` for ensembles saved before they were recorded) listed by the
    ensemble saved at ``path``; ``FileNotFoundError`` / ``ValueError`` naming the file
    otherwise."""
    cfg = path / ENSEMBLE_CONFIG
    if not cfg.is_file():
        single = (path / MODEL_CONFIG).is_file()
        raise FileNotFoundError(
            f"{path} is not a saved transmodal Ensemble ({ENSEMBLE_CONFIG} needed)"
            + ("; it holds a single model: load it with tm.CrossModalAE.load" if single else "")
        )
    config = read_json(cfg)
    if not isinstance(config, dict):
        raise ValueError(f"{cfg}: must hold a JSON object, got {type(config).__name__}")
    if config.get("format") != "transmodal-ensemble" or (
        config.get("format_version") != ENSEMBLE_FORMAT_VERSION
    ):
        raise ValueError(
            f"{cfg}: unsupported format {config.get('format')!r} version "
            f"{config.get('format_version')!r} (this transmodal reads transmodal-ensemble "
            f"{ENSEMBLE_FORMAT_VERSION})"
        )
    names = config.get("members")
    if not isinstance(names, list) or not all(
        isinstance(n, str) and n.startswith("member") and n[6:].isdigit() for n in names
    ):
        raise ValueError(f"{cfg}: 'members' must list member directories (member0, ...)")
    if len(set(names)) != len(names):
        raise ValueError(f"{cfg}: 'members' names a directory twice: {names}")
    scales = config.get("scales")
    if not (isinstance(scales, list) and len(scales) == len(names) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in scales
    )):
        raise ValueError(f"{cfg}: 'scales' must list one number per member; got {scales!r}")
    checksums = config.get("weights_sha256")
    if checksums is not None and not (
        isinstance(checksums, list) and len(checksums) == len(names)
        and all(isinstance(c, str) for c in checksums)
    ):
        raise ValueError(f"{cfg}: 'weights_sha256' must list one checksum (a string) per "
                         f"member; got {checksums!r}")
    return names, scales, checksums
