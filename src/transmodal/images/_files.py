"""Image and label files: finding image / mask pairs, reading and validating the arrays."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .._utils import user_stacklevel

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
MASK_FOLDERS = ("labels", "masks")

PathLike = str | os.PathLike


def imread(path: PathLike) -> np.ndarray:
    """Read one image file: TIFF through :mod:`tifffile`, anything else through :mod:`skimage.io`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        import skimage.io

        return np.asarray(skimage.io.imread(path))
    except Exception as err:  # unreadable or corrupt file
        raise ValueError(f"cannot read image file {path}: {err}") from err


def extra_axis_letter(path: PathLike, image_ndim: int, mask_ndim: int) -> str | None:
    """For an image with one axis more than its mask: the TIFF axis letter of that axis
    (``"C"``/``"S"`` channels, ``"Z"`` slices, ``"T"`` time, ``"Q"`` unnamed), or ``None``
    (not a TIFF, no axis metadata, or axes that do not fit)."""
    axes = _tiff_axes(path)
    if axes is None or len(axes) != image_ndim or image_ndim != mask_ndim + 1:
        return None
    spatial = "YX" if mask_ndim == 2 else "ZYX"
    rest = list(axes)
    for letter in spatial:
        if letter not in rest:
            return None
        rest.remove(letter)
    return rest[0] if len(rest) == 1 else None


def check_extra_axis(
    image_path: PathLike, mask_path: PathLike, shape: tuple[int, ...], mask_ndim: int, *,
    warn: bool,
) -> bool:
    """For an image with one axis more than its mask, which would be read as channels:
    refuse a TIFF whose metadata names that axis Z (slices, beside a 2-D mask) or T (time),
    and, with ``warn``, warn about a TIFF that does not name it; returns whether it warned."""
    letter = extra_axis_letter(image_path, len(shape), mask_ndim)
    if letter in ("Z", "T"):
        what = "z-slices" if letter == "Z" else "time points"
        advice = (
            f"its mask {mask_path} is 2-D: a z-stack needs a 3-D mask of its shape, or "
            "project it first (e.g. the maximum over z)" if letter == "Z"
            else "read one time point at a time"
        )
        raise ValueError(
            f"image {image_path}: its metadata names an axis {letter} ({what}; image shape "
            f"{shape}), which would be read as channels; {advice}. Pass channel_axis= if they "
            "are channels"
        )
    if letter in ("Q", "I") and warn:
        planes = (
            "z-slices, give a 3-D mask of the stack's shape or project it first"
            if mask_ndim == 2 else "time points, read one at a time"
        )
        warnings.warn(
            f"image {image_path} (shape {shape}) does not name its axes: the axis that its "
            f"{mask_ndim}-D mask lacks is read as channels; if those planes are {planes}. "
            "Pass channel_axis= (or channels=) to say they are channels",
            UserWarning, stacklevel=user_stacklevel(),
        )
        return True
    return False


