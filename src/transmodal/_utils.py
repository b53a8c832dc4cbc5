"""Small shared helpers: device resolution, seeded initialisation, atomic directory writes,
plain-JSON values."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` -> a device."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            "device must be 'cpu', 'cuda', 'cuda:N', 'mps', 'auto' or a torch.device; "
            f"got {device!r}"
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def is_global_zero() -> bool:
    """Whether this process is rank 0 (always true outside ``torch.distributed`` runs)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def lightning_accelerator(accelerator: str) -> str:
    """Validate a Lightning accelerator name (``"cpu"``, ``"gpu"``, ``"cuda"``, ``"mps"``, ``"auto"``)."""
    allowed = {"cpu", "gpu", "cuda", "mps", "auto"}
    if accelerator not in allowed:
        raise ValueError(f"accelerator must be one of {sorted(allowed)}, got {accelerator!r}")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"accelerator {accelerator!r} requested but CUDA is not available")
    return accelerator


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool) -> Iterator[Path]:
    """Write a directory atomically: fill a temporary sibling, then rename it into place.

    If anything fails, the temporary directory is removed and an existing ``path`` is left
    untouched. With ``overwrite=True`` an existing directory is replaced only after the new
    one is complete.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        # mkdtemp (and some writers) create private files; give them the usual permissions
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.rglob("*"):
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: dicts with string keys, lists, Python scalars (numpy
    scalars converted), non-finite floats as ``None`` (also what h5ad ``uns`` can store)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
