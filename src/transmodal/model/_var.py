"""A modality's feature annotations (``var`` columns) in a model file: numbers and category
codes as safetensors tensors, strings and category names in the JSON config.

Saved so that the translations of a model loaded without the target's data keep the gene
symbols, peak coordinates and flags of the features. Columns are restored with their
dtypes (nullable ones included), categories and category order; columns of other kinds
(arbitrary objects, mixed types, dates), columns whose names repeat and nullable integers
beyond 2**53 are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from .._utils import jsonable

# numpy kinds that safetensors holds exactly: bool, signed / unsigned integers, floats
_TENSOR_KINDS = "biuf"


def _numbers(column: pd.Series) -> np.ndarray | None:
    """The values of a numeric (not categorical) column as an array safetensors can hold
    (``None``: not numeric, or integers beyond what it stores exactly)."""
    dtype = column.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind not in _TENSOR_KINDS:
            return None
        values = column.to_numpy()
    elif pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        try:  # nullable: NA as NaN
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):  # (e.g. a sparse column of a nullable dtype)
            return None
        if np.nanmax(np.abs(values), initial=0.0) > 2.0**53:  # integers beyond float64's
            return None
    else:
        return None
    if values.dtype.kind == "f" and values.dtype.itemsize > 8:  # long double: no torch dtype
        values = values.astype(np.float64)
    if values.dtype.kind == "u" and values.dtype.itemsize > 1:  # torch: uint8 only
        if values.size and values.max() > np.iinfo(np.int64).max:
            return None
        values = values.astype(np.int64)
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))


def _category_names(categories: pd.Index) -> list | None:
    """Category names as JSON values (all strings, all integers or all finite floats), or
    ``None``."""
    values = list(categories)
    kinds = (
        lambda v: isinstance(v, str),
        lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)),
        lambda v: isinstance(v, (float, np.floating)) and bool(np.isfinite(v)),
    )
    return jsonable(values) if any(all(ok(v) for v in values) for ok in kinds) else None


def encode_var(var: pd.DataFrame, prefix: str) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """Describe ``var``'s columns for the config (a list in column order) and the tensors
    named ``{prefix}.{i}`` holding the numbers / category codes of column ``i``."""
    meta: list[dict[str, Any]] = []
    tensors: dict[str, torch.Tensor] = {}
    names = [str(c) for c in var.columns]
    for i, name in enumerate(names):
        if names.count(name) > 1:  # repeated names (also 0 and "0"): not one column each
            continue
        column = var.iloc[:, i]
        entry: dict[str, Any] = {"name": name, "dtype": str(column.dtype)}
        key = f"{prefix}.{len(meta)}"
        if isinstance(column.dtype, pd.CategoricalDtype):
            categories = _category_names(column.cat.categories)
            if categories is None:
                continue
            entry.update(kind="categorical", categories=categories,
                         ordered=bool(column.cat.ordered))
            tensors[key] = torch.from_numpy(column.cat.codes.to_numpy().astype(np.int64))
        elif (values := _numbers(column)) is not None:
            entry["kind"] = "number"
            tensors[key] = torch.from_numpy(values)
        else:
            values = column.astype(object).to_numpy()
            missing = pd.isna(values)
            if not all(isinstance(v, str) for v in values[~missing]):
                continue  # objects, mixed types: not saved
            entry.update(kind="string", values=[None if m else v for v, m in zip(values, missing)])
        meta.append(entry)
    return meta, tensors


# pandas' nullable dtypes that :func:`_numbers` saves as float64 numbers
_NULLABLE = {*(f"{s}Int{b}" for s in ("", "U") for b in (8, 16, 32, 64)), "Float32", "Float64",
             "boolean"}


def _saved_dtype(dtype: str, kind: str) -> Any:
    """The dtype named ``dtype`` if :func:`encode_var` saves columns of it as ``kind``
    (numbers: booleans, integers and floats of numpy, pandas' nullable, sparse and pyarrow
    dtypes; strings: object, pandas' and pyarrow's string dtypes); ``None`` for any other
    name, or one this process cannot build (a file edited to name, e.g., a bytes dtype of
    gigabytes per value; a pyarrow dtype without pyarrow): the column then keeps the dtype
    it is read with."""
    if kind == "number" and dtype in _NULLABLE:
        return dtype
    if kind == "string" and dtype in ("object", "string", "str"):
        return dtype
    try:
        parsed = pd.api.types.pandas_dtype(dtype)
    except Exception:  # (a name pandas cannot build here: TypeError, ImportError, NameError)
        return None
    if kind == "string":
        arrow = isinstance(parsed, pd.ArrowDtype) or str(parsed).startswith("string")
        return parsed if arrow and pd.api.types.is_string_dtype(parsed) else None
    base = parsed.subtype if isinstance(parsed, pd.SparseDtype) else parsed
    numeric = isinstance(base, (np.dtype, pd.ArrowDtype)) and base.kind in _TENSOR_KINDS
    return parsed if kind == "number" and numeric else None


def decode_var(
    meta: Any, tensors: dict[str, torch.Tensor], prefix: str, var_names: list[str], where: str
) -> pd.DataFrame:
    """The ``var`` DataFrame (indexed by ``var_names``) from :func:`encode_var`'s output;
    ``ValueError`` naming ``where`` when the saved description is malformed."""
    n = len(var_names)
    var = pd.DataFrame(index=pd.Index(var_names, dtype=object))
    if not isinstance(meta, list):
        raise ValueError(f"{where} must be a list of column descriptions")
    for i, entry in enumerate(meta):
        kind = entry.get("kind") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or kind not in ("number", "categorical", "string"):
            raise ValueError(f"{where}[{i}] needs a string 'name' and a 'kind' "
                             "(number, categorical or string)")
        if name in var.columns:  # (encode_var leaves repeated names out)
            raise ValueError(f"{where}[{i}]: column {name!r} is described twice")
        try:
            if kind == "string":
                values = entry.get("values")
                if not isinstance(values, list) or len(values) != n:
                    raise ValueError(f"needs a list 'values' of {n} entries (one per feature)")
                column = pd.Series(values, index=var.index, dtype=object)
            else:
                t = tensors.get(f"{prefix}.{i}")
                if t is None or tuple(t.shape) != (n,):
                    raise ValueError(f"needs the tensor {prefix}.{i} of {n} values")
                values = t.numpy()
                if kind == "categorical":
                    column = pd.Series(pd.Categorical.from_codes(
                        values, categories=pd.Index(entry["categories"]),
                        ordered=bool(entry.get("ordered", False)),
                    ), index=var.index)
                else:
                    column = pd.Series(values, index=var.index)
            dtype = entry.get("dtype")
            if kind != "categorical" and isinstance(dtype, str) and dtype != str(column.dtype):
                saved = _saved_dtype(dtype, kind)
                column = column if saved is None else column.astype(saved)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{where}[{i}] (column {name!r}): {err}") from None
        var[name] = column
    return var
