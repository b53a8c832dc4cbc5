"""Plots of :mod:`transmodal.analysis` results: ROC, DE agreement, co-association, LDA.

Every function draws into ``ax`` (a new figure when ``None``) and returns the Axes; none
calls ``plt.show``.  A figure made here is closed again if drawing it fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ..analysis import ClusterRobustness, DEComparison, ROCResult
from ..analysis._de import DIRECTIONS, check_de_pair, effect_correlations, shared_markers
from ..analysis._inputs import get_labels, get_latent
from ..data._setup import sorted_classes
from ._embedding import _class_names, _closing_on_error, _palette, _subplots

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")


@contextmanager
def _axes(ax, figsize: tuple[float, float]) -> Iterator:
    """``ax``, or the Axes of a new pyplot figure that is closed if drawing fails."""
    if ax is not None:
        yield ax
        return
    fig, axes = _subplots(None, 1, 1, figsize)
    with _closing_on_error(fig):
        yield axes[0, 0]
        fig.tight_layout()  # a legend beside the axes stays in a plain savefig too


def _check_result(result: Any, cls: type, made_by: str) -> None:
    """``TypeError`` naming ``result`` unless it is a ``cls`` (made by ``made_by``)."""
    if not isinstance(result, cls):
        raise TypeError(
            f"result: expected the {cls.__name__} of transmodal.analysis.{made_by}, got "
            f"{type(result).__name__}"
        )


def roc(result: ROCResult, *, ax: Axes | None = None, title: str | None = None) -> Axes:
    """ROC curve(s) of :func:`transmodal.analysis.translated_classifier_roc`.

    Parameters
    ----------
    result
        A :class:`~transmodal.analysis.ROCResult`.
    ax
        Axes to draw into; default a new figure.
    title
        Axes title (default: the AUC).

    Returns
    -------
    The matplotlib Axes.
    """
    _check_result(result, ROCResult, "translated_classifier_roc")
    with _axes(ax, (4.2, 4.0)) as ax:
        for c, curve in result.curves.items():
            ax.plot(curve.fpr, curve.tpr, lw=1.6, label=f"{c} (AUC {curve.auc:.3f})")
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        kind = "AUC" if result.positive is not None else "macro AUC"
        ax.set_title(title if title is not None else f"{kind} {result.auc:.3f}")
        ax.legend(fontsize=8, frameon=False, loc="lower right")
    return ax


def de_scatter(
    pred: pd.DataFrame,
    obs: pd.DataFrame,
    *,
    column: str = "log2fc",
    ax: Axes | None = None,
    highlight: bool = True,
    xlabel: str = "observed",
    ylabel: str = "predicted",
    point_size: float = 6.0,
) -> Axes:
    """Scatter of the predicted vs observed effect per feature (two DE results).

    Parameters
    ----------
    pred, obs
        Outputs of :func:`transmodal.analysis.differential_expression`; features in both
        are drawn.
    column
        The effect drawn: ``"log2fc"`` (default) or ``"mean_diff"`` (the effect whose
        correlation :func:`~transmodal.analysis.compare_differential` reports by default;
        the two correlate alike for log1p data with pseudocount 1).
    ax
        Axes to draw into; default a new figure.
    highlight
        Colour features that are markers in one or both results (in both: in the same
        direction, or in opposite ones), chosen among the features of both as
        :func:`~transmodal.analysis.compare_differential` and :func:`marker_overlap` count
        them (tables without p-values, or made with different ``n_top`` / ``alpha``: their
        ``marker`` columns).
    xlabel, ylabel
        Axis labels (the column name is appended).
    point_size
        Marker size.

    Returns
    -------
    The matplotlib Axes; the title gives the Pearson correlation.
    """
    check_de_pair(pred, obs, column)
    common = pred.index.intersection(obs.index, sort=False)
    if len(common) == 0:
        raise ValueError("pred and obs share no features")
    x = obs.loc[common, column].to_numpy(float)
    y = pred.loc[common, column].to_numpy(float)
    drawn = int((np.isfinite(x) & np.isfinite(y)).sum())  # NaN effects are not drawn
    with _axes(ax, (4.4, 4.2)) as ax:
        masks = None
        if highlight and all({"t", "pval", "pval_adj", "direction"} <= set(de.columns)
                             for de in (pred, obs)):
            try:
                chosen = shared_markers(pred, obs)
                masks = [common.isin(chosen[k]["up"] + chosen[k]["down"])
                         for k in ("pred", "obs")]
            except ValueError:  # (made with different n_top / alpha: their own markers)
                pass
        if highlight and masks is None and "marker" in pred and "marker" in obs:
            masks = [de.loc[common, "marker"].to_numpy(bool) for de in (pred, obs)]
        if masks is not None:
            mp, mo = masks
            # markers of both results in opposite directions (a translation with the
            # sign wrong) are not shared ones, as compare_differential counts them
            if "direction" in pred and "direction" in obs:
                same = (pred.loc[common, "direction"].to_numpy()
                        == obs.loc[common, "direction"].to_numpy())
            else:
                same = np.sign(x) == np.sign(y)
            groups = [
                (~mp & ~mo, "lightgrey", "other"),
                (mo & ~mp, "tab:blue", "marker: observed only"),
                (mp & ~mo, "tab:orange", "marker: predicted only"),
                (mp & mo & same, "tab:red", "marker: both"),
                (mp & mo & ~same, "tab:purple", "marker: both, opposite directions"),
            ]
            for mask, colour, label in groups:
                if mask.any():
                    ax.scatter(x[mask], y[mask], s=point_size, color=colour, label=label,
                               linewidths=0)
            ax.legend(fontsize=7, frameon=False, markerscale=2)
        else:
            ax.scatter(x, y, s=point_size, color="tab:blue", linewidths=0)
        finite = np.isfinite(x) & np.isfinite(y)
        if finite.any():
            lo = min(x[finite].min(), y[finite].min())
            hi = max(x[finite].max(), y[finite].max())
            ax.plot([lo, hi], [lo, hi], ls="--", lw=0.8, color="grey")
        ax.axhline(0, lw=0.5, color="black")
        ax.axvline(0, lw=0.5, color="black")
        r, _ = effect_correlations(x, y)
        left_out = f", {len(common) - drawn} NaN left out" if drawn < len(common) else ""
        ax.set_title(f"Pearson r = {r:.3f} ({drawn} features{left_out})")
        ax.set_xlabel(f"{xlabel} {column}")
        ax.set_ylabel(f"{ylabel} {column}")
    return ax


def marker_overlap(
    result: DEComparison,
    *,
    ax: Axes | None = None,
    labels: tuple[str, str] = ("predicted", "observed"),
) -> Axes:
    """Bars of the marker overlap of :func:`transmodal.analysis.compare_differential`.

    Per direction: markers in each result, their overlap and the overlap expected by
    chance; the hypergeometric p-value and Jaccard index are written above.

    Parameters
    ----------
    result
        A :class:`~transmodal.analysis.DEComparison`.
    ax
        Axes to draw into; default a new figure.
    labels
        Names of the predicted and observed results.

    Returns
    -------
    The matplotlib Axes.

    Raises
    ------
    ValueError
        Before drawing, if ``result.overlap`` lacks a direction or count column, or holds no
        finite marker count (e.g. all NaN).
    """
    _check_result(result, DEComparison, "compare_differential")
    ov = result.overlap
    bars = [
        ("n_pred", f"markers {labels[0]}", "tab:orange"),
        ("n_obs", f"markers {labels[1]}", "tab:blue"),
        ("n_overlap", "overlap", "tab:red"),
        ("expected", "expected overlap", "lightgrey"),
    ]
    needed = [b[0] for b in bars] + ["pval", "jaccard"]
    lacking = [d for d in DIRECTIONS if d not in ov.index] + [c for c in needed if c not in ov]
    if lacking:
        raise ValueError(f"result.overlap: no row or column {lacking}")
    counts = ov.loc[list(DIRECTIONS), [b[0] for b in bars]].to_numpy(float)
    finite = np.isfinite(counts)
    if not finite.any():
        raise ValueError(
            "result.overlap: no finite marker count (all NaN); there is nothing to draw"
        )
    top = float(counts[finite].max())
    with _axes(ax, (5.0, 3.8)) as ax:
        pos = np.arange(len(DIRECTIONS))
        width = 0.8 / len(bars)
        for i, (col, label, colour) in enumerate(bars):
            offset = (i - (len(bars) - 1) / 2) * width
            ax.bar(pos + offset, ov.loc[list(DIRECTIONS), col], width, label=label, color=colour)
        for p, d in zip(pos, DIRECTIONS):
            row = ov.loc[d]
            text = (f"p = {row['pval']:.2g}\nJaccard {row['jaccard']:.2f}"
                    if row["n_pred"] + row["n_obs"] else "no markers")
            ax.text(p, top * 1.05 + 0.5, text,
                    ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, top * 1.35 + 1)
        ax.set_xticks(pos)
        ax.set_xticklabels([f"{d} in group" for d in DIRECTIONS])
        ax.set_ylabel("markers")
        ax.set_title(f"marker overlap ({result.n_common} common features)", fontsize=10)
        ax.legend(fontsize=7, frameon=False, loc="upper right", ncol=2)
    return ax


def coassociation(
    result: ClusterRobustness,
    *,
    ax: Axes | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
) -> Axes:
    """Heat map of the co-association matrix of :func:`transmodal.analysis.cluster_robustness`.

    Rows and columns are ordered by the leaves of its average-linkage dendrogram, so stable
    clusters show as bright diagonal blocks.

    Parameters
    ----------
    result
        A :class:`~transmodal.analysis.ClusterRobustness`.
    ax
        Axes to draw into; default a new figure.
    cmap
        Colour map.
    colorbar
        Draw a colour bar.

    Returns
    -------
    The matplotlib Axes.
    """
    from scipy.cluster.hierarchy import leaves_list

    _check_result(result, ClusterRobustness, "cluster_robustness")
    order = leaves_list(result.linkage)
    with _axes(ax, (4.8, 4.2)) as ax:
        im = ax.imshow(result.coassociation[np.ix_(order, order)], cmap=cmap, vmin=0, vmax=1,
                       interpolation="nearest", aspect="auto")
        if colorbar:
            ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="co-association")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{len(order)} cells (dendrogram order)")
        ax.set_title(f"suggested k = {result.suggested_k}")
    return ax


def lda(
    data: AnnData | np.ndarray | Mapping[str, AnnData | np.ndarray],
    clusters: str | Any,
    *,
    modality: str | Any | None = None,
    use_rep: str | None = "X_transmodal",
    ax: Axes | None = None,
    point_size: float = 10.0,
    title: str | None = None,
    seed: int = 0,
) -> Axes:
    """Linear discriminant projection of a joint latent space, coloured by cluster.

    The paper's Fig. 4b: :class:`sklearn.discriminant_analysis.LinearDiscriminantAnalysis`
    is fitted on the latent coordinates of all cells with their cluster labels and the cells
    are drawn on the first two discriminants, one marker shape per modality.  With two
    clusters there is one discriminant: it is the x axis and the modalities are drawn as
    jittered rows.

    Cluster labels are class names as the models write them: ``1``, ``1.0`` and ``"1"`` are
    one cluster "1" (see :func:`transmodal.data._setup.label_str`).

    Parameters
    ----------
    data
        The latent: an AnnData (``obsm[use_rep]``; ``X`` when ``use_rep=None``), an array,
        or ``{modality: AnnData or array}`` (cells of all modalities are projected together).
    clusters
        Cluster labels: an ``obs`` key, an array over all cells, or ``{modality: labels}``.
    modality
        Single AnnData/array input: the modality of each cell (``obs`` key or array) to
        draw with different markers.  Taken from the keys for a mapping.
    use_rep
        ``obsm`` key of AnnData inputs.
    ax
        Axes to draw into; default a new figure.
    point_size
        Marker size.
    title
        Axes title.
    seed
        Seed of the drawing order and of the jitter.

    Returns
    -------
    The matplotlib Axes.

    Raises
    ------
    ValueError
        Before drawing, if a cell has no cluster label or modality (NaN, None, ``""``), there
        are fewer than 2 clusters, or the inputs do not match (see the parameters).
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    if isinstance(data, Mapping):
        if not data:
            raise ValueError("data is an empty mapping")
        zs, labs, mods = [], [], []
        for name, d in data.items():
            if isinstance(clusters, Mapping) and name not in clusters:
                raise ValueError(f"clusters has no entry for modality {name!r}")
            z = get_latent(d, use_rep, f"modality {name!r}")
            lab = clusters[name] if isinstance(clusters, Mapping) else clusters
            zs.append(z)
            labs.append(get_labels(d, lab, len(z), f"clusters of modality {name!r}"))
            mods.append(np.full(len(z), str(name), dtype=object))
        dims = {z.shape[1] for z in zs}
        if len(dims) > 1:
            raise ValueError(f"the modalities' latents have different dimensions {sorted(dims)}")
        z, lab, mod = np.vstack(zs), np.concatenate(labs), np.concatenate(mods)
    else:
        z = get_latent(data, use_rep, "data")
        lab = get_labels(data, clusters, len(z), "clusters")
        mod = None if modality is None else get_labels(data, modality, len(z), "modality")
        if mod is not None:
            mod = _class_names(mod, "modality")
    lab = _class_names(lab, "clusters")  # 1, 1.0 and "1" are one cluster "1"
    classes = sorted_classes(lab.tolist())
    if len(classes) < 2:
        raise ValueError(f"LDA needs at least 2 clusters, got {classes}")
    n_comp = min(2, len(classes) - 1, z.shape[1])
    if not np.ptp(z, axis=0).any():
        raise ValueError(
            f"every cell has the same latent coordinates ({z.shape[1]} dimensions): LDA has no "
            "direction to separate the clusters (an untrained or collapsed model?)"
        )
    xy = LinearDiscriminantAnalysis(n_components=n_comp).fit_transform(z, lab)
    rng = np.random.default_rng(seed)
    mod_names = [None] if mod is None else list(dict.fromkeys(mod.tolist()))
    if n_comp == 1:
        row = np.zeros(len(z)) if mod is None else np.array([mod_names.index(m) for m in mod], float)
        xy = np.column_stack([xy[:, 0], row + rng.uniform(-0.3, 0.3, len(z))])

    colour = dict(zip(classes, _palette(len(classes))))
    with _axes(ax, (5.0, 4.4)) as ax:
        for j, m in enumerate(mod_names):
            sel = np.ones(len(z), bool) if m is None else mod == m
            idx = rng.permutation(np.flatnonzero(sel))
            ax.scatter(xy[idx, 0], xy[idx, 1], s=point_size, c=[colour[v] for v in lab[idx]],
                       marker=_MARKERS[j % len(_MARKERS)], linewidths=0, alpha=0.8)
        handles = [ax.scatter([], [], s=25, color=colour[c], label=c) for c in classes]
        if mod is not None:  # one legend (its layout keeps it in the figure): then the shapes
            from matplotlib.lines import Line2D

            handles.append(Line2D([], [], linestyle="none", label="modality"))  # a heading
            handles += [
                ax.scatter([], [], s=25, color="grey", marker=_MARKERS[j % len(_MARKERS)],
                           label=str(m))
                for j, m in enumerate(mod_names)
            ]
        ax.legend(handles=handles, title="cluster", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False, loc="upper left")
        ax.set_xlabel("LD1")
        if n_comp == 1:
            ax.set_ylabel("modality" if mod is not None else "")
            ax.set_yticks(range(len(mod_names)) if mod is not None else [])
            if mod is not None:
                ax.set_yticklabels(mod_names)
        else:
            ax.set_ylabel("LD2")
        if title:
            ax.set_title(title)
    return ax
