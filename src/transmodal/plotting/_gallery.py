"""Gallery of image crops: real nuclei next to their reconstructions and translations."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from .._utils import check_int, user_stacklevel
from ..data._modality import is_number
from ..data._source import looks_channels_last
from ..metrics._chunked import check_same_rows
from ._embedding import _check_path, _check_show, _closing_on_error, _finish, _subplots

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _as_array(name: str, crops) -> np.ndarray:
    """The crops of a gallery row: an array, or an AnnData's image ``obsm`` (``"crops"``, else
    its one entry of images, as :meth:`~transmodal.CrossModalAE.translate` returns them)."""
    from anndata import AnnData

    if not isinstance(crops, AnnData):
        return np.asarray(crops)
    keys = list(crops.obsm.keys())
    if "crops" in crops.obsm:
        return np.asarray(crops.obsm["crops"])
    found = [k for k in keys if np.ndim(crops.obsm[k]) in (4, 5)]
    if len(found) != 1:
        raise ValueError(
            f"gallery row {name!r}: an AnnData without obsm['crops'] and with "
            f"{'no' if not found else 'several'} image entries in obsm (keys: {keys}); pass the "
            "crops array itself, e.g. adata.obsm['<key>']"
        )
    return np.asarray(crops.obsm[found[0]])


def _as_images(name: str, a: np.ndarray, volumes: bool = False,
               channel: int | tuple[int, ...] = 0) -> np.ndarray:
    """``(n, H, W)`` images to show: ``channel`` (three channels: ``(n, H, W, 3)``, an RGB
    composite), middle z-slice of 3-D crops; with ``volumes`` (another row holds
    ``(n, channels, D, H, W)`` crops), a 4-D row is ``(n, D, H, W)``, such as the masks of
    3-D crops."""
    if a.ndim == 3:
        return a
    if a.ndim in (4, 5) and looks_channels_last(a.shape[1:]):
        raise ValueError(  # (n, [D,] H, W, 3) would draw H x 3 strips
            f"gallery row {name!r}: crops of shape {a.shape} look channels-last; pass them "
            f"channels-first (n, channels, [D,] H, W), e.g. np.moveaxis(crops, -1, 1)"
        )
    if a.ndim == 4 and volumes:
        return a[:, a.shape[1] // 2]
    if a.ndim in (4, 5):
        picked = [channel] if isinstance(channel, int) else list(channel)
        if max(picked) >= a.shape[1] or min(picked) < -a.shape[1]:
            raise ValueError(
                f"gallery row {name!r}: channel={channel!r} is out of range for its "
                f"{a.shape[1]} channel(s)"
            )
        shown = a[:, picked] if a.ndim == 4 else a[:, picked, a.shape[2] // 2]
        return shown[:, 0] if isinstance(channel, int) else np.moveaxis(shown, 1, -1)
    raise ValueError(
        f"gallery row {name!r}: expected crops (n, [channels, [D,]] H, W), got shape {a.shape}"
    )


def _check_style(cmap, vmin, vmax, size, dpi) -> None:
    """``ValueError`` for drawing settings matplotlib would reject only while drawing."""
    import matplotlib

    if not (is_number(size) and size > 0):
        raise ValueError(f"size must be a finite number > 0; got {size!r}")
    if not (dpi is None or dpi == "figure" or (is_number(dpi) and dpi > 0)):
        raise ValueError(f"dpi must be a finite number > 0, 'figure' or None; got {dpi!r}")
    for key, value in (("vmin", vmin), ("vmax", vmax)):
        if value is not None and not is_number(value):
            raise ValueError(f"{key} must be a finite number or None; got {value!r}")
    if vmin is not None and vmax is not None and vmin >= vmax:
        raise ValueError(f"vmin must be below vmax; got vmin={vmin!r}, vmax={vmax!r}")
    if isinstance(cmap, str) and cmap not in matplotlib.colormaps:
        raise ValueError(f"cmap={cmap!r} is not a matplotlib colour map")


def gallery(
    rows: Mapping[str, np.ndarray],
    *,
    n: int = 8,
    path: str | os.PathLike | None = None,
    cmap: str = "gray",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    size: float = 1.2,
    dpi: int = 120,
    show: bool | None = None,
    channel: int | tuple[int, int, int] = 0,
) -> Figure | None:
    """Show the same nuclei in several versions, one version per row.

    Parameters
    ----------
    rows
        ``{row title: crops}``, every entry with the same cells in the same order, e.g.
        ``{"real": crops, "reconstructed": ..., "from profile": ...}``; crops are
        ``(n, H, W)``, ``(n, channels, H, W)`` (``channel`` shown) or
        ``(n, channels, D, H, W)`` (middle z-slice shown; beside them, a 4-D row such as the
        masks is ``(n, D, H, W)``), or an AnnData holding them in ``obsm["crops"]`` (or in
        its one ``obsm`` entry of images, as ``translate`` returns them).
    n
        Number of cells (columns) shown: the first ``n``.
    path
        Write the figure there (PNG, ...), as in :func:`transmodal.pl.latent`.
    cmap, vmin, vmax
        Colour map and intensity range (crops of :func:`transmodal.images.read_nuclei` are in
        ``[0, 1]``); ``None`` scales each image on its own.
    size, dpi
        Inches per image, and resolution of the written file.
    show
        As in :func:`transmodal.pl.latent`: shown by default when not written; ``False``
        returns the figure.
    channel
        The channel shown (default the first, the DNA stain of
        :func:`~transmodal.images.read_nuclei` crops), or three channels drawn as red,
        green and blue (``(0, 1, 2)`` for RGB patches such as H&E; ``cmap`` then does not
        apply, ``vmin`` / ``vmax`` scale all three).

    Returns
    -------
    The matplotlib figure with ``show=False`` and no ``path``, else ``None``.

    Raises
    ------
    ValueError
        Before drawing, if the rows are empty, of other shapes or lengths, AnnData rows
        hold the same cells in another order (their ``obs_names``), the drawing
        settings are invalid (unknown ``cmap``, ``vmin >= vmax``, ``size`` or ``dpi`` not
        positive), or ``path`` cannot be written (no such folder, unknown type).
    """
    if not isinstance(rows, Mapping):
        raise ValueError(
            f"rows must be a mapping of row names to crops (e.g. {{'real': crops}}), got "
            f"{type(rows).__name__}"
        )
    if not rows:
        raise ValueError("gallery needs at least one row of crops")
    rgb = not isinstance(channel, (int, np.integer)) or isinstance(channel, bool)
    if rgb and not (isinstance(channel, (tuple, list)) and len(channel) == 3 and all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in channel)):
        raise ValueError(f"channel must be a channel's index or three of them (red, green, "
                         f"blue); got {channel!r}")
    channel = tuple(int(c) for c in channel) if rgb else int(channel)
    from anndata import AnnData

    annotated = [(name, c.obs_names) for name, c in rows.items() if isinstance(c, AnnData)]
    for name, cells in annotated[1:]:  # (the same cells in another order: a mismatched row)
        check_same_rows(annotated[0][1], cells, (f"rows[{annotated[0][0]!r}]", f"rows[{name!r}]"))
    arrays = {name: _as_array(name, c) for name, c in rows.items()}
    volumes = any(a.ndim == 5 for a in arrays.values())
    images = {name: _as_images(name, a, volumes, channel) for name, a in arrays.items()}
    counts = {name: len(a) for name, a in images.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"gallery rows hold different numbers of cells: {counts}")
    n_cells = next(iter(counts.values()))
    check_int(n, "n", minimum=1)
    _check_style(cmap, vmin, vmax, size, dpi)
    n = int(min(n, n_cells))
    if n < 1:
        raise ValueError(f"rows: no cells to show ({counts})")
    _check_path(path)
    show = _check_show(show, path)
    # drawn tiles whose values the colour range clips visibly (beyond 5 % of the range:
    # a decoder's noise around 0 is not worth a word)
    margin = 0.05 * (vmax - vmin) if vmin is not None and vmax is not None else 0.05
    for name, imgs in images.items():
        shown = np.asarray(imgs[:n], dtype=float)
        if (vmin is None and vmax is None) or not np.isfinite(shown).any():
            continue
        lo, hi = np.nanmin(shown), np.nanmax(shown)
        below = shown < vmin - margin if vmin is not None else np.zeros(shown.shape, bool)
        above = shown > vmax + margin if vmax is not None else np.zeros(shown.shape, bool)
        clipped = float(np.mean(below | above))
        if clipped > 0.05:
            warnings.warn(
                f"rows[{name!r}]: {clipped:.0%} of the drawn pixels lie outside the colour "
                f"range [{vmin}, {vmax}] (values {lo:.3g} to {hi:.3g}) and are drawn at its "
                "ends; pass vmin= / vmax= for these data (None: each tile's own range)",
                UserWarning, stacklevel=user_stacklevel(),
            )
    fig, axes = _subplots(path, len(images), n, (size * n + 1.2, size * len(images)),
                          pyplot=show)
    with _closing_on_error(fig):
        for r, (name, imgs) in enumerate(images.items()):
            for c in range(n):
                ax = axes[r, c]
                tile = np.asarray(imgs[c], dtype=float)
                if tile.ndim == 3:  # (H, W, 3): matplotlib takes colours in [0, 1]
                    lo = np.nanmin(tile) if vmin is None else vmin
                    hi = np.nanmax(tile) if vmax is None else vmax
                    tile = np.clip((tile - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
                    ax.imshow(tile, interpolation="nearest")
                else:
                    ax.imshow(tile, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center")
    return _finish(fig, path, dpi, show)
