"""Plots of the shared latent space."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import atomic_file
from ..metrics._chunked import as_embedding


def _check_path(path: str | os.PathLike | None) -> None:
    """Fail before drawing if the figure cannot be written to ``path``."""
    if path is None:
        return
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"path={str(path)!r}: folder {str(folder)!r} does not exist")
    if target.is_dir():
        raise ValueError(f"path={str(path)!r} is a folder, not a file name")
    suffix = target.suffix.lower().lstrip(".")
    if suffix:
        from matplotlib.backend_bases import FigureCanvasBase

        supported = FigureCanvasBase.get_supported_filetypes()
        if suffix not in supported:
            raise ValueError(
                f"path={str(path)!r}: unsupported file type {suffix!r} (expected one of "
                f"{sorted(supported)})"
            )


@contextmanager
def _closing_on_error(fig) -> Iterator:
    """Close ``fig`` if drawing it fails, so that failed plots do not leak open figures."""
    try:
        yield fig
    except BaseException:
        import matplotlib.pyplot as plt

        plt.close(fig)
        raise


def _pyplot(path):
    """matplotlib.pyplot, on the non-interactive Agg backend when writing to a file."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path, dpi: int):
    """Lay out ``fig``; write it to ``path`` and close it, or return it when ``path`` is None.

    The figure is closed whenever this fails, too.
    """
    import matplotlib.pyplot as plt

    with _closing_on_error(fig):
        fig.tight_layout()
        if path is None:
            return fig
        # the format follows path's suffix (matplotlib's default format without one)
        fmt = Path(path).suffix[1:].lower() or plt.rcParams["savefig.format"]
        with atomic_file(path, overwrite=True) as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt)
    plt.close(fig)
    return None


def _check_latent_inputs(
    embeddings: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray] | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Validated float embeddings (and labels) per modality for :func:`latent`."""
    if not isinstance(embeddings, Mapping):
        raise ValueError(
            f"embeddings: expected a mapping {{modality: (n_cells, n_latent) array}}, got "
            f"{type(embeddings).__name__}"
        )
    if not embeddings:
        raise ValueError("embeddings: empty; expected at least one modality")
    arrays = {}
    for name, z in embeddings.items():
        a = as_embedding(z, f"embeddings[{name!r}]")  # 2-D, numeric, finite, >= 1 cell
        if a.shape[1] < 2:
            raise ValueError(
                f"embeddings[{name!r}]: {a.shape[1]} latent dimension(s); a 2-D scatter needs >= 2"
            )
        arrays[name] = a
    widths = {name: a.shape[1] for name, a in arrays.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(
            f"embeddings: modalities differ in latent dimensions {widths}; they must share one space"
        )
    if labels is None or (isinstance(labels, Mapping) and not labels):
        return arrays, None
    if not isinstance(labels, Mapping):
        raise ValueError(
            f"labels: expected a mapping {{modality: labels per cell}}, got {type(labels).__name__}"
        )
    unknown = [k for k in labels if k not in arrays]
    if unknown:
        raise ValueError(f"labels: modalities {unknown} are not in embeddings {list(arrays)}")
    out = {}
    for name, a in arrays.items():
        if name not in labels:
            raise ValueError(f"labels: no entry for modality {name!r} (labels for {list(labels)})")
        lab = np.asarray(labels[name], dtype=object).ravel()
        if lab.size != a.shape[0]:
            raise ValueError(
                f"labels[{name!r}]: {lab.size} label(s) for {a.shape[0]} cells of embeddings[{name!r}]"
            )
        out[name] = lab
    return arrays, out


def latent(
    embeddings: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray] | None = None,
    *,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    label_name: str = "label",
    point_size: float = 6.0,
):
    """Scatter the joint latent space of several modalities in 2-D.

    The embeddings are projected on the first two principal components of all cells
    together (so distances between modalities are kept); one panel is coloured by
    modality and, if ``labels`` are given, a second by label.

    Parameters
    ----------
    embeddings
        ``{modality: (n_cells, n_latent) array}``.
    labels
        ``{modality: labels per cell}`` (optional).
    path
        Write the figure there (PNG/PDF by extension) and close it; otherwise return it.
    title
        Figure title.
    label_name
        Legend title of the label panel.
    point_size
        Marker size.

    Returns
    -------
    The matplotlib figure, or ``None`` when ``path`` is given.

    Raises
    ------
    ValueError
        Before drawing, if ``embeddings`` is empty, an embedding is not 2-D, has fewer than 2
        columns or non-finite values, the modalities differ in width, ``labels`` lacks a
        modality (or names an unknown one) or has the wrong number of labels, or the folder of
        ``path`` does not exist.
    """
    from sklearn.decomposition import PCA

    embeddings, labels = _check_latent_inputs(embeddings, labels)
    _check_path(path)
    plt = _pyplot(path)

    names = list(embeddings)
    z = np.vstack([embeddings[n] for n in names])
    xy = PCA(2).fit_transform(z) if z.shape[1] > 2 else z
    which = np.concatenate([[n] * len(embeddings[n]) for n in names])
    n_panels = 2 if labels else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.6), squeeze=False)
    with _closing_on_error(fig):
        _draw_latent(plt, fig, axes, xy, which, names, labels, title, label_name, point_size)
    return _finish(fig, path, 120)


def _draw_latent(plt, fig, axes, xy, which, names, labels, title, label_name, point_size) -> None:
    """Draw the panels of :func:`latent` (by modality, and by label if ``labels``)."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(xy))  # no modality drawn on top of the other
    cmap = plt.get_cmap("tab10")

    def panel(ax, groups, legend_title, *, sort):
        cats = list(dict.fromkeys(groups.tolist()))
        if sort:
            cats = sorted(cats)
        colour = {c: cmap(i % 10) for i, c in enumerate(cats)}
        ax.scatter(xy[order, 0], xy[order, 1], s=point_size, c=[colour[g] for g in groups[order]],
                   linewidths=0, alpha=0.8)
        for c in cats:
            ax.scatter([], [], s=20, color=colour[c], label=str(c))
        ax.legend(title=legend_title, fontsize=8, markerscale=1.2, frameon=False)
        ax.set_xlabel("PC1 of latent")
        ax.set_ylabel("PC2 of latent")
        ax.set_xticks([])
        ax.set_yticks([])

    panel(axes[0, 0], which, "modality", sort=False)
    if labels:
        lab = np.concatenate([np.asarray(labels[n]).astype(str) for n in names])
        panel(axes[0, 1], lab, label_name, sort=True)
    if title:
        fig.suptitle(title)


