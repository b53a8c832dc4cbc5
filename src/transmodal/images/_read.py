"""From image and label files to one AnnData row per nucleus, with fixed-size crops."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import user_stacklevel
from ..data._modality import is_number
from ._crops import (
    AXES,
    NORMALIZE_RULES,
    Normalize,
    crop_nuclei,
    morphology,
    select_nuclei,
    split_labels,
)
from ._files import (
    PathLike,
    check_extra_axis,
    find_pairs,
    imread,
    read_labels,
    refuse_binary,
    to_channels_first,
)
from ._radial import check_spacing

DSB2018 = "nuclei_dsb2018_fluo"


def read_nuclei(
    images: PathLike | Sequence[PathLike] | Sequence[tuple[PathLike, PathLike]],
    masks: PathLike | Sequence[PathLike] | None = None,
    *,
    crop_size: int | Sequence[int] = 64,
    channels: Sequence[int] | None = None,
    channel_axis: int | None = None,
    min_area: int = 30,
    exclude_border: bool = True,
    normalize: Normalize = "max",
    spacing: Sequence[float] | None = None,
    image_ids: Sequence[str] | None = None,
) -> AnnData:
    """Read microscopy images with instance label masks into one AnnData row per nucleus.

    2-D images and 3-D z-stacks are read with :mod:`tifffile` (``.tif``, ``.tiff``) or
    :func:`skimage.io.imread` (``.png`` and others). The files are streamed: a first pass reads
    only the masks (to validate them and count the nuclei to keep), a second pass reads one
    image at a time into preallocated crop arrays, so memory holds the crops plus one image.

    Parameters
    ----------
    images
        A list of ``(image, mask)`` file pairs; or a list of image files with
        ``masks`` a list of mask files of the same length (or one image file with one mask
        file); or an image folder with ``masks`` a mask folder (files matched by name without
        suffix); or a folder holding ``images/`` and ``labels/`` (or ``masks/``) sub-folders.
        The image id is the image file name without its suffix, unless ``image_ids`` are given.
    masks
        Mask files or folder, see ``images``. Each mask is an instance label image of the
        image's spatial shape: 0 = background, one positive integer per nucleus.
    crop_size
        Crop edge in pixels (voxels), one number for every axis or one per spatial axis
        (``(D, H, W)`` for z-stacks).
    channels
        Indices of the channels to keep (default: all; negative indices count from the last and
        are recorded as the non-negative index of the file). An image with the mask's shape has
        one channel.
    channel_axis
        Axis of the channels in the image files (default: inferred as the one axis whose removal
        leaves the mask's shape; where several axes would, as in 3 slices x 3 channels, the
        TIFF's own axis letters decide, else an error asks for it). Singleton axes of images
        and masks are dropped first (a one-slice stack is a 2-D image). A TIFF whose metadata
        names that axis ``Z`` (slices) or ``T`` (time) is refused when its mask is 2-D (a
        z-stack needs a 3-D mask, or a projection first); a TIFF that names no axes warns
        that its planes are read as channels (pass ``channel_axis`` or ``channels`` to say so).
    min_area
        Nuclei with fewer pixels (voxels) are dropped.
    exclude_border
        Drop nuclei with a pixel (voxel) on any face of the image (cut by the field of view).
    normalize
        ``"max"`` (default; intensities inside the nucleus divided by their maximum, so the
        radial profile of a crop is that of the raw nucleus) or ``"minmax"``.
    spacing
        Pixel (voxel) size per spatial axis (``(z, y, x)`` for z-stacks, e.g. ``(2.0, 0.5,
        0.5)`` um), for anisotropic voxels: sizes and shape measures are then in these units
        (``area`` / ``volume`` a float; a 2-D ``perimeter`` only for square pixels, else NaN),
        centroids stay in pixels. Recorded in ``uns["crops"]["spacing"]``, where
        :func:`~transmodal.images.radial_profiles` takes it from. Default: 1 on every axis.
    image_ids
        One id per image (default: the file names without suffix), e.g. to read files of the
        same name from different folders.

    Returns
    -------
    AnnData with one row per kept nucleus and no variables:

    - ``obs``: ``image_id`` (categorical), ``label`` (id in the mask), ``centroid_[z]yx`` (in
      pixels of the full image), ``area`` (2-D) or ``volume`` (3-D), ``eccentricity`` and
      ``perimeter`` (2-D), ``solidity``, ``axis_major_length``, ``axis_minor_length``,
      ``mean_intensity`` and ``integrated_intensity`` (raw image units, suffixed ``_ch<k>`` with
      the channel index ``k`` of the file when there are several), ``crop_scale`` (1, or the
      downscaling factor of a nucleus larger than the crop). ``obs_names`` are
      ``<image_id>_<label>``.
    - ``obsm["crops"]``: float32 ``(n, channels, H, W)`` or ``(n, channels, D, H, W)``: each
      nucleus's bounding box centred in the crop, pixels outside the nucleus set to 0, values
      in [0, 1] by the ``normalize`` rule. A nucleus whose bounding box exceeds the crop on any
      axis is downscaled isotropically to fit (factor in ``obs["crop_scale"]``).
    - NaN and infinite pixels of float images are missing values (with a warning naming how
      many nuclei hold some): they are left out of the normalisation and of
      ``mean_intensity`` (the integrated intensity is that mean times the number of pixels),
      are 0 in the crops and ``True`` in ``obsm["missing"]`` (bool, the shape of the masks;
      only present when there are such pixels), which
      :func:`~transmodal.images.radial_profiles` leaves out.
    - ``obsm["masks"]``: bool ``(n, H, W)`` or ``(n, D, H, W)``, the nucleus in its crop.
    - ``uns["crops"]``: crop shape, channels, normalisation rule, centring and rescaling
      rule, pixel (voxel) ``spacing``.
    - ``uns["nuclei_filter"]``: the filter settings and the numbers of images, nuclei seen,
      dropped as small (``< min_area``), dropped at the border (not small, touching a face) and
      kept.

    Examples
    --------
    >>> import transmodal as tm
    >>> nuclei = tm.images.read_nuclei("my_images/", crop_size=64)  # my_images/{images,labels}/
    >>> profiles = tm.images.radial_profiles(nuclei)
    """
    pairs = find_pairs(images, masks, image_ids)
    channels = _check_channels(channels)
    if normalize not in NORMALIZE_RULES:
        raise ValueError(f"normalize={normalize!r}: expected one of {sorted(NORMALIZE_RULES)}")
    if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 0:
        raise ValueError(f"min_area={min_area!r}: expected an integer >= 0 (pixels or voxels)")
    if spacing is not None:  # its values now; its length against the masks' axes below
        check_spacing(spacing, np.size(spacing))

    # pass 1: masks only -> validation, nuclei kept per image, total count
    selected, ndim = [], None
    totals = {"n_nuclei": 0, "n_dropped_small": 0, "n_dropped_border": 0}
    n_split, split_example = 0, ""
    for _, _, mask_path in pairs:
        labels = read_labels(mask_path)
        refuse_binary(labels, mask_path, min_area)
        if ndim is None:
            ndim = labels.ndim
        elif labels.ndim != ndim:
            raise ValueError(
                f"mask {mask_path}: {labels.ndim}-D, but earlier masks are {ndim}-D; read 2-D images "
                "and 3-D z-stacks separately"
            )
        ids, counts = select_nuclei(labels, min_area=int(min_area), exclude_border=exclude_border)
        split = split_labels(labels, ids)
        if split.size:
            n_split += split.size
            split_example = split_example or f"label {int(split[0])} of {mask_path}"
        selected.append(ids)
        for key, value in counts.items():
            totals[key] += value
    if n_split:
        warnings.warn(
            f"{n_split} nucleus label(s) cover several separate pieces (e.g. {split_example}); "
            "each is read as one nucleus (its centroid between the pieces, one crop around "
            "all of them). If the pieces are different nuclei, relabel the mask first (e.g. "
            "skimage.measure.label(mask > 0))",
            UserWarning, stacklevel=user_stacklevel(),
        )
    crop_shape = _crop_shape(crop_size, ndim)
    spacing = check_spacing(spacing, ndim)  # its length once the masks' dimension is known
    n_kept = sum(ids.size for ids in selected)
    if n_kept == 0:
        raise ValueError(
            f"no nucleus left in {len(pairs)} image(s) after filtering ({totals}); lower min_area "
            "or set exclude_border=False"
        )

    # pass 2: one image at a time into preallocated arrays
    crops = masks_out = missing_out = None
    obs_parts, start, n_nan_nuclei, rgba_warned, axes_warned = [], 0, 0, False, False
    for (image_id, image_path, mask_path), ids in zip(pairs, selected):
        if ids.size == 0:
            continue
        labels = read_labels(mask_path)
        raw = imread(image_path)
        if (channels is None and channel_axis is None and not rgba_warned
                and raw.ndim == labels.ndim + 1 and raw.shape[-1] == 4
                and Path(image_path).suffix.lower() == ".png"):
            rgba_warned = True
            warnings.warn(
                f"image {image_path} is an RGBA PNG: its alpha channel is read as channel 3 "
                "like the colours; pass channels=[0, 1, 2] (or the one holding the DNA stain) "
                "to leave it out",
                UserWarning, stacklevel=user_stacklevel(),
            )
        if channel_axis is None and raw.ndim == labels.ndim + 1 and 1 not in raw.shape:
            # the axis the mask lacks would be read as channels: what the TIFF names it
            warn = channels is None and not axes_warned
            axes_warned |= check_extra_axis(image_path, mask_path, raw.shape, labels.ndim, warn=warn)
        image = to_channels_first(raw, labels.shape, channel_axis=channel_axis, path=image_path)
        n_file = image.shape[0]
        if channels is not None:
            image = to_channels_first(image, labels.shape, channel_axis=0, channels=channels, path=image_path)
        # channel indices of the file, negative ones resolved (channels=[-1] -> [n_file - 1])
        ids_here = list(range(n_file)) if channels is None else [int(c) % n_file for c in np.ravel(channels)]
        if len(set(ids_here)) != len(ids_here):
            raise ValueError(
                f"image {image_path}: channels={channels} name a channel twice (channels "
                f"{ids_here} of its {n_file})"
            )
        if crops is None:
            channel_ids = ids_here
            _warn_crop_memory(n_kept, image.shape[0], crop_shape)
            crops = np.zeros((n_kept, image.shape[0], *crop_shape), np.float32)
            masks_out = np.zeros((n_kept, *crop_shape), bool)
        elif image.shape[0] != crops.shape[1]:
            raise ValueError(
                f"image {image_path}: {image.shape[0]} channel(s), but earlier images have {crops.shape[1]}"
            )
        elif ids_here != channel_ids:
            raise ValueError(
                f"image {image_path}: channels={channels} are channels {ids_here} of its "
                f"{n_file}, but channels {channel_ids} of earlier images"
            )
        if image.dtype.kind in "fc":
            bad_px = ~np.isfinite(image)
            if bad_px.any():  # NaN and infinite pixels are missing values
                image = np.where(bad_px, np.nan, image)
                bad_px = bad_px.any(0)
                n_nan_nuclei += int(np.isin(ids, labels[bad_px]).sum())
                if missing_out is None:
                    missing_out = np.zeros((n_kept, *crop_shape), bool)
        stop = start + ids.size
        scales = crop_nuclei(
            image, labels, ids, crop_shape, normalize, crops[start:stop], masks_out[start:stop],
            None if missing_out is None else missing_out[start:stop],
        )
        part = morphology(labels, image, ids, channel_ids, spacing)
        part.insert(0, "image_id", image_id)
        part.insert(1, "label", ids)
        part["crop_scale"] = scales
        obs_parts.append(part)
        start = stop

    if n_nan_nuclei:
        warnings.warn(
            f"{n_nan_nuclei} nucleus/nuclei with NaN or infinite pixels: they are treated as "
            "missing (left out of the normalisation, of mean_intensity / integrated_intensity "
            "and of radial profiles; 0 in the crops, True in obsm['missing'])",
            stacklevel=user_stacklevel(),
        )
    obs = pd.concat(obs_parts, ignore_index=True)
    obs["image_id"] = pd.Categorical(obs["image_id"], categories=list(dict.fromkeys(obs["image_id"])))
    obs.index = (obs["image_id"].astype(str) + "_" + obs["label"].astype(str)).to_numpy()
    obsm = {"crops": crops, "masks": masks_out}
    if missing_out is not None:
        obsm["missing"] = missing_out
    adata = AnnData(obs=obs, obsm=obsm)
    adata.uns["crops"] = {
        "shape": list(crop_shape),
        "axes": "c" + AXES[-ndim:],
        "channels": channel_ids,
        "normalize": normalize,
        "normalize_rule": NORMALIZE_RULES[normalize],
        "centring": "bounding box of the nucleus centred in the crop",
        "rescaling": "nuclei whose bounding box exceeds the crop are downscaled isotropically to fit "
        "(linear, anti-aliased; factor in obs['crop_scale']); smaller nuclei keep their size",
        "spacing": [1.0] * ndim if spacing is None else list(spacing),
    }
    adata.uns["nuclei_filter"] = {
        "min_area": int(min_area),
        "exclude_border": bool(exclude_border),
        "rule": f"drop nuclei with < {int(min_area)} {'pixels' if ndim == 2 else 'voxels'}"
        + (", then nuclei touching a face of the image" if exclude_border else ""),
        "n_images": len(pairs),
        **totals,
        "n_kept": int(n_kept),
    }
    return adata


def dsb2018_nuclei(
    path: str | os.PathLike | None = None, *, n_images: int | None = None, **kwargs
) -> AnnData:
    """Nuclei of the 541 fluorescence images of the 2018 Data Science Bowl (BBBC038, fixed masks).

    Reads ``nuclei_dsb2018_fluo/`` under the data root (``images/<id>.png`` uint8 grayscale,
    ``labels/<id>.png`` uint16 instance labels, images in the order of ``index.csv``; 23,096
    annotated nuclei) with :func:`read_nuclei`.

    Parameters
    ----------
    path
        Data root (default ``$TRANSMODAL_DATA`` or ``../shared/data``).
    n_images
        Read only the first ``n_images`` images of ``index.csv`` (default: all).
    **kwargs
        Passed to :func:`read_nuclei` (``crop_size``, ``min_area``, ``exclude_border``, ...).

    Returns
    -------
    The AnnData of :func:`read_nuclei`.
    """
    from ..datasets import dataset_dir

    if n_images is not None and (not is_number(n_images, integer=True) or n_images < 1):
        raise ValueError(f"n_images={n_images!r}: expected a positive number of images")
    folder = dataset_dir(DSB2018, path)
    index = pd.read_csv(folder / "index.csv")
    if "image_id" not in index.columns:
        raise ValueError(f"{folder / 'index.csv'}: no 'image_id' column")
    ids = index["image_id"].astype(str).tolist()
    if n_images is not None:
        ids = ids[:n_images]
    pairs = [(folder / "images" / f"{i}.png", folder / "labels" / f"{i}.png") for i in ids]
    return read_nuclei(pairs, **kwargs)


def _check_channels(channels: Sequence[int] | int | None) -> list[int] | None:
    """``channels`` as a list of distinct integers (``None`` = all)."""
    if channels is None:
        return None
    values = [channels] if isinstance(channels, (int, np.integer)) else channels
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"channels={channels!r}: expected channel indices (integers)")
    values = list(np.ravel(np.asarray(values, dtype=object)))
    if not values or not all(
        isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_)) for c in values
    ):
        raise ValueError(f"channels={channels!r}: expected one or more channel indices (integers)")
    values = [int(c) for c in values]
    if len(set(values)) != len(values):
        raise ValueError(f"channels={channels!r}: a channel is named twice")
    return values


def _crop_shape(crop_size: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    sizes = [crop_size] * ndim if np.isscalar(crop_size) else list(crop_size)
    if len(sizes) != ndim or not all(isinstance(s, (int, np.integer)) and s > 0 for s in sizes):
        raise ValueError(
            f"crop_size={crop_size!r}: expected a positive integer or {ndim} positive integers "
            f"for {ndim}-D images"
        )
    return tuple(int(s) for s in sizes)


CROP_MEMORY_WARN = 4 * 2**30  # bytes of crops and masks above which read_nuclei warns


def _warn_crop_memory(n: int, channels: int, crop_shape: tuple[int, ...]) -> None:
    """Warn before allocating crops and masks of more than :data:`CROP_MEMORY_WARN` bytes."""
    size = int(np.prod(crop_shape))
    total = n * size * (4 * channels + 1)
    if total > CROP_MEMORY_WARN:
        warnings.warn(
            f"{n} nuclei in crops of {crop_shape} x {channels} channel(s) take "
            f"{total / 2**30:.1f} GiB (float32 crops and bool masks); for z-stacks give "
            "crop_size per axis (e.g. (16, 64, 64)) to fit the stack's depth",
            UserWarning, stacklevel=user_stacklevel(),
        )
