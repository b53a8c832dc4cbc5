"""Per-image work: which nuclei to keep, their morphology, and their fixed-size crops."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

Normalize = Literal["max", "minmax"]
NORMALIZE_RULES = {
    "max": "per nucleus and channel, the pixels inside the nucleus divided by their maximum "
    "(negative values clipped to 0); pixels outside the nucleus are 0",
    "minmax": "per nucleus and channel, the pixels inside the nucleus rescaled from [min, max] "
    "to [0, 1]; pixels outside the nucleus are 0",
}
AXES = "zyx"


def select_nuclei(
    labels: np.ndarray, *, min_area: int, exclude_border: bool
) -> tuple[np.ndarray, dict[str, int]]:
    """Label ids to keep, and how many nuclei were seen and dropped, by reason.

    A nucleus is dropped as *small* if it has fewer than ``min_area`` pixels (voxels), else as
    *border* if ``exclude_border`` and one of its pixels lies on a face of the image.
    """
    flat = labels.ravel()
    if flat.size and int(flat.max()) <= flat.size:
        counts = np.bincount(flat)
        ids = np.flatnonzero(counts)
        areas = counts[ids]
    else:  # few, very large label values: do not allocate a bincount of max(label)
        ids, areas = np.unique(flat, return_counts=True)
    areas, ids = areas[ids > 0], ids[ids > 0]
    small = areas < min_area
    if exclude_border:
        faces = np.concatenate(
            [np.take(labels, i, axis=ax).ravel() for ax in range(labels.ndim) for i in (0, -1)]
        )
        on_border = np.isin(ids, faces) & ~small
    else:
        on_border = np.zeros(ids.shape, bool)
    counts_out = {
        "n_nuclei": int(ids.size),
        "n_dropped_small": int(small.sum()),
        "n_dropped_border": int(on_border.sum()),
    }
    return ids[~small & ~on_border], counts_out


def morphology(
    labels: np.ndarray, image: np.ndarray, ids: np.ndarray, channel_ids: Sequence[int]
) -> pd.DataFrame:
    """Centroid, size, shape and intensity of the nuclei ``ids`` (``skimage.measure.regionprops``).

    ``image`` is channels-first; intensities are in its original units. Columns: ``centroid_[z]yx``,
    ``area`` (2-D) or ``volume`` (3-D), ``eccentricity`` and ``perimeter`` (2-D only),
    ``solidity``, ``axis_major_length``, ``axis_minor_length``, ``mean_intensity`` and
    ``integrated_intensity`` (suffixed ``_ch<k>``, ``k`` from ``channel_ids``, when there are
    several channels).
    """
    from skimage.measure import regionprops_table

    ndim = labels.ndim
    props = ["label", "area", "centroid", "solidity", "axis_major_length", "axis_minor_length"]
    if ndim == 2:
        props += ["eccentricity", "perimeter"]
    kept = labels * np.isin(labels, ids)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # degenerate (flat) nuclei: NaN axes
        table = regionprops_table(
            kept, intensity_image=np.moveaxis(image, 0, -1), properties=[*props, "intensity_mean"]
        )
    if not np.array_equal(table["label"], ids):  # pragma: no cover - regionprops sorts by label
        raise RuntimeError("regionprops did not return the requested labels in order")
    axes = AXES[-ndim:]
    size_name = "area" if ndim == 2 else "volume"
    cols = {f"centroid_{a}": table[f"centroid-{i}"] for i, a in enumerate(axes)}
    cols[size_name] = table["area"].astype(np.int64)
    for name in ("eccentricity", "solidity", "perimeter", "axis_major_length", "axis_minor_length"):
        if name in table:
            cols[name] = table[name]
    for k, channel in enumerate(channel_ids):
        suffix = "" if len(channel_ids) == 1 else f"_ch{channel}"
        mean = table[f"intensity_mean-{k}"] if f"intensity_mean-{k}" in table else table["intensity_mean"]
        cols[f"mean_intensity{suffix}"] = mean
        cols[f"integrated_intensity{suffix}"] = mean * table["area"]
    return pd.DataFrame(cols)


def crop_nuclei(
    image: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    crop_shape: tuple[int, ...],
    normalize: Normalize,
    out_crops: np.ndarray,
    out_masks: np.ndarray,
) -> np.ndarray:
    """Write one masked, normalised crop per nucleus into ``out_crops`` / ``out_masks``.

    Each nucleus's bounding box is centred in the crop; a nucleus whose box exceeds the crop on
    any axis is first downscaled isotropically (linear interpolation with anti-aliasing; the mask
    is resized the same way and thresholded at 0.5) so that it fits. Returns the scale factor of
    each nucleus (1 = not rescaled).
    """
    from skimage.transform import resize

    out_shape = np.asarray(crop_shape)
    slices = ndi.find_objects(labels, max_label=int(ids.max())) if ids.size else []
    scales = np.ones(ids.size)
    for i, lab in enumerate(ids):
        box = slices[lab - 1]
        mask = labels[box] == lab
        region = image[(slice(None), *box)].astype(np.float32)
        size = np.asarray(mask.shape)
        scale = min(1.0, float(np.min(out_shape / size)))
        if scale < 1.0:
            new = tuple(np.clip(np.round(size * scale), 1, out_shape).astype(int))
            mask = resize(mask.astype(np.float32), new, order=1, anti_aliasing=True) >= 0.5
            region = resize(
                region, (region.shape[0], *new), order=1, anti_aliasing=True, preserve_range=True
            )
            size, scales[i] = np.asarray(new), scale
        start = (out_shape - size) // 2
        dst = tuple(slice(s, s + n) for s, n in zip(start, size))
        out_crops[i][(slice(None), *dst)] = normalize_nucleus(region, mask, normalize)
        out_masks[i][dst] = mask
    return scales


def normalize_nucleus(region: np.ndarray, mask: np.ndarray, rule: Normalize) -> np.ndarray:
    """Scale a channels-first nucleus region to [0, 1] inside ``mask`` and zero it outside.

    A channel of constant intensity inside the nucleus becomes 1 (0 if that intensity is <= 0).
    """
    if rule not in NORMALIZE_RULES:
        raise ValueError(f"normalize={rule!r}: expected one of {sorted(NORMALIZE_RULES)}")
    shape = (-1,) + (1,) * mask.ndim
    inside = region[:, mask]
    if inside.shape[1] == 0:
        return np.zeros_like(region, dtype=np.float32)
    hi = inside.max(1)
    lo = inside.min(1) if rule == "minmax" else np.zeros_like(hi)
    if rule == "max":
        region = np.maximum(region, 0)
    span = hi - lo
    safe = np.where(span > 0, span, 1.0).reshape(shape)
    out = np.where((span > 0).reshape(shape), (region - lo.reshape(shape)) / safe, (hi > 0).reshape(shape))
    return (np.clip(out, 0.0, 1.0) * mask).astype(np.float32)
