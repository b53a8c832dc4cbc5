"""Turn user input (dict of AnnData or a MuData + Modality specs) into validated modality data."""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ..nn._likelihoods import get_likelihood
from .._utils import (
    align_to_cells, check_unique_obs_names, first_few, is_missing_text, linked_groups,
    user_stacklevel,
)
from ._modality import Modality, check_modality_name
from ._source import (
    MatrixSource, check_values, matrix_of, obsm_feature_names, stored_matrices, values_digest,
)


class BackedFileUnreadable(ValueError):
    """A backed AnnData's file closed, or opened again holding other cells: the model's own
    rows cannot be read (:meth:`ModalityData.source_now` passes this on)."""


@dataclass
class ModalityData:
    """A validated modality: its spec, row source, names, labels and pairing keys."""

    name: str
    spec: Modality
    adata: AnnData
    source: MatrixSource
    var_names: np.ndarray
    obs_names: np.ndarray
    pair_keys: np.ndarray
    labels: np.ndarray | None = None
    markers: np.ndarray | None = None
    batches: np.ndarray | None = None  # batch codes (-1 = unknown) of spec.batch_key
    batch_categories: list[str] | None = None
    # cells per label outside a trained model's label categories (new data given to load())
    unknown_labels: dict[str, int] | None = None
    # {obs column: digest} of the batch / label / marker columns as they were read
    obs_digests: dict[str, int | float | None] | None = None
    # whether every measured value of the matrix was an integer when it was checked (None:
    # not checked, or nothing to tell; see check_values)
    integers: bool | None = None

    def __post_init__(self) -> None:
        self._digests = self._digests_of(self.source.stored)
        # a matrix read from a file: what a few of its rows hold, to tell the file rewritten
        # since (another order, other cells) from the one the model was built on
        self._disk_print = self._rows_print() if self.source.on_disk else None

    def _rows_print(self) -> list[list[float]] | None:
        """Sums and sums of squares of up to 16 rows spread over the matrix."""
        rows = np.unique(np.linspace(0, self.n_obs - 1, min(16, self.n_obs)).astype(np.int64))
        if not len(rows):
            return None
        return _row_moments(self.source.rows(rows))

    def _check_file_unchanged(self) -> None:
        """``BackedFileUnreadable`` if the file the matrix is read from now holds other
        values in the rows :meth:`_rows_print` read when the model was built (rewritten on
        disk since: other cells, or the same in another order), or cannot be read as
        before."""
        then = getattr(self, "_disk_print", None)  # (None: pickled by a version without)
        if then is None or not self.source.on_disk:
            return
        told = (f"modality {self.name!r}: the file its {self.source.where} is read from "
                "holds other values than when the model was built (rewritten on disk since: "
                "other cells, or the same in another order?); pass the cells as adata, or "
                "build the model again")
        try:
            now = self._rows_print()
        except Exception as err:  # (a store rewritten under its cached metadata, e.g. zarr)
            raise BackedFileUnreadable(f"{told} ({type(err).__name__}: {err})") from err
        if now is None or not np.allclose(now, then, rtol=1e-6, atol=1e-9, equal_nan=True):
            raise BackedFileUnreadable(told)

    def _check_var_names(self) -> None:
        """Warn if ``var_names`` were renamed in place since the model was built (its matrix
        unchanged, e.g. to gene symbols): the model reads the matrix as it was built, by the
        features' positions, and names them as then (translations too); the same AnnData
        given as ``adata`` is refused for the new names."""
        if self.spec.obsm_key is not None or np.array_equal(
                np.asarray(self.adata.var_names, dtype=object), self.var_names):
            return  # (the common case, without converting 10^5 names to compare them)
        now = np.asarray(self.adata.var_names, dtype=object).astype(str)
        then = np.asarray(self.var_names, dtype=object).astype(str)
        # (other numbers of features: the matrix changed too, which check_current tells)
        renamed = np.flatnonzero(now != then) if len(now) == len(then) else []
        if not len(renamed):
            return
        i = renamed[0]
        warnings.warn(
            f"modality {self.name!r}: its AnnData's var_names have changed since the model "
            f"was built ({len(renamed)} of {len(now)} renamed, e.g. {str(then[i])!r} -> "
            f"{str(now[i])!r}); the model reads its matrix by the features' positions, as when "
            f"it was built, and names them as then (model.mods[{self.name!r}].var_names): if "
            "the renaming reordered or replaced features, build the model again",
            UserWarning, stacklevel=user_stacklevel(),
        )

    def _digests_of(self, stored: tuple | None) -> tuple | None:
        """:func:`values_digest` of each matrix in ``stored``."""
        if stored is None:
            return None
        return tuple(values_digest(m, len(self.adata)) for m in stored)

    @property
    def n_obs(self) -> int:  # noqa: D102
        return self.source.n_obs

    def check_current(self) -> None:
        """``ValueError`` if the user's AnnData no longer holds the cells the model was built
        with (subset or reordered in place since, e.g. by ``sc.pp.filter_cells``): the model's
        matrix and the AnnData's ``obs`` would belong to different cells. A matrix replaced
        there since (``adata.X = counts``) or edited in place (``sc.pp.scale(adata)``,
        ``adata.X *= 2``; told by :func:`values_digest`) is read anew, with a warning, as
        long as it has the same features (else ``ValueError``; also for a layer or ``obsm``
        entry deleted since)."""
        now = self.adata.obs_names
        if len(now) != self.n_obs or not np.array_equal(np.asarray(now, dtype=object),
                                                        self.obs_names):
            raise ValueError(
                f"modality {self.name!r}: its AnnData has changed since the model was built "
                f"({self.n_obs} -> {len(now)} cells, or other obs_names); pass the cells as "
                "adata, or build the model again"
            )
        if self.source.on_disk and getattr(self.adata, "isbacked", False) \
                and self.spec.obsm_key is None and self.spec.layer is None:
            self._follow_backed_file()
        self._check_file_unchanged()
        held, stored = self.source.stored, stored_matrices(self.adata, self.spec)
        if held is None or stored is None:
            return
        digests = self._digests_of(stored)
        before = getattr(self, "_digests", None)  # (None: pickled by a version without)
        replaced = [a is not b for a, b in zip(held, stored)]
        changed = [r or (before is not None and d != d0)
                   for r, d, d0 in zip(replaced, digests, before or digests)]
        if not any(changed):
            self._check_var_names()
            return
        src, var_names = matrix_of(self.adata, self.spec, self.name)  # (names one gone)
        differ = features_differ(var_names, self.var_names, self.spec)
        if src.image_shape != self.source.image_shape or src.n_vars != self.source.n_vars \
                or differ:
            detail = differ or (f"shape {src.image_shape or src.n_vars}, built with "
                                f"{self.source.image_shape or self.source.n_vars}")
            filtered = ("; e.g. genes filtered in place, as sc.pp.filter_genes does"
                        if self.spec.obsm_key is None else "")
            raise ValueError(
                f"modality {self.name!r}: its AnnData's {src.where} now holds other features "
                f"than when the model was built ({detail}{filtered}); pass the cells as "
                "adata, or build the model again"
            )
        first = changed.index(True)  # (a rate modality's trials may be what changed)
        where = src.where if first == 0 else src.totals.where
        how = "was replaced" if replaced[first] else "was changed in place"
        warnings.warn(
            f"modality {self.name!r}: its AnnData's {where} {how} since the model was "
            f"built; the model reads it as it is now (its preprocessing, fitted when it "
            f"was built, is kept: {where} must hold what it held then, e.g. counts, not "
            "normalised or scaled values)",
            UserWarning, stacklevel=user_stacklevel(),
        )
        self.source, self._digests = src, digests

    def obs_columns_changed(
        self, labels_key: str | None, categories: list[str] | None,
        marker_key: str | list[str] | None,
    ) -> list[str]:
        """The obs columns the model read when it was built (``spec.batch_key``,
        ``labels_key`` in ``categories``, ``marker_key``) whose values have changed in
        ``adata`` since (edited in place, e.g. a batch renamed or merged), each as
        ``"obs['key'] (n cells)"``; a column only re-typed (e.g. made categorical) or with
        its categories reordered has not changed. A column the model did not find when it
        was built (an unlabelled modality's labels added since) is left out: the model
        does not read it."""
        before = getattr(self, "obs_digests", None) or {}  # (None: pickled without)
        changed = []
        for key, then in before.items():
            if then is None or _column_digest(self.adata, key) == then:
                continue
            if key == self.spec.batch_key:
                now = self._codes_now(key, self.batch_categories, "batch_key")
                differ = now != self.batches
            elif key == labels_key:
                now = self._codes_now(key, categories, "labels_key")
                differ = now != self.labels
            else:
                now = marker_values(self.adata, key, self.name, optional=True, warn=False)[:, 0]
                col = (marker_key if isinstance(marker_key, list) else [marker_key]).index(key)
                was = self.markers[:, col]
                differ = ~((now == was) | (np.isnan(now) & np.isnan(was)))
            if key not in self.adata.obs:
                changed.append(f"obs[{key!r}] (removed)")
            elif differ.any():
                changed.append(f"obs[{key!r}] ({int(differ.sum())} cell(s))")
        return changed

    def _codes_now(self, key: str, categories: list[str] | None, field: str) -> np.ndarray:
        """Codes of obs column ``key`` as the model reads them (-1: missing or unknown)."""
        if key not in self.adata.obs or categories is None:
            return np.full(self.n_obs, -1, dtype=np.int64)
        codes, _ = label_codes(self.adata, key, self.name, categories, field, warn=False)
        return np.where(codes < 0, -1, codes)

    def _follow_backed_file(self) -> None:
        """A backed AnnData's ``X`` read from its file as it is open now: ``ValueError``
        naming the file while it is closed; read anew after it was closed and opened again
        (the handles the model held are then invalid), as long as it holds a matrix of the
        same shape (the file must hold the same cells: their names are not in the file's
        matrix, and the AnnData keeps those it read when opened)."""
        file = self.adata.file
        if not file.is_open:
            raise BackedFileUnreadable(
                f"modality {self.name!r}: its AnnData's file {file.filename} is closed; open "
                "it again (adata.file.open()) or pass the cells as adata"
            )
        if self.source.readable:
            return
        src, var_names = matrix_of(self.adata, self.spec, self.name)
        if src.n_obs != self.n_obs or src.n_vars != self.source.n_vars or features_differ(
                var_names, self.var_names, self.spec):
            raise BackedFileUnreadable(
                f"modality {self.name!r}: its AnnData's file {file.filename} now holds a "
                f"matrix of other cells or features ({src.n_obs} x {src.n_vars}, built with "
                f"{self.n_obs} x {self.source.n_vars}) than when the model was built; pass "
                "the cells as adata, or build the model again"
            )
        src.warned, src.stored = self.source.warned, self.source.stored
        self.source = src

    def feature_annotations(self) -> pd.DataFrame | None:
        """The AnnData's ``var`` (gene symbols, peak coordinates) for the model's features,
        in the model's order; ``None`` where its features are not ``var``'s (an ``obsm``
        entry) or ``var`` no longer lists each of them once (features filtered or renamed
        in place since the model was built: a reordering is followed)."""
        if self.spec.obsm_key is not None:
            return None
        var = self.adata.var
        now = pd.Index(np.asarray(var.index, dtype=object).astype(str))
        mine = np.asarray(self.var_names, dtype=object).astype(str)
        if np.array_equal(np.asarray(now), mine):
            return var
        at = now.get_indexer(mine) if now.is_unique else None
        return None if at is None or (at < 0).any() else var.iloc[at]

    def source_now(self) -> MatrixSource:
        """The rows to read: a matrix replaced in the AnnData since, as :meth:`check_current`
        reads it anew; the matrix the model holds where the AnnData changed beyond that
        (cells or features removed, the matrix deleted), for what needs the model's own
        training data rather than the AnnData (a baseline profile, a comparison of runs)."""
        try:
            self.check_current()
        except BackedFileUnreadable:  # (its rows cannot be read at all)
            raise
        except ValueError:
            pass
        return self.source


