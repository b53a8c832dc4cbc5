"""Plots of the shared latent space."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._utils import atomic_file
from ..data._setup import global_obs_hint, label_str, sorted_classes
from ..metrics._chunked import as_embedding

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# the legend entry of cells without a label, drawn grey (a class of this name joins them)
UNLABELLED = "(no label)"


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


def _close(fig) -> None:
    """Close ``fig`` if pyplot manages it; a bare :class:`~matplotlib.figure.Figure` (see
    :func:`_subplots`) needs no closing and pyplot is not touched for it."""
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)


@contextmanager
def _closing_on_error(fig) -> Iterator:
    """Close ``fig`` if drawing it fails, so that failed plots do not leak open figures."""
    try:
        yield fig
    except BaseException:
        _close(fig)
        raise


def _check_show(show: bool | None, path: str | os.PathLike | None) -> bool:
    """Whether to show the figure: ``show``, or by default when it is not written to ``path``."""
    if show is not None and not isinstance(show, (bool, np.bool_)):
        raise TypeError(f"show must be True, False or None, got {show!r}")
    return path is None if show is None else bool(show)


def _subplots(path: str | os.PathLike | None, nrows: int, ncols: int, figsize: tuple[float, float],
              *, pyplot: bool = False):
    """A new figure and its ``(nrows, ncols)`` array of Axes.

    Without ``path`` (or with ``pyplot``: a figure to be shown) it is a pyplot figure.  With
    ``path`` it is a bare :class:`~matplotlib.figure.Figure` on an Agg canvas that pyplot
    never sees: writing it leaves pyplot's backend and figure list as they were.
    """
    if path is None or pyplot:
        import matplotlib.pyplot as plt

        return plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    with _closing_on_error(fig):
        return fig, fig.subplots(nrows, ncols, squeeze=False)


def _finish(fig, path, dpi: int, show: bool):
    """Lay out ``fig``; write it to ``path`` if given; show it with pyplot if ``show``.

    Returns the figure when it is neither shown nor written (``show=False`` without a path,
    as scanpy's ``show=False`` returns its axes), else ``None``: a figure returned at the end
    of a notebook cell is displayed a second time.  Written figures are closed (after they
    are shown); the figure is closed whenever this fails, too.
    """
    import matplotlib

    with _closing_on_error(fig):
        fig.tight_layout()
        if path is not None:
            # the format follows path's suffix (matplotlib's default format without one)
            fmt = Path(path).suffix[1:].lower() or matplotlib.rcParams["savefig.format"]
            with atomic_file(path, overwrite=True) as tmp:
                fig.savefig(tmp, dpi=dpi, format=fmt)
    if show:
        import matplotlib.pyplot as plt

        plt.show()
        if path is not None:  # (written and shown: closed, as scanpy's save= and show=)
            _close(fig)
        return None
    if path is None:
        return fig
    _close(fig)
    return None


def _palette(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct RGBA colours for categories.

    ``tab10`` up to 10 categories, ``tab20`` up to 20; beyond that evenly spaced samples of
    the continuous ``turbo`` map (distinct up to its 256 entries) or, for more, evenly
    spaced hues.
    """
    import matplotlib
    from matplotlib.colors import hsv_to_rgb

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    turbo = matplotlib.colormaps["turbo"]
    if n <= turbo.N:
        return [tuple(c) for c in turbo(np.linspace(0.0, 1.0, n))]
    hsv = np.column_stack([np.arange(n) / n, np.full(n, 0.85), np.full(n, 0.9)])
    return [(*map(float, rgb), 1.0) for rgb in hsv_to_rgb(hsv)]


def _class_names(values, name: str, *, missing: str | None = None) -> np.ndarray:
    """Labels as class names (an object array of str), written as the models write them
    (:func:`~transmodal.data._setup.label_str`: ``1``, ``1.0`` and ``"1"`` are class "1").

    Missing labels (NaN, None, "nan", "") become ``missing``; with ``missing=None`` they are
    refused with a ValueError that names ``name``.
    """
    raw = np.asarray(values, dtype=object).ravel()
    out = np.array([label_str(v) for v in raw], dtype=object)
    gaps = np.array([v is None for v in out], dtype=bool)
    if gaps.any():
        if missing is None:
            raise ValueError(
                f"{name}: {int(gaps.sum())} cell(s) have no label (e.g. {raw[gaps][0]!r})"
            )
        out[gaps] = missing
    return out


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
    n_cells = sum(a.shape[0] for a in arrays.values())
    if n_cells < 2:
        raise ValueError(f"embeddings: the latent plot needs at least 2 cells, got {n_cells}")
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
        lab = np.asarray(labels[name])
        lab = (lab if lab.dtype.kind in "iuf" else lab.astype(object)).ravel()  # numbers stay
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
    continuous: bool = False,
    basis_name: str = "latent",
    palette: Mapping[str, Any] | Sequence[Any] | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Scatter the joint latent space of several modalities in 2-D.

    Embeddings with more than two dimensions are projected on the first two principal
    components of all cells together (so distances between modalities are kept; axes
    "PC1 of latent", ...); a 2-D latent is drawn as it is (axes "latent 1" and "latent 2";
    ``basis_name`` names the space instead of "latent").  One panel is coloured by
    modality and, if ``labels`` are given, a second by label, with a distinct colour per
    class (``tab10``, ``tab20``, or evenly spaced colours of ``turbo`` for more than 20;
    more than 10 classes listed beside the axes), or with ``continuous=True`` a colour map
    of the values with its colour bar.

    Parameters
    ----------
    embeddings
        ``{modality: (n_cells, n_latent) array}``.
    labels
        ``{modality: labels per cell}`` (optional; cells without a label, None / NaN, are
        drawn light grey as "(no label)").
    path
        Write the figure there (PNG/PDF by extension) and close it.  Written figures are
        drawn apart from pyplot (its backend and open figures are left as they were) unless
        they are shown too.
    title
        Figure title.
    label_name
        Legend title of the label panel.
    point_size
        Marker size.
    continuous
        ``labels`` are numbers measured per cell (e.g. a library size), drawn with a colour
        map (NaN light grey) rather than as classes.
    basis_name
        The space's name on the axes.
    palette
        Colours of the label classes, as scanpy takes them: ``{class: colour}`` (classes
        it leaves out keep the default colours) or a list of colours in the classes' sorted
        order; any colour matplotlib reads (``"#ff0000"``, ``"red"``, an RGB tuple).
    show
        Show the figure with :func:`matplotlib.pyplot.show` and return ``None``, as scanpy's
        plots do; by default when it is not written to ``path``.  ``False`` returns the
        figure instead, to draw on or save it (returned at the end of a notebook cell, a
        shown figure would be displayed twice).

    Returns
    -------
    The matplotlib figure with ``show=False`` and no ``path``, else ``None``.

    Raises
    ------
    ValueError
        Before drawing, if ``embeddings`` is empty or holds fewer than 2 cells in all, an
        embedding is not 2-D, has fewer than 2 columns or non-finite values, the modalities
        differ in width, ``labels`` lacks a modality (or names an unknown one) or has the
        wrong number of labels, or ``path`` cannot be written (no such folder, unknown type).
    """
    from sklearn.decomposition import PCA

    embeddings, labels = _check_latent_inputs(embeddings, labels)
    if continuous:
        if not labels:
            raise ValueError("continuous=True draws labels with a colour map: give labels")
        for name, lab in labels.items():
            if np.asarray(lab).dtype.kind not in "iuf":
                raise ValueError(
                    f"labels[{name!r}]: continuous=True needs numbers (a measurement per "
                    f"cell), got {np.asarray(lab).dtype} values"
                )
    _check_path(path)
    show = _check_show(show, path)
    palette = _check_palette(palette, labels, continuous)

    names = list(embeddings)
    z = np.vstack([embeddings[n] for n in names])
    if z.shape[1] > 2:
        xy = PCA(2).fit_transform(z)
        axis_names = (f"PC1 of {basis_name}", f"PC2 of {basis_name}")
    else:
        xy, axis_names = z, (f"{basis_name} 1", f"{basis_name} 2")
    which = np.concatenate([[n] * len(embeddings[n]) for n in names])
    n_panels = 2 if labels else 1
    fig, axes = _subplots(path, 1, n_panels, (5.2 * n_panels, 4.6), pyplot=show)
    with _closing_on_error(fig):
        _draw_latent(fig, axes, xy, axis_names, which, names, labels, title, label_name,
                     point_size, continuous, palette)
    return _finish(fig, path, 120, show)


def embedding(
    data,
    *,
    basis: str = "X_transmodal",
    color: str | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    point_size: float = 6.0,
    palette: Mapping[str, Any] | Sequence[Any] | None = None,
    show: bool | None = None,
) -> Figure | None:
    """Scatter the joint latent space stored in the data, as :func:`scanpy.pl.embedding`
    does for one AnnData: every modality's ``obsm[basis]`` (as written by
    :func:`transmodal.tl.integrate` or ``adata.obsm["X_transmodal"] =
    model.get_latent_representation(...)``), coloured by modality and by ``obs[color]``.

    Parameters
    ----------
    data
        A MuData or a ``{modality: AnnData}`` mapping.
    basis
        ``obsm`` key of the embeddings (the same width in every modality), in one space
        shared by the modalities: an embedding computed for each modality on its own (e.g.
        each one's UMAP) has a frame of its own, and overlaying them compares nothing. The
        axes are named after it (``"X_umap"``: "umap 1", "umap 2"). As in scanpy, a name
        without its ``X_`` is found with it (``"umap"``: ``obsm["X_umap"]``).
    color
        ``obs`` column of labels for a second panel; cells without a label, and those of a
        modality without the column (e.g. the one labels were not transferred to), are
        drawn light grey as "(no label)". A numeric column (not categorical) with more than
        20 distinct values is a measurement, drawn with a colour map, as scanpy draws it.
        muon's ``"<modality>:<column>"`` colours that modality's cells by its column (the
        other modalities' grey).
    path, title, point_size
        As in :func:`latent`.
    palette
        Colours of the classes, as in :func:`latent`; by default those scanpy stored for a
        categorical column (``uns[f"{color}_colors"]``), where a modality holds them.
    show
        As in :func:`latent`.

    Returns
    -------
    The matplotlib figure with ``show=False`` and no ``path``, else ``None``.
    """
    mods = getattr(data, "mod", data)
    if not isinstance(mods, Mapping):
        hint = (
            "; for one AnnData use scanpy.pl.embedding(adata, basis=...)"
            if hasattr(data, "obsm") else ""
        )
        raise TypeError(
            f"data: expected a MuData or a {{modality: AnnData}} mapping, got "
            f"{type(data).__name__}{hint}"
        )
    for name, adata in mods.items():
        if not hasattr(adata, "obsm"):
            raise TypeError(f"modality {name!r}: expected an AnnData, got {type(adata).__name__}")
    if not all(basis in a.obsm for a in mods.values()) \
            and all(f"X_{basis}" in a.obsm for a in mods.values()):
        basis = f"X_{basis}"  # (scanpy's basis="umap" for obsm["X_umap"])
    # muon's "<modality>:<column>": that modality's column alone
    where, column_name = None, color
    if color is not None and not any(color in a.obs.columns for a in mods.values()):
        prefix, _, rest = color.partition(":")
        if prefix in mods and rest in mods[prefix].obs.columns:
            where, column_name = prefix, rest
    embeddings, labels = {}, {}
    for name, adata in mods.items():
        if basis not in adata.obsm:
            raise ValueError(
                f"modality {name!r}: obsm[{basis!r}] not found (obsm holds {list(adata.obsm)}); "
                "store the embedding first, e.g. with tm.tl.integrate"
            )
        embeddings[name] = adata.obsm[basis]
        if color is not None:  # numbers stay numbers (a measurement gets a colour map)
            column = (adata.obs[column_name] if column_name in adata.obs.columns
                      and where in (None, name) else None)
            numeric = (column is not None and pd.api.types.is_numeric_dtype(column)
                       and not pd.api.types.is_bool_dtype(column))
            labels[name] = (
                np.full(adata.n_obs, np.nan) if column is None
                else column.to_numpy(dtype=float, na_value=np.nan) if numeric
                else column.to_numpy(dtype=object)
            )
    if color is not None and where is None \
            and not any(color in a.obs.columns for a in mods.values()):
        raise ValueError(
            f"color {color!r}: not an obs column of any modality ({list(mods)})"
            + global_obs_hint(data, color)
        )
    continuous = bool(labels) and _continuous(labels)
    if palette is None and color is not None and not continuous:
        palette = _stored_palette(mods if where is None else {where: mods[where]}, column_name)
    name = "latent" if basis == "X_transmodal" else basis.removeprefix("X_")
    return latent(
        embeddings, labels or None, path=path, title=title, label_name=color or "label",
        point_size=point_size, continuous=continuous, basis_name=name, palette=palette,
        show=show,
    )


def _draw_latent(
    fig, axes, xy, axis_names, which, names, labels, title, label_name, point_size, continuous,
    palette=None,
) -> None:
    """Draw the panels of :func:`latent` (by modality, and by label if ``labels``)."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(xy))  # no modality drawn on top of the other

    def panel(ax, groups, legend_title, *, sort, missing=None, given=None):
        cats = sorted_classes(groups.tolist()) if sort else list(dict.fromkeys(groups.tolist()))
        named = [c for c in cats if c != missing]
        colour = dict(zip(named, _palette(len(named))))  # the classes' colours as without it
        if isinstance(given, Mapping):
            colour.update({c: given[c] for c in named if c in given})
        elif given is not None:
            if len(given) < len(named):
                raise ValueError(f"palette: {len(given)} colour(s) for {len(named)} classes "
                                 f"{named[:5]}{' ...' if len(named) > 5 else ''}")
            colour.update(zip(named, given))
        if missing in cats:  # cells without a label: light grey, listed last
            colour[missing] = (0.85, 0.85, 0.85, 1.0)
            cats = [*named, missing]
        ax.scatter(xy[order, 0], xy[order, 1], s=point_size, c=[colour[g] for g in groups[order]],
                   linewidths=0, alpha=0.8)
        for c in cats:
            ax.scatter([], [], s=20, color=colour[c], label=str(c))
        if len(cats) <= 10:
            ax.legend(title=legend_title, fontsize=8, markerscale=1.2, frameon=False)
        else:  # beside the axes, in columns of at most 18 entries: kept within the figure
            ax.legend(title=legend_title, fontsize=7, markerscale=1.2, frameon=False,
                      loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=-(-len(cats) // 18))
        bare(ax)

    def bare(ax) -> None:  # the latent's axes: named, without ticks
        ax.set_xlabel(axis_names[0])
        ax.set_ylabel(axis_names[1])
        ax.set_xticks([])
        ax.set_yticks([])

    panel(axes[0, 0], which, "modality", sort=False)
    if labels and continuous:  # a measurement: a colour map, not classes
        import matplotlib

        values = np.concatenate([np.asarray(labels[n], dtype=float) for n in names])
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad=(0.85, 0.85, 0.85, 1.0))
        ax = axes[0, 1]
        points = ax.scatter(xy[order, 0], xy[order, 1], s=point_size, c=values[order],
                            cmap=cmap, linewidths=0, alpha=0.8, plotnonfinite=True)
        fig.colorbar(points, ax=ax, label=label_name + (" (grey: no value)"
                                                        if np.isnan(values).any() else ""))
        bare(ax)
    elif labels:
        lab = np.concatenate([_class_names(labels[n], n, missing=UNLABELLED) for n in names])
        panel(axes[0, 1], lab, label_name, sort=True, missing=UNLABELLED, given=palette)
    if title:
        fig.suptitle(title)


def _check_palette(palette, labels, continuous: bool):
    """``palette`` checked: ``{class name: colour}`` (keys as the plots name classes) or a
    list of colours; ``None`` where not given. ``ValueError`` for a colour matplotlib
    cannot read, or a palette without class labels to colour."""
    from matplotlib.colors import is_color_like

    if palette is None:
        return None
    if not labels or continuous:
        raise ValueError("palette colours label classes: give class labels (color=) to use it")
    if isinstance(palette, str) or not isinstance(palette, (Mapping, Sequence, np.ndarray)):
        raise ValueError(f"palette: expected {{class: colour}} or a list of colours, got "
                         f"{palette!r}")
    items = palette.items() if isinstance(palette, Mapping) else enumerate(palette)
    for key, c in items:
        if not is_color_like(c):
            raise ValueError(f"palette[{key!r}]: {c!r} is not a colour")
    if isinstance(palette, Mapping):
        return {label_str(k): v for k, v in palette.items()}
    return list(palette)


def _stored_palette(mods: Mapping[str, Any], color: str) -> dict[str, Any] | None:
    """The colours scanpy stored for categorical ``obs[color]`` (``uns[f"{color}_colors"]``,
    one per category in their order) in the modalities that hold them, as
    ``{class: colour}`` (the first modality's where two differ); ``None`` without any."""
    from matplotlib.colors import is_color_like

    found: dict[str, Any] = {}
    for adata in mods.values():
        column = adata.obs[color] if color in adata.obs.columns else None
        stored = adata.uns.get(f"{color}_colors")
        if not isinstance(getattr(column, "dtype", None), pd.CategoricalDtype) or stored is None:
            continue
        colours = list(np.asarray(stored, dtype=object).ravel())
        cats = list(column.cat.categories)
        if len(colours) != len(cats) or not all(is_color_like(c) for c in colours):
            continue  # (stale: the categories changed since scanpy stored them)
        for cat, c in zip(cats, colours):
            found.setdefault(label_str(cat), c)
    return found or None


def _continuous(labels: Mapping[str, np.ndarray], max_classes: int = 20) -> bool:
    """Whether ``labels`` are a measurement rather than classes: numbers (not booleans or
    categories) in every modality, with more than ``max_classes`` distinct values."""
    arrays = [np.asarray(v) for v in labels.values()]
    if not all(a.dtype.kind in "iuf" for a in arrays):
        return False
    values = np.concatenate([a.astype(float).ravel() for a in arrays])
    return len(np.unique(values[np.isfinite(values)])) > max_classes


def _history_runs(h: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    """The training runs of a history table: ``[(None, h)]`` for one model's history,
    ``[("seed 0", ...), ("seed 1", ...)]`` for an ensemble's, indexed by (seed, epoch)."""
    if not isinstance(h.index, pd.MultiIndex):
        return [(None, h)]
    if h.index.nlevels != 2:
        raise ValueError(
            f"model_history: index levels {list(h.index.names)}; expected (epoch) or, for an "
            "ensemble, (seed, epoch)"
        )
    level = h.index.names[0] or "seed"
    keys = h.index.get_level_values(0).unique()
    return [(f"{level} {key}", h.xs(key, level=0)) for key in keys]


def history(
    model_history, *, path: str | os.PathLike | None = None, show: bool | None = None
) -> Figure | None:
    """Training curves: every loss term and the discriminator accuracy per epoch.

    Parameters
    ----------
    model_history
        ``model.history`` (a DataFrame indexed by epoch), a mapping of its columns
        (``{"train_loss": [...], ...}``), or the history of several runs (an ensemble's):
        a DataFrame indexed by (seed, epoch) or a mapping ``{seed: model.history}``.  Each
        run is drawn as its own line ("seed N"; training solid, validation dashed).
    path, show
        As in :func:`latent`.

    Returns
    -------
    The matplotlib figure with ``show=False`` and no ``path``, else ``None``.

    Raises
    ------
    ValueError
        Before drawing, if ``model_history`` is not a DataFrame or mapping (e.g. ``None`` for an
        untrained model), has an index of more than two levels, holds no ``train_*`` /
        ``val_*`` column with a value, or ``path`` cannot be written (no such folder, unknown
        type).
    """
    if isinstance(model_history, Mapping):
        try:
            if model_history and all(isinstance(v, pd.DataFrame) for v in model_history.values()):
                model_history = pd.concat(dict(model_history), names=["seed"])
            else:
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
    runs = _history_runs(h)
    cols = [
        c for c in h.columns
        if isinstance(c, str) and c.startswith(("train_", "val_")) and h[c].notna().any()
    ]
    if not cols:
        raise ValueError(
            f"model_history: no 'train_*' or 'val_*' column with a value (columns: {list(h.columns)})"
        )
    _check_path(path)
    show = _check_show(show, path)

    terms = sorted({c.split("_", 1)[1] for c in cols})
    n = len(terms)
    ncol = min(4, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = _subplots(path, nrow, ncol, (3.3 * ncol, 2.6 * nrow), pyplot=show)
    with _closing_on_error(fig):
        colours = _palette(len(runs))
        for i, (ax, term) in enumerate(zip(axes.flat, terms)):
            for (run, frame), colour in zip(runs, colours):
                for split, style in (("train", "-"), ("val", "--")):
                    c = f"{split}_{term}"
                    if c not in frame:
                        continue
                    # points where a value has no neighbouring value (one epoch, or values
                    # between NaN) draw no line: marked so that they show
                    v = frame[c].to_numpy(dtype=float)
                    near = np.zeros(len(v), dtype=bool)
                    near[1:] |= ~np.isnan(v[:-1])
                    near[:-1] |= ~np.isnan(v[1:])
                    mark = "." if (~np.isnan(v) & ~near).any() else None
                    if run is None:  # one model: matplotlib's colour cycle, as always
                        ax.plot(frame.index, v, label=split, marker=mark)
                    else:
                        ax.plot(frame.index, v, ls=style, color=colour, marker=mark,
                                label=f"{run} {split}")
            ax.set_title(term, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            if len(runs) == 1 or i == 0:  # runs share colours: one legend is enough
                ax.legend(fontsize=7, frameon=False)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
    return _finish(fig, path, 110, show)
