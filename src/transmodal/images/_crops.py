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


def split_labels(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The ids among the sorted ``ids`` whose pixels (voxels) form more than one connected
    piece (full connectivity): one id on two separate blobs is read as one nucleus. Each id
    is checked within its bounding box (memory of one box, not of the image)."""
    ids = np.asarray(ids)
    full = np.ones((3,) * labels.ndim, bool)
    split = [
        i for i, box in zip(ids, bounding_boxes(labels, ids))
        if box is not None and ndi.label(labels[box] == i, structure=full)[1] > 1
    ]
    return np.asarray(split, dtype=ids.dtype)


def sequential_labels(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``labels`` with the sorted label ids ``ids`` renumbered ``1..len(ids)`` (all else 0).

    Label images with a few very large ids (e.g. ``3_000_000_000``) break
    ``scipy.ndimage.find_objects`` and ``skimage.measure.regionprops``, which allocate one entry
    per id up to the largest; renumbered, they need one entry per nucleus.
    """
    ids = np.asarray(ids)
    out = np.zeros(labels.shape, np.int64 if ids.size >= 2**31 - 1 else np.int32)
    if ids.size == 0:
        return out
    pos = np.searchsorted(ids, labels)
    hit = ids[np.minimum(pos, ids.size - 1)] == labels
    out[hit] = pos[hit] + 1
    return out


def _huge_ids(labels: np.ndarray, ids: np.ndarray) -> bool:
    """Whether a list of ``max(ids)`` entries would be much larger than the image itself."""
    return bool(ids.size) and int(ids.max()) > max(labels.size, 2**16)


def bounding_boxes(labels: np.ndarray, ids: np.ndarray) -> list[tuple[slice, ...]]:
    """Bounding box (tuple of slices) of each label id in the sorted array ``ids``, in order.

    Uses :func:`scipy.ndimage.find_objects` directly, or on :func:`sequential_labels` when the
    largest id is much larger than the image (so that memory does not grow with the id values).
    """
    ids = np.asarray(ids)
    if ids.size == 0:
        return []
    if _huge_ids(labels, ids):
        return ndi.find_objects(sequential_labels(labels, ids), max_label=ids.size)
    slices = ndi.find_objects(labels, max_label=int(ids.max()))
    return [slices[int(lab) - 1] for lab in ids]


def morphology(
    labels: np.ndarray,
    image: np.ndarray,
    ids: np.ndarray,
    channel_ids: Sequence[int],
    spacing: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Centroid, size, shape and intensity of the nuclei ``ids`` (``skimage.measure.regionprops``).

    ``image`` is channels-first; intensities are in its original units. With ``spacing`` (pixel
    or voxel size per axis), sizes and shape measures are in its units (size a float; a 2-D
    perimeter only for square pixels, else NaN) and centroids stay in pixels. Columns:
    ``centroid_[z]yx``, ``area`` (2-D) or ``volume`` (3-D), ``eccentricity`` and ``perimeter``
    (2-D only),
    ``solidity``, ``axis_major_length``, ``axis_minor_length``, ``mean_intensity`` and
    ``integrated_intensity`` (suffixed ``_ch<k>``, ``k`` from ``channel_ids``, when there are
    several channels). NaN pixels are left out of the intensity mean (the integrated
    intensity is that mean times the number of pixels); a nucleus without a finite pixel gets
    NaN. Degenerate nuclei get NaN where a measure is undefined: axis lengths of flat nuclei,
    solidity of a 3-D nucleus without a convex volume (one slice thick, a line). ``ids`` are
    sorted.
    """
    from skimage.measure import regionprops_table

    ndim = labels.ndim
    props = ["label", "area", "centroid", "solidity", "axis_major_length", "axis_minor_length"]
    isotropic = spacing is None or len(set(spacing)) == 1
    if ndim == 2:
        props += ["eccentricity"] + (["perimeter"] if isotropic else [])
    seq = None
    if _huge_ids(labels, ids):  # regionprops allocates one entry per id up to the largest
        seq = kept = sequential_labels(labels, ids)
    else:
        kept = labels * np.isin(labels, ids)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # degenerate (flat) nuclei: NaN axes
        # ... and no convex hull (a 3-D nucleus one slice thick): skimage warns, solidity inf
        warnings.filterwarnings("ignore", message=".*convex hull.*", category=UserWarning)
        table = regionprops_table(
            kept, intensity_image=np.moveaxis(image, 0, -1), properties=[*props, "intensity_mean"],
            spacing=spacing,
        )
    if seq is not None:
        table["label"] = np.asarray(ids)[table["label"] - 1]
    if not np.array_equal(table["label"], ids):  # pragma: no cover - regionprops sorts by label
        raise RuntimeError("regionprops did not return the requested labels in order")
    axes = AXES[-ndim:]
    size_name = "area" if ndim == 2 else "volume"
    step = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    cols = {f"centroid_{a}": table[f"centroid-{i}"] / step[i] for i, a in enumerate(axes)}
    cols[size_name] = table["area"].astype(np.int64) if spacing is None else table["area"]
    n_pixels = np.round(table["area"] / np.prod(step))
    if ndim == 2 and not isotropic:
        table["perimeter"] = np.full(len(table["label"]), np.nan)
    for name in ("eccentricity", "solidity", "perimeter", "axis_major_length", "axis_minor_length"):
        if name in table:
            cols[name] = table[name]
    solid = np.asarray(cols["solidity"], dtype=np.float64)  # without a hull: NaN, not inf
    cols["solidity"] = np.where(np.isfinite(solid) & (solid <= 1.0 + 1e-9), solid, np.nan)
    for k, channel in enumerate(channel_ids):
        suffix = "" if len(channel_ids) == 1 else f"_ch{channel}"
        mean = table[f"intensity_mean-{k}"] if f"intensity_mean-{k}" in table else table["intensity_mean"]
        if np.isnan(mean).any():  # NaN pixels: mean over the finite pixels only
            if seq is None:
                seq = sequential_labels(labels, ids)
            mean = np.where(np.isnan(mean), _nanmean_per_label(image[k], seq, len(ids)), mean)
        cols[f"mean_intensity{suffix}"] = mean
        cols[f"integrated_intensity{suffix}"] = mean * n_pixels  # the sum of the pixels
    return pd.DataFrame(cols)


def _nanmean_per_label(values: np.ndarray, seq: np.ndarray, n: int) -> np.ndarray:
    """Mean of the non-NaN ``values`` of each label ``1..n`` of ``seq`` (NaN where there is none)."""
    valid = (seq > 0) & ~np.isnan(values)
    sums = np.bincount(seq[valid], weights=values[valid], minlength=n + 1)[1:]
    counts = np.bincount(seq[valid], minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def crop_nuclei(
    image: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    crop_shape: tuple[int, ...],
    normalize: Normalize,
    out_crops: np.ndarray,
    out_masks: np.ndarray,
    out_missing: np.ndarray | None = None,
) -> np.ndarray:
    """Write one masked, normalised crop per nucleus into ``out_crops`` / ``out_masks``.

    Each nucleus's bounding box is centred in the crop; a nucleus whose box exceeds the crop on
    any axis is first downscaled isotropically (linear interpolation with anti-aliasing; the mask
    is resized the same way and thresholded at 0.5 - at half its largest value where that is
    below 0.5, so that a thin nucleus keeps its core) so that it fits. NaN pixels are missing values (see
    :func:`normalize_nucleus`; a downscaled pixel is NaN if most of its weight came from NaN
    pixels); with ``out_missing``, those of the nucleus are marked there. ``ids`` are sorted.
    Returns the scale factor of each nucleus (1 = not rescaled).
    """
    from skimage.transform import resize

    out_shape = np.asarray(crop_shape)
    boxes = bounding_boxes(labels, ids)
    scales = np.ones(ids.size)
    for i, (lab, box) in enumerate(zip(ids, boxes)):
        mask = labels[box] == lab
        region = image[(slice(None), *box)].astype(np.float32)
        size = np.asarray(mask.shape)
        scale = min(1.0, float(np.min(out_shape / size)))
        if scale < 1.0:
            new = tuple(np.clip(np.round(size * scale), 1, out_shape).astype(int))
            weight = resize(mask.astype(np.float32), new, order=1, anti_aliasing=True)
            top = float(weight.max())
            mask = weight >= (0.5 if top >= 0.5 else 0.5 * top)  # a thin nucleus keeps its core
            shape = (region.shape[0], *new)
            missing = np.isnan(region)
            if missing.any():  # resize values and weights of the finite pixels apart
                weight = resize((~missing).astype(np.float32), shape, order=1, anti_aliasing=True)
                total = resize(
                    np.where(missing, 0, region), shape, order=1, anti_aliasing=True, preserve_range=True
                )
                with np.errstate(invalid="ignore", divide="ignore"):
                    region = np.where(weight >= 0.5, total / weight, np.nan).astype(np.float32)
            else:
                region = resize(region, shape, order=1, anti_aliasing=True, preserve_range=True)
            size, scales[i] = np.asarray(new), scale
        start = (out_shape - size) // 2
        dst = tuple(slice(s, s + n) for s, n in zip(start, size))
        out_crops[i][(slice(None), *dst)] = normalize_nucleus(region, mask, normalize)
        out_masks[i][dst] = mask
        if out_missing is not None:
            out_missing[i][dst] = mask & np.isnan(region).any(0)
    return scales


def normalize_nucleus(region: np.ndarray, mask: np.ndarray, rule: Normalize) -> np.ndarray:
    """Scale a channels-first nucleus region to [0, 1] inside ``mask`` and zero it outside.

    A channel of constant intensity inside the nucleus becomes 1 (0 if that intensity is <= 0).
    NaN pixels are missing values: they are left out of the minimum and maximum and are 0 in
    the result (a channel with no finite pixel in the nucleus is all 0).
    """
    if rule not in NORMALIZE_RULES:
        raise ValueError(f"normalize={rule!r}: expected one of {sorted(NORMALIZE_RULES)}")
    shape = (-1,) + (1,) * mask.ndim
    inside = region[:, mask]
    if inside.shape[1] == 0:
        return np.zeros_like(region, dtype=np.float32)
    missing = np.isnan(region)
    if missing.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channel
            hi = np.nan_to_num(np.nanmax(inside, 1), nan=0.0)
            lo = np.nan_to_num(np.nanmin(inside, 1), nan=0.0) if rule == "minmax" else np.zeros_like(hi)
        region = np.where(missing, 0, region)
        mask = mask & ~missing  # per channel from here on
    else:
        hi = inside.max(1)
        lo = inside.min(1) if rule == "minmax" else np.zeros_like(hi)
    if rule == "max":
        region = np.maximum(region, 0)
    span = hi - lo
    safe = np.where(span > 0, span, 1.0).reshape(shape)
    out = np.where((span > 0).reshape(shape), (region - lo.reshape(shape)) / safe, (hi > 0).reshape(shape))
    return (np.clip(out, 0.0, 1.0) * mask).astype(np.float32)