def _row_moments(block: np.ndarray) -> list[list[float]]:
    """The sum and the sum of squares of each row (float64; unmeasured entries left out)."""
    block = np.asarray(block, dtype=np.float64)
    return [[float(np.nansum(r)), float(np.nansum(r * r))] for r in block]


def row_sums(md: ModalityData, names: list[str]) -> list[list[float]] | None:
    """:func:`_row_moments` of the rows of cells ``names`` of ``md`` (``None`` where one of
    them is not among its cells)."""
    idx = pd.Index([str(v) for v in md.obs_names]).get_indexer(list(names))
    if len(idx) == 0 or (idx < 0).any():
        return None
    return _row_moments(md.source.rows(idx))


def _obsmap_keys(mdata, name: str, obsmap: np.ndarray, mod: AnnData) -> np.ndarray:
    """Global row of each cell of ``mod`` from ``mdata.obsmap[name]``, checked to be current.

    ``obsmap[g]`` is the 1-based row of the modality present at global row ``g`` (0 = absent).
    A modality filtered or reordered after the MuData was built leaves a stale map behind; it
    would pair the wrong cells, so it is refused.
    """
    stale = (
        f"MuData: obsmap[{name!r}] does not match mod[{name!r}] (the modality was filtered, "
        "reordered or its cells renamed after the MuData was built); call mdata.update() "
        "first, or, for renamed cells, build the MuData anew: mdata = "
        "mudata.MuData(dict(mdata.mod))"
    )
    obsmap = obsmap.ravel()
    if obsmap.shape[0] != mdata.n_obs or not np.issubdtype(obsmap.dtype, np.integer):
        raise ValueError(stale)
    present = np.flatnonzero(obsmap > 0)
    rows = obsmap[present].astype(np.int64) - 1
    if (
        len(present) != mod.n_obs
        or rows.max(initial=-1) >= mod.n_obs
        or len(np.unique(rows)) != mod.n_obs
    ):
        raise ValueError(stale)
    if not np.array_equal(
        np.asarray(mdata.obs_names[present]), np.asarray(mod.obs_names[rows])
    ):
        raise ValueError(stale)
    keys = np.zeros(mod.n_obs, dtype=np.int64)
    keys[rows] = present
    return keys


