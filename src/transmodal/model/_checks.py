"""Argument checks shared by the model's construction, training and inference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data._modality import is_number


def check_number(
    name: str, value: Any, *, low: float = 0.0, strict: bool = False, integer: bool = False
) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a finite number (an integer
    with ``integer``) ``>= low`` (``> low`` with ``strict``)."""
    if is_number(value, integer=integer) and (value > low if strict else value >= low):
        return
    kind = "an integer" if integer else "a finite number"
    raise ValueError(
        f"{name} must be {kind} {'>' if strict else '>='} {low:g}, got {brief(value)}"
    )


def shape_of(value: Any) -> tuple[int, ...]:
    """The shape of an array, tensor or sequence; ``()`` for a scalar or a string."""
    if isinstance(value, (str, bytes)):
        return ()
    try:
        return tuple(int(n) for n in np.shape(value))
    except (ValueError, TypeError):  # (a ragged sequence)
        return (len(value),) if hasattr(value, "__len__") else ()


def brief(value: Any) -> str:
    """``repr(value)`` for a message, an array or a sequence told by its type and size."""
    shape = shape_of(value)
    if not shape:
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return f"{type(value).__name__} of shape {shape}"


FLOAT32_MAX = float(np.finfo(np.float32).max)
# torch.manual_seed and numpy's generators take seeds in [0, 2**63)
MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> None:
    if not (is_number(seed, integer=True) and 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")


def check_prior(prior: str, names: Sequence[str]) -> str | None:
    if prior == "learned":
        return None
    if isinstance(prior, str) and prior.startswith("anchor:"):
        anchor = prior.split(":", 1)[1]
        if anchor not in names:
            raise ValueError(
                f"prior {prior!r}: anchor modality {anchor!r} is not one of {list(names)}"
            )
        return anchor
    raise ValueError(f"prior must be 'learned' or 'anchor:<modality>', got {prior!r}")