def history(model_history, *, path: str | os.PathLike | None = None):
    """Training curves: every loss term and the discriminator accuracy per epoch.

    Parameters
    ----------
    model_history
        ``model.history`` (a DataFrame indexed by epoch), or a mapping of its columns
        (``{"train_loss": [...], ...}``).
    path
        Write the figure there and close it; otherwise return it.

    Returns
    -------
    The matplotlib figure, or ``None`` when ``path`` is given.

    Raises
    ------
    ValueError
        Before drawing, if ``model_history`` is not a DataFrame or mapping (e.g. ``None`` for an
        untrained model), holds no ``train_*`` / ``val_*`` column with a value, or the folder of
        ``path`` does not exist.
    """
    if isinstance(model_history, Mapping):
        try:
            model_history = pd.DataFrame(dict(model_history))
        except (TypeError, ValueError) as err:
            raise ValueError(f"model_history: cannot make a table of the mapping ({err})") from None
    if not isinstance(model_history, pd.DataFrame):
        raise ValueError(
            "model_history: expected model.history (a DataFrame indexed by epoch) or a mapping of "
            f"columns, got {type(model_history).__name__}"
            + (" (has the model been trained?)" if model_history is None else "")
        )
    h = model_history
    cols = [
        c for c in h.columns
        if isinstance(c, str) and c.startswith(("train_", "val_")) and h[c].notna().any()
    ]
    if not cols:
        raise ValueError(
            f"model_history: no 'train_*' or 'val_*' column with a value (columns: {list(h.columns)})"
        )
    _check_path(path)
    plt = _pyplot(path)

    terms = sorted({c.split("_", 1)[1] for c in cols})
    n = len(terms)
    ncol = min(4, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.6 * nrow), squeeze=False)
    with _closing_on_error(fig):
        for ax, term in zip(axes.flat, terms):
            for split in ("train", "val"):
                c = f"{split}_{term}"
                if c in h:
                    ax.plot(h.index, h[c], label=split)
            ax.set_title(term, fontsize=9)
            ax.legend(fontsize=7, frameon=False)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
    return _finish(fig, path, 110)
