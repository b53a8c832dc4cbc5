"""Plots of the shared latent space."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np


def _pyplot(path):
    """matplotlib.pyplot, on the non-interactive Agg backend when writing to a file."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path, dpi: int):
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return None


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
    """
    from sklearn.decomposition import PCA

    plt = _pyplot(path)

    names = list(embeddings)
    z = np.vstack([np.asarray(embeddings[n]) for n in names])
    xy = PCA(2).fit_transform(z) if z.shape[1] > 2 else z
    which = np.concatenate([[n] * len(embeddings[n]) for n in names])
    n_panels = 2 if labels else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.6), squeeze=False)
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
    return _finish(fig, path, 120)


def history(model_history, *, path: str | os.PathLike | None = None):
    """Training curves: every loss term and the discriminator accuracy per epoch.

    Parameters
    ----------
    model_history
        ``model.history`` (a DataFrame indexed by epoch).
    path
        Write the figure there and close it; otherwise return it.
    """
    plt = _pyplot(path)

    h = model_history
    cols = [c for c in h.columns if c.startswith(("train_", "val_")) and h[c].notna().any()]
    terms = sorted({c.split("_", 1)[1] for c in cols})
    n = len(terms)
    ncol = min(4, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.6 * nrow), squeeze=False)
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