def _tiff_axes(path: PathLike) -> str | None:
    """The axis letters tifffile reports for a TIFF's first series (e.g. ``"ZCYX"``; an
    axis tifffile only guessed, ``"Q"``), or ``None`` (not a TIFF, or no axis metadata)."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            axes = str(tif.series[0].axes)
            shaped = tif.shaped_metadata or ()
            # a stack written by tifffile.imwrite without axes: 3 or 4 planes before the
            # image's rows are taken for RGB(A) samples ("S...") by tifffile's guess, not
            # by the writer's word: unnamed (interleaved samples, "YXS", are RGB pixels)
            if shaped and not any("axes" in m for m in shaped) and axes.startswith("S"):
                axes = "Q" + axes[1:]
            return axes
    except Exception:  # noqa: BLE001 - metadata is a hint only
        return None


def drop_singleton_axes(a: np.ndarray, keep: int | None = None) -> tuple[np.ndarray, int | None]:
    """``a`` without its size-1 axes (a one-slice stack ``(1, H, W)`` becomes ``(H, W)``),
    except axis ``keep`` (a valid, possibly negative index of ``a``); also returns ``keep``'s
    index among the remaining axes (``None`` without ``keep``)."""
    kept = [ax for ax, n in enumerate(a.shape) if n != 1]
    if keep is not None:
        keep %= a.ndim
        kept = sorted({*kept, keep})
    return a.reshape([a.shape[ax] for ax in kept] or [1]), (
        None if keep is None else kept.index(keep)
    )


def read_labels(path: PathLike) -> np.ndarray:
    """Read an instance label image (0 = background, 1..N = one nucleus each) and validate it.

    Returns a non-negative integer array of 2 or 3 dimensions. A palette ("P" mode) PNG keeps
    its indices as labels; singleton axes (a one-slice stack ``(1, H, W)``) are dropped.
    """
    labels = imread(path)
    if labels.ndim > 2:  # (1, H, W): one slice, a 2-D mask
        labels, _ = drop_singleton_axes(labels)
    if labels.ndim == 3 and Path(path).suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as im:  # indexed colours: the indices are the labels
            if im.mode == "P":
                labels = np.asarray(im)
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"mask {path}: expected a 2-D or 3-D instance label image, got shape {labels.shape}"
        )
    if labels.ndim == 3 and Path(path).suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(
            f"mask {path}: a colour image of shape {labels.shape}, not an instance label image "
            "(3-D label stacks must be TIFF files)"
        )
    if labels.dtype == bool:
        raise ValueError(
            f"mask {path}: binary mask, not an instance label image; label it first "
            "(e.g. skimage.measure.label) so that every nucleus has its own integer id"
        )
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise ValueError(f"mask {path}: label values must be integers, got non-integral floats")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise ValueError(f"mask {path}: label image must be of integer type, got {labels.dtype}")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise ValueError(f"mask {path}: label values must be >= 0 (0 = background)")
    return labels


BINARY_VALUES = (1, 255, 65535)  # the foreground of binary masks saved as integers


def refuse_binary(labels: np.ndarray, path: PathLike, min_size: int) -> None:
    """Refuse a binary mask stored as integers (a 0 / 1 or 0 / 255 PNG): its one label
    value over two or more separate pieces of at least ``min_size`` pixels is nuclei not yet
    labelled, not one nucleus (a nucleus with a stray pixel stays a nucleus)."""
    top = labels.max(initial=0)
    if top not in BINARY_VALUES or labels[labels > 0].min() != top:
        return
    full = np.ones((3,) * labels.ndim, bool)
    pieces, _ = ndi.label(labels > 0, structure=full)
    sizes = np.bincount(pieces.ravel())[1:]
    big = int((sizes >= max(int(min_size), 1)).sum())
    if big > 1:
        raise ValueError(
            f"mask {path}: binary mask (every nucleus pixel is {int(top)}; {big} separate "
            "pieces), not an instance label image; label it first (e.g. "
            "skimage.measure.label(mask > 0)) so that every nucleus has its own integer id"
        )


def to_channels_first(
    image: np.ndarray,
    spatial_shape: tuple[int, ...],
    *,
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
    path: PathLike = "<array>",
) -> np.ndarray:
    """Bring ``image`` to ``(channels, *spatial_shape)`` and keep the ``channels`` asked for.

    An image with the mask's shape has one channel. An image with one axis more has its channels
    on ``channel_axis``, or, if that is ``None``, on the one axis whose removal leaves the mask's
    shape (the last axis is preferred, then the first).
    """
    if image.ndim > len(spatial_shape) + 1:  # e.g. (1, C, H, W)
        if channel_axis is not None and not -image.ndim <= channel_axis < image.ndim:
            raise ValueError(
                f"image {path}: channel_axis={channel_axis} is out of range for {image.ndim} axes"
            )
        # channel_axis counts in the file's axes: the axis is kept, and renumbered
        image, channel_axis = drop_singleton_axes(image, keep=channel_axis)
    if image.shape == tuple(spatial_shape):
        image = image[None]
    elif image.ndim == len(spatial_shape) + 1:
        if channel_axis is None:
            candidates = [
                ax
                for ax in (image.ndim - 1, *range(image.ndim - 1))
                if image.shape[:ax] + image.shape[ax + 1 :] == tuple(spatial_shape)
            ]
            if not candidates:
                raise ValueError(
                    f"image {path}: shape {image.shape} does not match its mask's shape "
                    f"{tuple(spatial_shape)} with or without a channel axis"
                )
            if len(candidates) > 1:  # equal-sized neighbours, e.g. 3 slices x 3 channels
                axes = _tiff_axes(path)
                if axes is not None and len(axes) == image.ndim and axes.count("C") == 1 \
                        and axes.index("C") in candidates:
                    candidates = [axes.index("C")]
                else:
                    raise ValueError(
                        f"image {path}: shape {image.shape} fits its mask's shape "
                        f"{tuple(spatial_shape)} with the channels on any of axes "
                        f"{sorted(candidates)}; pass channel_axis= to say which"
                    )
            channel_axis = candidates[0]
        if not -image.ndim <= channel_axis < image.ndim:
            raise ValueError(
                f"image {path}: channel_axis={channel_axis} is out of range for {image.ndim} axes"
            )
        image = np.moveaxis(image, channel_axis, 0)
        if image.shape[1:] != tuple(spatial_shape):
            raise ValueError(
                f"image {path}: shape without the channel axis {image.shape[1:]} differs from its "
                f"mask's shape {tuple(spatial_shape)}"
            )
    else:
        raise ValueError(
            f"image {path}: shape {image.shape} does not match its mask's shape {tuple(spatial_shape)}"
        )
    if channels is not None:
        idx = np.asarray(channels, dtype=int).ravel()
        if idx.size == 0 or idx.min() < -image.shape[0] or idx.max() >= image.shape[0]:
            raise ValueError(
                f"image {path}: channels={list(channels)} out of range for {image.shape[0]} channel(s)"
            )
        image = image[idx]
    return image


def _image_files(folder: Path) -> dict[str, Path]:
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            if f.stem in files:
                raise ValueError(
                    f"two files with image id {f.stem!r} in {folder}: {files[f.stem].name}, {f.name}"
                )
            files[f.stem] = f
    return files


def find_pairs(
    images: PathLike | Sequence[PathLike] | Sequence[tuple[PathLike, PathLike]],
    masks: PathLike | Sequence[PathLike] | None = None,
    image_ids: Sequence[str] | None = None,
) -> list[tuple[str, Path, Path]]:
    """Resolve the inputs of :func:`~transmodal.images.read_nuclei` to ``(image_id, image, mask)``.

    Accepted forms: one image file with one mask file; a list of ``(image, mask)`` pairs;
    two lists of equal length; an image folder and a mask folder (files matched by name
    without suffix); or one folder holding ``images/`` and ``labels/`` (or ``masks/``)
    sub-folders. The image id is ``image_ids[i]`` or else the image file name
    without its suffix, and must be unique.
    """
    if isinstance(images, (str, os.PathLike)) and Path(images).is_file():
        if not isinstance(masks, (str, os.PathLike)) or not Path(masks).is_file():
            raise ValueError(
                f"masks: an image file ({images}) needs one mask file, got {masks!r}"
            )
        images, masks = [images], [masks]
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        if not folder.is_dir():
            raise ValueError(
                f"images: {folder} is neither a folder nor a file (pass a folder, an image file "
                "with its mask file, or a list of files)"
            )
        if masks is None:
            sub = [folder / m for m in MASK_FOLDERS if (folder / m).is_dir()]
            if not (folder / "images").is_dir() or not sub:
                raise ValueError(
                    f"images: {folder} must hold 'images/' and 'labels/' (or 'masks/') sub-folders "
                    "when no mask folder is given"
                )
            folder, mask_folder = folder / "images", sub[0]
        else:
            if not isinstance(masks, (str, os.PathLike)) or not Path(masks).is_dir():
                raise ValueError(f"masks: {masks!r} must be a folder when images is a folder")
            mask_folder = Path(masks)
        image_files, mask_files = _image_files(folder), _image_files(mask_folder)
        if not image_files:
            raise ValueError(f"images: no {'/'.join(IMAGE_SUFFIXES)} files in {folder}")
        missing = [k for k in image_files if k not in mask_files]
        if missing:
            raise ValueError(
                f"masks: no mask in {mask_folder} for {len(missing)} image(s) of {folder}, "
                f"e.g. {missing[:3]}"
            )
        pairs = [(image_files[k], mask_files[k]) for k in image_files]
    else:
        items = list(images)
        if masks is None:
            if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in items):
                raise ValueError(
                    "images: a list must hold (image, mask) pairs when masks is None; for one "
                    "image, pass [(image, mask)] or read_nuclei(image, mask)"
                )
            pairs = [(Path(i), Path(m)) for i, m in items]
        else:
            if isinstance(masks, (str, os.PathLike)) and Path(masks).is_dir():
                raise ValueError(
                    f"masks: {masks} is a folder; a mask folder goes with an image folder, a list of "
                    "images with a list of masks"
                )
            mask_items = [masks] if isinstance(masks, (str, os.PathLike)) else list(masks)
            if len(mask_items) != len(items):
                raise ValueError(f"images and masks differ in length: {len(items)} != {len(mask_items)}")
            pairs = [(Path(i), Path(m)) for i, m in zip(items, mask_items)]
        if not pairs:
            raise ValueError("images: no image given")
    if image_ids is not None:
        if isinstance(image_ids, (str, bytes)) or len(image_ids) != len(pairs):
            raise ValueError(
                f"image_ids: expected one id per image ({len(pairs)}), got {image_ids!r:.80}"
            )
        ids = [str(i) for i in image_ids]
    else:
        ids = [image.stem for image, _ in pairs]
    out, seen = [], {}
    for image_id, (image, mask) in zip(ids, pairs):
        if image_id in seen:
            hint = "" if image_ids is not None else " (pass image_ids= to name the images)"
            raise ValueError(
                f"images: duplicate image id {image_id!r} ({seen[image_id]} and {image}){hint}"
            )
        seen[image_id] = image
        out.append((image_id, image, mask))
    return out