def _as_dict(
    data, names: Any = None
) -> tuple[dict[str, AnnData], dict[str, np.ndarray] | None]:
    """Return the modalities and, for MuData, per-modality global row keys from its obsmap
    (of the modalities ``names`` only, when given: the others are not used, so neither
    checked)."""
    try:
        from mudata import MuData
    except ImportError:  # pragma: no cover - mudata is a dependency
        MuData = ()  # type: ignore[assignment]
    if isinstance(data, MuData):
        mods = dict(data.mod)
        used = [n for n in mods if names is None or n in names]
        # a repeated name breaks the obsmap check below, whose error would blame another
        # modality and a stale map
        for name in used:
            check_unique_obs_names(mods[name], name)
        keys: dict[str, np.ndarray] = {}
        for name in used:
            obsmap = np.asarray(data.obsmap[name]) if name in data.obsmap else None
            if obsmap is None:
                keys = {}
                break
            keys[name] = _obsmap_keys(data, name, obsmap, mods[name])
        return mods, (keys or None)
    if isinstance(data, Mapping):
        return dict(data), None
    one = ""
    if isinstance(data, AnnData):  # totalVI's habit: the other modality in its obsm
        one = feature_types_hint(data) or (
            " (one AnnData holding a modality in obsm, as totalVI's protein_expression: "
            "name it once per modality, {'rna': adata, 'protein': adata} with "
            "Modality(..., obsm_key='protein_expression'))")
    raise ValueError(
        "data must be a dict of AnnData (one per modality) or a MuData, got "
        f"{type(data).__name__}{one}"
    )


def feature_types_hint(adata: Any) -> str:
    """How to split an AnnData whose ``var['feature_types']`` holds several types (10x's
    Multiome / CITE-seq matrix as ``sc.read_10x_h5(path, gex_only=False)`` reads it) into
    one modality per type, to append to a message; ``""`` otherwise."""
    var = getattr(adata, "var", None)
    if var is None or "feature_types" not in var:
        return ""
    kinds = pd.unique(var["feature_types"].astype(object).dropna().to_numpy())
    if len(kinds) < 2:
        return ""
    shown = ", ".join(repr(k) for k in kinds[:4])
    return (f" (its var['feature_types'] holds {shown}, as 10x's combined matrix: "
            "mudata.MuData(adata) splits it into one modality per type, e.g. 'rna' and "
            "'atac'; or adata[:, adata.var['feature_types'] == 'Gene Expression'].copy())")


def global_obs_hint(data: Any, key: str, mods: list[str] | None = None) -> str:
    """How to fix a missing ``obs`` column ``key`` that a MuData ``data`` holds in its global
    ``.obs`` (e.g. after a joint annotation with muon), to append to the error; ``""`` when
    ``data`` is no MuData or its ``.obs`` lacks ``key``.

    Parameters
    ----------
    data
        The user's data (a MuData or a dict of AnnData).
    key
        The column looked up in the modalities' ``obs``.
    mods
        Modalities that lack the column, for the suggested call (``None``: all).
    """
    obs = getattr(data, "obs", None)
    if not hasattr(data, "mod") or obs is None or key not in obs.columns:
        return ""
    mod, sep, col = key.partition(":")
    if sep and mod in data.mod and col in data.mod[mod].obs.columns:  # pulled, so prefixed
        own = (f"; the MuData's global .obs holds {key!r}, the column {col!r} of modality "
               f"{mod!r} under mudata's prefix, and transmodal reads the modalities' own obs: "
               f"pass {col!r}")
        others = [m for m in (mods or []) if m != mod]  # (lacking the column of another)
        if not others:
            return own + " instead"
        return (own + f", and copy the column into {others}, e.g. mdata[{others[0]!r}].obs"
                f"[{col!r}] = mdata.obs.loc[mdata[{others[0]!r}].obs_names, {key!r}]")
    where = "" if mods is None else f", mods={list(mods)!r}"
    if hasattr(type(data), "push_obs"):
        fix = f"copy it into the modalities with mdata.push_obs([{key!r}]{where})"
    else:  # mudata without push_obs
        fix = (
            f"copy it into each modality, e.g. mdata[name].obs[{key!r}] = "
            f"mdata.obs.loc[mdata[name].obs_names, {key!r}]"
        )
    return (
        f"; the MuData's global .obs holds {key!r}, but transmodal reads the modalities' "
        f"own obs — {fix}"
    )


def label_str(value: Any) -> str | None:
    """A label as its class name; ``None`` for a missing one (NaN, None, and the strings
    ``"nan"``, ``"None"``, ``"<NA>"`` and ``""`` that ``astype(str)`` leaves of them).

    Numbers are written alike whatever their dtype (``1``, ``1.0``, ``np.int64(1)`` -> "1"),
    so a column made float by one missing value still shares classes with an integer one.
    """
    if value is None or (pd.api.types.is_scalar(value) and not isinstance(value, str)
                         and pd.isna(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = str(value)
    return None if is_missing_text(text) else text


def _class_key(name: str) -> tuple:
    """Sort key of class names: numbers by value (2 before 10), before other names."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def sorted_classes(names) -> list[str]:
    """Class names sorted as a user reads them: ``["1", "2", "10", "B", "T"]``."""
    return sorted(set(names), key=_class_key)


# R's missing integer (NA_integer_), which reticulate (zellkonverter, sceasy) passes on as a
# number in integer obs columns
_R_NA_INTEGER = -(2**31)


def r_integer_na(column: pd.Series, what: str, *, warn: bool = True) -> np.ndarray:
    """Where an integer obs column holds R's ``NA_integer_`` (-2**31): warned (``warn``), to
    be taken as missing (it would be a class, a batch or a marker value of -2.1e9)."""
    if not pd.api.types.is_integer_dtype(column.dtype):
        return np.zeros(len(column), dtype=bool)
    hit = column.to_numpy(dtype=np.float64, na_value=np.nan) == _R_NA_INTEGER
    if hit.any() and warn:
        warnings.warn(
            f"{what} holds {_R_NA_INTEGER} in {int(hit.sum())} cell(s): R's NA_integer_, as "
            "reticulate (zellkonverter, sceasy) passes it on; taken as missing",
            UserWarning, stacklevel=user_stacklevel(),
        )
    return hit


def label_codes(
    adata: AnnData, labels_key: str, name: str, categories: list[str] | None,
    field: str = "labels_key", *, warn: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """Integer codes of ``adata.obs[labels_key]`` (-1 = missing, -2 = not in ``categories``).

    Without ``categories``, they are the classes the cells carry (sorted by
    :func:`sorted_classes`): unused categories of a categorical column are not classes.
    ``field`` names the argument in messages (``"labels_key"`` or ``"batch_key"``);
    ``warn``: whether to warn about the column (not where it is read a second time).
    """
    if labels_key not in adata.obs:
        raise ValueError(
            f"modality {name!r}: {field} {labels_key!r} not found in obs; "
            f"available columns: {list(adata.obs.columns)}"
        )
    column = adata.obs[labels_key]
    raw = column.astype(object).to_numpy()
    r_na = r_integer_na(column, f"modality {name!r}: {field} {labels_key!r}", warn=warn)
    values = [None if na else label_str(v) for v, na in zip(raw, r_na)]
    if categories is None:
        categories = sorted_classes(v for v in values if v is not None)
        if warn and column.dtype == object:  # a number and its text: one class, said so
            texts = {v for v, r in zip(values, raw) if v is not None and isinstance(r, str)}
            both = sorted(v for v, r in zip(values, raw)
                          if v in texts and v is not None and not isinstance(r, str))
            if both:
                warnings.warn(
                    f"modality {name!r}: {field} {labels_key!r} holds the number {both[0]} "
                    f"and the text {both[0]!r}, read as one "
                    f"{ {'batch_key': 'batch', 'labels_key': 'class'}.get(field, 'value')} "
                    f"{both[0]!r} (e.g. from concatenating AnnData whose ids had other "
                    "types); if they differ, rename one",
                    UserWarning, stacklevel=user_stacklevel(),
                )
        if pd.api.types.is_float_dtype(column.dtype):
            finite = column.to_numpy(dtype=np.float64, na_value=np.nan)
            finite = finite[np.isfinite(finite)]
            if np.any(finite != np.round(finite)) and field == "labels_key" and warn:
                warnings.warn(
                    f"modality {name!r}: labels_key {labels_key!r} holds non-integer numbers "
                    f"({len(categories)} distinct values), each of which becomes a class of "
                    "its own; for a continuous quantity shared by the modalities (e.g. a "
                    "protein ratio, pseudotime) use marker_key instead",
                    UserWarning, stacklevel=user_stacklevel(),
                )
    lookup = {c: i for i, c in enumerate(categories)}
    # str(raw) also matches the categories of models saved before numbers were normalised
    codes = np.array(
        [-1 if v is None else lookup.get(v, lookup.get(str(r), -2)) for v, r in zip(values, raw)],
        dtype=np.int64,
    )
    return codes, categories


def batch_codes(
    md: ModalityData, categories: list[str] | None, *, optional: bool = False, data: Any = None
) -> tuple[np.ndarray, list[str]]:
    """Codes of ``md.adata.obs[md.spec.batch_key]`` in ``categories`` (default: the batches
    the cells carry, sorted) and the categories. Missing values and unknown batches are
    errors unless ``optional`` (then -1, as for a missing column). ``data``: the user's data,
    for a MuData whose global ``.obs`` holds the column (:func:`global_obs_hint`)."""
    key, name = md.spec.batch_key, md.name
    if optional and key not in md.adata.obs and categories is not None:
        return np.full(md.n_obs, -1, dtype=np.int64), list(categories)
    if key not in md.adata.obs:
        raise ValueError(
            f"modality {name!r}: batch_key {key!r} not found in obs; "
            f"available columns: {list(md.adata.obs.columns)}"
            + global_obs_hint(data, key, [name])
        )
    training = categories is None
    codes, categories = label_codes(md.adata, key, name, categories, field="batch_key")
    if optional:
        return np.where(codes < 0, -1, codes), categories
    if training and len(codes) >= 4:
        sizes = np.bincount(codes[codes >= 0], minlength=len(categories))
        alone = int((sizes == 1).sum())
        if alone > len(codes) / 2:
            warnings.warn(
                f"modality {name!r}: batch_key {key!r} puts {alone} of {len(codes)} cells in a "
                f"batch of their own ({len(categories)} batches): a per-cell or continuous "
                "column (a cell id, a measurement), not batches? Batches are groups of cells "
                "measured together (samples, plates, runs)",
                UserWarning, stacklevel=user_stacklevel(),
            )
    if (codes == -1).any():
        texts = sorted({v for v in md.adata.obs[key].astype(object)[codes == -1]
                        if isinstance(v, str)})  # ('None', 'nan', '': a missing value's text)
        read = (f" (the text {texts[0]!r} is read as a missing value, as pandas writes one: "
                "rename that batch)" if texts else "")
        raise ValueError(
            f"modality {name!r}: batch_key {key!r} is missing for {int((codes == -1).sum())} "
            f"cell(s){read}; every cell needs a batch (name unknown ones, e.g. 'unknown')"
        )
    if (codes == -2).any():
        bad = md.adata.obs[key][codes == -2].iloc[0]
        raise ValueError(
            f"modality {name!r}: batch {bad!r} in obs[{key!r}] is not one of the model's "
            f"batches {categories}"
        )
    return codes, categories


def target_batch_codes(
    batches: list[str] | None,
    target: str,
    target_batch: Any,
    obs_names: Any = (),
    what: str = "target_batch",
) -> int | np.ndarray | None:
    """The code of ``target_batch`` among ``batches`` (the batches of modality ``target``;
    ``None``: it has none), or the codes of one batch per cell (cells ``obs_names``; a
    pandas Series is aligned to them by its index unless it has a default RangeIndex);
    ``None`` for ``target_batch=None`` (every batch). Errors name the argument ``what``."""
    if target_batch is None:
        return None
    if batches is None:
        raise ValueError(
            f"{what}: modality {target!r} has no batches (no batch_key in its Modality)"
        )
    per_cell = np.ndim(target_batch) > 0  # a name (string or number), or one per cell
    if per_cell:
        target_batch = align_to_cells(target_batch, obs_names, what)
        values = list(np.asarray(target_batch, dtype=object).ravel())
        if len(values) != len(obs_names):
            raise ValueError(
                f"{what} holds {len(values)} batches for {len(obs_names)} cells; give one "
                "batch name, or one per cell"
            )
    else:
        values = [target_batch]
    names = [label_str(v) for v in values]
    if None in names:
        raise ValueError(
            f"{what} is missing (NaN / None) for {names.count(None)} cell(s); its batches: "
            f"{batches}"
        )
    unknown = sorted({str(v) for v, n in zip(values, names) if n not in batches})
    if unknown:
        raise ValueError(
            f"{what}: {first_few(unknown)} {'is' if len(unknown) == 1 else 'are'} not "
            f"{'a batch' if len(unknown) == 1 else 'batches'} of modality {target!r}; its "
            f"batches: {batches}"
        )
    lookup = {b: i for i, b in enumerate(batches)}
    codes = np.array([lookup[n] for n in names], dtype=np.int64)
    return codes if per_cell else int(codes[0])


def marker_values(
    adata: AnnData,
    marker_key: str | list[str],
    name: str,
    *,
    optional: bool = False,
    data: Any = None,
    warn: bool = True,
) -> np.ndarray:
    """``(n_cells, n_markers)`` float32 marker values from ``obs`` (NaN = not measured).
    ``data``: the user's data, for a MuData whose global ``.obs`` holds a missing column
    (:func:`global_obs_hint`); ``warn``: whether to warn about R's missing integers (not
    where the column is read a second time)."""
    keys = [marker_key] if isinstance(marker_key, str) else list(marker_key)
    cols = []
    for key in keys:
        if key not in adata.obs:
            if optional:
                cols.append(np.full(adata.n_obs, np.nan, dtype=np.float32))
                continue
            raise ValueError(
                f"modality {name!r}: marker_key {key!r} not found in obs; "
                f"available columns: {list(adata.obs.columns)}"
                + global_obs_hint(data, key)
            )
        col = adata.obs[key]
        if not pd.api.types.is_numeric_dtype(col):
            raise ValueError(
                f"modality {name!r}: marker_key {key!r} must be a numeric obs column "
                f"(a continuous marker), got dtype {col.dtype}"
            )
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        r_na = r_integer_na(col, f"modality {name!r}: marker_key {key!r}", warn=warn)
        if r_na.any():  # (a new array: values may be the column's own, read-only, memory)
            values = np.where(r_na, np.nan, values)
        if np.isinf(values).any():
            raise ValueError(f"modality {name!r}: marker_key {key!r} holds infinite values")
        if np.nanmax(np.abs(values), initial=0.0) > np.finfo(np.float32).max:
            raise ValueError(
                f"modality {name!r}: marker_key {key!r} holds values beyond float32's range "
                "(|x| > 3.4e38); rescale the marker (e.g. log)"
            )
        cols.append(values.astype(np.float32))
    return np.stack(cols, axis=1)


def setup_data(
    data,
    modalities: Mapping[str, Modality | dict | str],
    *,
    labels_key: str | None = None,
    label_categories: list[str] | None = None,
    check_data: bool = True,
    labels_optional: bool = False,
    marker_key: str | list[str] | None = None,
    allow_empty: tuple[str, ...] = (),
    batch_categories: Mapping[str, list[str]] | None = None,
    trained: bool = False,
    batches_optional: Collection[str] = (),
) -> tuple[dict[str, ModalityData], list[str] | None]:
    """Validate inputs and collect everything the model needs about each modality.

    Parameters
    ----------
    data
        ``{name: AnnData}`` or a ``MuData``.
    modalities
        ``{name: Modality}`` (a dict or a likelihood name is converted).
    labels_key
        Optional ``obs`` column with shared labels (missing values allowed; a modality
        without the column is unlabelled, but at least one modality must have it).
    label_categories
        Known label categories (when re-validating data for a trained model); labels
        outside them are rejected.
    check_data
        Scan every matrix for NaNs, negative values or non-integers the likelihood rejects.
    labels_optional
        For a trained model's new data: labels outside ``label_categories`` are missing
        instead of an error, and no modality needs the ``labels_key`` column (nor the
        ``marker_key`` columns).
    marker_key
        Optional numeric ``obs`` column(s) of a shared continuous marker (NaN = missing).
    allow_empty
        Modalities whose data may hold no cells (stand-ins for modalities a loaded model
        is used without).
    batch_categories
        Known batches of the modalities with a ``batch_key`` (a trained model's); without
        them, each modality's batches are the values its cells carry. With
        ``labels_optional``, a missing column or an unknown batch gives code -1.
    trained
        The data are given to a trained model (its options fixed): errors of the value scan
        advise to give the data as it was trained on (see :func:`check_values`).
    batches_optional
        Modalities whose cells may carry batches outside ``batch_categories`` (code -1,
        as with ``labels_optional``): a reference model's frozen anchor.

    Returns
    -------
    The modality data by name (in the order of ``modalities``) and the label categories.
    """
    adatas, mudata_keys = _as_dict(data, modalities if isinstance(modalities, Mapping) else None)
    if not isinstance(modalities, Mapping) or len(modalities) == 0:
        raise ValueError("`modalities` must be a dict {name: Modality(...)} with one entry per modality")
    specs: dict[str, Modality] = {}
    for name, spec in modalities.items():
        check_modality_name(name, new=False)  # (a new model's: checked by CrossModalAE)
        if not isinstance(spec, Modality):
            spec = Modality.from_dict(spec, name=name)
        spec.check(name)
        specs[name] = spec
    if len(specs) < 2:
        raise ValueError(f"need at least two modalities, got {list(specs)}")
    missing = [n for n in specs if n not in adatas]
    if missing:
        key = specs[missing[0]].obsm_key
        own = ""  # (a MuData's own obsm, e.g. image patches stored beside its modalities)
        if key is not None and key in getattr(getattr(data, "obsm", None), "keys", list)():
            own = (f" (the MuData's own obsm[{key!r}] is not a modality: put it in an "
                   f"AnnData of its own, mdata.mod[{missing[0]!r}])")
        raise ValueError(
            f"modality {missing[0]!r} has a spec but no data; data holds {sorted(adatas)}{own}"
        )

    read: dict[tuple, str] = {}  # (one matrix read as two modalities)
    for name, spec in specs.items():
        if not isinstance(adatas[name], AnnData):  # (refused below, by matrix_of)
            continue
        where = (id(adatas[name]), spec.layer, spec.obsm_key)
        if where in read:
            raise ValueError(
                f"modalities {read[where]!r} and {name!r} read the same matrix of the same "
                "AnnData; each modality is its own features (a matrix in a layer or obsm: "
                "Modality(layer=) / Modality(obsm_key=))" + feature_types_hint(adatas[name])
            )
        read[where] = name
    out: dict[str, ModalityData] = {}
    for name, spec in specs.items():
        adata = adatas[name]
        src, var_names = matrix_of(adata, spec, name)
        if (src.n_obs == 0 and name not in allow_empty) or src.n_vars == 0:
            raise ValueError(f"modality {name!r}: {src.where} is empty (shape {src.shape})")
        obs_names = np.asarray(adata.obs_names, dtype=object)
        check_unique_obs_names(adata, name, spec.batch_key)
        if not pd.Index(var_names).is_unique:
            dup = pd.Index(var_names)[pd.Index(var_names).duplicated()][0]
            what, fix = (("var_names", "call adata.var_names_make_unique()")
                         if spec.obsm_key is None else
                         (f"the columns of obsm[{spec.obsm_key!r}]",
                          "make them unique: df.columns = anndata.utils."
                          "make_index_unique(df.columns.astype(str))"))
            warnings.warn(
                f"modality {name!r}: {what} are not unique (e.g. {dup!r}); features are "
                "matched by name when new data are embedded or translated and translations "
                f"are named by them — {fix}",
                UserWarning, stacklevel=user_stacklevel(),
            )
        if not trained and spec.obsm_key is None:
            _warn_unused_feature_selection(adata, name, src.n_vars)
            if hint := feature_types_hint(adata):
                warnings.warn(f"modality {name!r}: the model reads every feature of its "
                              f"matrix as one modality{hint}", UserWarning,
                              stacklevel=user_stacklevel())
        if spec.n_pca is not None and spec.n_pca >= src.n_vars:
            raise ValueError(
                f"modality {name!r}: field 'n_pca' = {spec.n_pca} must be smaller than the "
                f"number of features ({src.n_vars})"
            )
        if src.image_shape is not None:
            check_image_spec(spec, src.image_shape, name)
        integers = check_values(src, spec, new_cells=trained) if check_data else None
        keys = mudata_keys[name] if mudata_keys is not None else obs_names
        out[name] = ModalityData(name, spec, adata, src, var_names, obs_names, keys,
                                 integers=integers)
    if marker_key is not None:
        for name, md in out.items():
            md.markers = marker_values(
                md.adata, marker_key, name, optional=labels_optional, data=data
            )
    for name, md in out.items():
        if md.spec.batch_key is not None:
            known = None if batch_categories is None else batch_categories.get(name)
            md.batches, md.batch_categories = batch_codes(
                md, known, optional=labels_optional or name in batches_optional, data=data
            )
    categories = list(label_categories) if label_categories is not None else None
    if labels_key is not None:
        # a modality without the column is unlabelled (e.g. the one labels are transferred to)
        labelled = {n: md for n, md in out.items() if labels_key in md.adata.obs}
        if not labelled and not labels_optional:
            columns = {n: list(md.adata.obs.columns)[:10] for n, md in out.items()}
            raise ValueError(
                f"labels_key {labels_key!r} is not an obs column of any modality; "
                f"their columns: {columns}" + global_obs_hint(data, labels_key)
            )
        read = categories is None  # (the columns read once already: warned then)
        if read:  # union of every modality's categories
            found: set[str] = set()
            for name, md in labelled.items():
                found |= set(label_codes(md.adata, labels_key, name, None)[1])
            categories = sorted_classes(found)
        for name, md in out.items():
            if name not in labelled:
                md.labels = np.full(md.n_obs, -1, dtype=np.int64)
                continue
            codes, _ = label_codes(md.adata, labels_key, name, categories, warn=not read)
            if (codes == -2).any() and not labels_optional:
                bad = md.adata.obs[labels_key][codes == -2].iloc[0]
                raise ValueError(
                    f"modality {name!r}: label {bad!r} in obs[{labels_key!r}] is not one of the "
                    f"model's label categories {categories}"
                )
            if (codes == -2).any():
                unknown = md.adata.obs[labels_key].astype(object)[codes == -2].map(label_str)
                md.unknown_labels = {str(k): int(v) for k, v in unknown.value_counts().items()}
            md.labels = np.where(codes == -2, -1, codes)
        if not labels_optional and not any((md.labels >= 0).any() for md in out.values()):
            raise ValueError(f"labels_key {labels_key!r}: no cell of any modality has a label")
        if label_categories is None:
            # the classes each labelled modality's cells hold
            seen = {n: set(np.unique(md.labels[md.labels >= 0]).tolist()) for n, md in out.items()}
            _warn_one_class(seen, categories, labels_key)
            _warn_disjoint_labels(seen, categories, labels_key)
            _warn_near_duplicate_classes(seen, categories, labels_key)
            _warn_unlabelled_markers(categories, labels_key)
    markers = [] if marker_key is None else (
        [marker_key] if isinstance(marker_key, str) else list(marker_key))
    for md in out.values():  # (to tell the columns edited since: obs_columns_changed)
        keys = [k for k in (md.spec.batch_key, labels_key) if k is not None] + markers
        md.obs_digests = {k: _column_digest(md.adata, k) for k in keys}
    return out, categories


def _column_digest(adata: AnnData, key: str) -> int | None:
    """A digest of the values of ``adata.obs[key]`` (None: no such column; NaN, equal to
    no digest: values that cannot be hashed, compared each time)."""
    if key not in adata.obs:
        return None
    try:  # (per value: a categorical hashes as its values, whatever its categories' order)
        hashed = pd.util.hash_pandas_object(adata.obs[key], index=False).to_numpy()
    except TypeError:  # (e.g. a column of lists)
        return float("nan")
    # in the cells' order: values moved to other cells are a change
    return int.from_bytes(hashlib.blake2b(hashed.tobytes(), digest_size=8).digest(), "little")


def _warn_unused_feature_selection(adata: AnnData, name: str, n_vars: int) -> None:
    """Warn that ``var["highly_variable"]`` (scanpy's selection, which scGLUE and
    ``sc.pp.pca`` follow by default) selects nothing here: the model reads every feature."""
    col = adata.var["highly_variable"] if "highly_variable" in adata.var else None
    if col is None or len(col) != n_vars or not pd.api.types.is_bool_dtype(col):
        return
    # (a categorical of booleans, as an .h5ad file may give it back, or nullable booleans)
    n = int(col.to_numpy(dtype=bool, na_value=False).sum())
    if 0 < n < n_vars:
        warnings.warn(
            f"modality {name!r}: var['highly_variable'] marks {n} of {n_vars} features, but "
            "the model reads every feature of its matrix; to model the selected ones, subset "
            "first: adata[:, adata.var['highly_variable']].copy()",
            UserWarning, stacklevel=user_stacklevel(),
        )


def label_conflicts(
    mods: Mapping[str, ModalityData], categories: list[str]
) -> list[tuple[str, str, int, tuple[Any, str, str]]]:
    """Paired cells (present in two modalities, see :func:`find_pairs`) labelled differently
    in the two.

    Only cells labelled in both modalities count: a label missing on one side (code -1)
    is no conflict.

    Parameters
    ----------
    mods
        The modalities, with their label codes (``ModalityData.labels``) set.
    categories
        The label categories the codes index.

    Returns
    -------
    For each pair of modalities ``(a, b)`` with a conflict: ``(a, b, n_cells, (cell,
    label_in_a, label_in_b))`` with an example cell (its ``obs_name`` in ``a``).
    """
    out = []
    for a, b in combinations(mods, 2):
        ma, mb = mods[a], mods[b]
        if ma.labels is None or mb.labels is None:
            continue
        ia, ib = find_pairs(ma, mb)
        la, lb = ma.labels[ia], mb.labels[ib]
        differ = np.flatnonzero((la >= 0) & (lb >= 0) & (la != lb))
        if len(differ):
            i = differ[0]
            example = (ma.obs_names[ia[i]], categories[la[i]], categories[lb[i]])
            out.append((a, b, len(differ), example))
    return out


def warn_label_conflicts(
    mods: Mapping[str, ModalityData], categories: list[str], labels_key: str
) -> None:
    """Warn about paired cells whose label differs between two modalities (the latent
    classifier would be trained on both labels for the same cell, and the anchor loss pull
    it together); for models that pair cells (``anchor_fraction > 0``), where shared
    ``obs_names`` name the same cell."""
    conflicts = label_conflicts(mods, categories)
    if not conflicts:
        return
    found = "; ".join(
        f"modalities {a!r} and {b!r}: {n} paired cell(s) (e.g. {cell!r}: {la!r} in {a!r}, "
        f"{lb!r} in {b!r})"
        for a, b, n, (cell, la, lb) in conflicts
    )
    warnings.warn(
        f"labels_key {labels_key!r}: paired cells (the same cell in two modalities) carry "
        f"different labels, and the classifier would learn both for one cell: {found}. "
        "Make the labels agree (or set one side to NaN where it is unsure).",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def class_groups(classes: Mapping[str, set | None]) -> list[list[str]]:
    """The modalities grouped by chains of shared label classes (``None``: a modality that
    links to every other): modalities in different groups share no class, directly or
    through others."""
    return linked_groups(
        list(classes),
        lambda a, b: classes[a] is None or classes[b] is None or bool(classes[a] & classes[b]),
    )


def _warn_one_class(seen: dict[str, set[int]], categories: list[str], labels_key: str) -> None:
    """Warn where every labelled cell is of one class (a constant column such as
    ``cell_line`` or ``organism``): the classifier has nothing to tell apart, and the
    labels cannot align the modalities (so they do not turn the shape-based pseudo-pairs
    off either). ``seen``: the classes (codes) of each modality's cells."""
    found = set().union(*seen.values()) if seen else set()
    if len(found) != 1:
        return
    warnings.warn(
        f"labels_key {labels_key!r}: every labelled cell is of one class "
        f"({categories[found.pop()]!r}), so the latent classifier has nothing to tell apart "
        "and the labels cannot align the modalities; leave labels_key out, or give a column "
        "of cell types",
        UserWarning, stacklevel=user_stacklevel(),
    )


def _warn_disjoint_labels(
    seen: dict[str, set[int]], categories: list[str], labels_key: str
) -> None:
    """Warn about groups of labelled modalities that share no class, not even through other
    modalities (the labels then cannot align them, e.g. "1" in one modality and "type1" in
    the other). ``seen``: the classes (codes) of each modality's cells."""
    seen = {n: s for n, s in seen.items() if s}
    groups = class_groups(seen)
    if len(groups) < 2:
        return
    listed = " and ".join(
        ", ".join(f"{n!r} {[categories[i] for i in sorted(seen[n])][:5]}" for n in g)
        for g in groups
    )
    warnings.warn(
        f"labels_key {labels_key!r}: modalities share no label class, so the labels cannot "
        f"align them: {listed}. Check that the modalities name their classes alike.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def _warn_near_duplicate_classes(
    seen: dict[str, set[int]], categories: list[str], labels_key: str
) -> None:
    """Warn about classes whose names differ only in case or whitespace ("B cell" and
    "B cell "): they are separate classes, and where each modality has its own spelling the
    classifier pushes the two modalities' cells apart."""
    spellings: dict[str, list[int]] = {}
    for i, name in enumerate(categories):
        spellings.setdefault(" ".join(name.split()).casefold(), []).append(i)
    clashes = [ids for ids in spellings.values() if len(ids) > 1]
    if not clashes:
        return

    def where(i: int) -> str:
        return f"{categories[i]!r} ({', '.join(repr(n) for n, s in seen.items() if i in s)})"

    listed = "; ".join(" / ".join(where(i) for i in ids) for ids in clashes[:5])
    warnings.warn(
        f"labels_key {labels_key!r}: classes whose names differ only in case or whitespace "
        f"are separate classes: {listed}. If they are the same cell type, name them alike "
        "(e.g. obs[key].str.strip()) before building the model",
        UserWarning, stacklevel=user_stacklevel(),
    )


# class names that often mark cells without a label (scANVI's unlabeled_category; "NA"
# left as a string, where pandas.read_csv would have read a missing value)
_UNLABELLED_NAMES = ("unknown", "unlabeled", "unlabelled", "unassigned", "undetermined",
                     "na", "n/a")


def _warn_unlabelled_markers(categories: list[str], labels_key: str) -> None:
    """Warn about classes named like a marker of unlabelled cells ("Unknown"): they are
    trained as a class (its cells pulled together, other cells assigned to it), not left
    unlabelled as NaN is."""
    found = [c for c in categories if " ".join(c.split()).casefold() in _UNLABELLED_NAMES]
    if found:
        names = ", ".join(map(repr, found))
        one = len(found) == 1
        warnings.warn(
            f"labels_key {labels_key!r}: {names} "
            + ("is trained as a class" if one else "are trained as classes")
            + " like any other (cells are pulled together by class, and other cells can be "
            f"assigned to {'it' if one else 'them'}); if {'it marks' if one else 'they mark'} "
            f"cells without a label, set those to NaN first (obs[key] = "
            f"obs[key].mask(obs[key].isin({list(found)!r})))",
            UserWarning, stacklevel=user_stacklevel(),
        )


def feature_mismatch(given, expected) -> str:
    """How two lists of feature names differ, for error messages (``""`` if they are equal)."""
    given, expected = [str(v) for v in given], [str(v) for v in expected]
    if given == expected:
        return ""
    fix = "the model's features of a modality are model.mods[name].var_names"
    if sorted(given) == sorted(expected):
        if len(set(given)) < len(given):  # (indexing by repeated names fails)
            return (f"the same {len(given)} features in another order, and their names "
                    "repeat, so they cannot be put in order by name: give them in the order "
                    "the model was trained with")
        return f"the same {len(given)} features in another order; reorder them ({fix})"
    lacking = [v for v in expected if v not in set(given)]
    extra = [v for v in given if v not in set(expected)]
    parts = [f"{len(given)} features given, {len(expected)} expected"]
    def dashed(v: str) -> str:  # (peaks: 'chr1:1-9', 'chr1-1-9', 'chr1_1_9')
        return re.sub(r"[:_-]", "-", v)

    plain = {dashed(v): v for v in expected}
    renamed = [(v, plain[dashed(v)]) for v in extra if dashed(v) in plain]
    if lacking and len(renamed) == len(extra) == len(lacking):
        return (f"the same {len(given)} features named with other separators (e.g. "
                f"{renamed[0][0]!r} here, {renamed[0][1]!r} in the model, as peaks are "
                f"written by different tools); name them as the model does ({fix})")
    if lacking:
        parts.append(f"{len(lacking)} missing (e.g. {lacking[:3]}); they must be added")
    if extra:
        parts.append(f"{len(extra)} not in the model (e.g. {extra[:3]})")
    return "; ".join(parts) + f"; {fix}"


def features_differ(given, expected, spec: Modality) -> str:
    """:func:`feature_mismatch` of a modality's features, which are matched by name where
    both sides name them: always for ``X`` and layers, for an ``obsm`` matrix only where both
    are DataFrames with named columns (an array's columns can only be taken by position)."""
    if spec.obsm_key is not None:
        unnamed = [
            list(map(str, names)) == list(obsm_feature_names(spec.obsm_key, len(names)))
            for names in (given, expected)
        ]
        if any(unnamed):
            return ""
    return feature_mismatch(given, expected)


def warn_unnamed_columns(given, expected, spec: Modality, name: str) -> None:
    """Warn when an ``obsm`` matrix's columns are taken by position where one side names
    them: an array for a modality whose model knows its columns by name (a DataFrame at
    training), or named columns for a model that knows them only by position (trained on an
    array, or saved before their names were recorded): a reordering would go unnoticed."""
    if spec.obsm_key is None or len(given) != len(expected):
        return
    default = list(map(str, obsm_feature_names(spec.obsm_key, len(given))))
    positions = [str(i) for i in range(len(expected))]  # columns named 0..n-1: positions
    given, expected = list(map(str, given)), list(map(str, expected))
    if given == default and expected not in (default, positions):
        warnings.warn(
            f"modality {name!r}: obsm[{spec.obsm_key!r}] is an array without column names, but "
            f"the model knows its columns by name ({expected[:3]}...): they are "
            "taken by position; pass a DataFrame with named columns to have them checked",
            UserWarning, stacklevel=user_stacklevel(),
        )
    elif expected == default and given not in (default, positions):
        warnings.warn(
            f"modality {name!r}: obsm[{spec.obsm_key!r}] names its columns ({given[:3]}...), "
            "but the model knows them only by position (it was trained on an array, or saved "
            "before their names were recorded): they are taken in the order given, unchecked",
            UserWarning, stacklevel=user_stacklevel(),
        )


def check_image_spec(spec: Modality, image_shape: tuple[int, ...], name: str) -> None:
    """Reject settings an image modality cannot use, naming the modality and field."""
    lik = get_likelihood(spec.likelihood)
    if lik.image_keys is None:
        raise ValueError(
            f"modality {name!r}: field 'likelihood': {spec.likelihood!r} cannot model images "
            f"{image_shape}; use 'gaussian', 'continuous_bernoulli' or 'bernoulli'"
        )
    if spec.n_pca is not None:
        raise ValueError(f"modality {name!r}: field 'n_pca' is not supported for images")
    if spec.missing:
        raise ValueError(
            f"modality {name!r}: field 'missing' is not supported for images (crops are "
            "masked to their nucleus: pixels outside it are 0, not unmeasured)"
        )
    if spec.normalize or spec.log1p:
        raise ValueError(
            f"modality {name!r}: fields 'normalize' / 'log1p' are not supported for images"
        )
    if spec.architecture is not None:
        raise ValueError(
            f"modality {name!r}: field 'architecture': registered architectures are for "
            f"matrix modalities; images {image_shape} use the built-in convolutional "
            "networks ('hidden' sets their channels)"
        )


def find_pairs(a: ModalityData, b: ModalityData) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(ia, ib)`` of cells present in both modalities (equal pairing keys).

    Parameters
    ----------
    a
        The first validated modality.
    b
        The second validated modality.

    Returns
    -------
    Two int64 arrays ``(ia, ib)`` of equal length: row ``ia[k]`` of ``a`` and row ``ib[k]``
    of ``b`` have the same pairing key, in the order of the rows of ``a``.
    """
    pos_b = pd.Index(b.pair_keys)
    ib = pos_b.get_indexer(a.pair_keys)
    ia = np.flatnonzero(ib >= 0)
    return ia.astype(np.int64), ib[ia].astype(np.int64)
