"""Gene-set over-representation of a marker list (hypergeometric test), gene sets from GMT files.

The paper used GO terms through g:Profiler, an online service; here the gene sets are given
offline, as a GMT file (e.g. from MSigDB or g:Profiler's download page) or a dict.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from ._stats import benjamini_hochberg, overlap_pvalue


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read gene sets from a GMT file.

    Each line is ``name <TAB> description <TAB> gene <TAB> gene ...``; blank lines are
    skipped, empty gene fields ignored, and duplicated genes within a set kept once.

    Parameters
    ----------
    path
        The GMT file.

    Returns
    -------
    ``{set name: [genes]}`` in file order.
    """
    sets: dict[str, list[str]] = {}
    with open(path, encoding="utf-8-sig") as fh:  # a byte-order mark is not a name
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise ValueError(
                    f"{path}:{lineno}: a GMT line needs 'name<TAB>description<TAB>genes...', "
                    f"got {line[:60]!r}"
                )
            name = fields[0].strip()
            if not name:
                raise ValueError(f"{path}:{lineno}: empty gene-set name")
            if name in sets:
                raise ValueError(f"{path}:{lineno}: gene set {name!r} appears twice")
            sets[name] = list(dict.fromkeys(g.strip() for g in fields[2:] if g.strip()))
    return sets


def enrichment(
    markers: Iterable[str],
    gene_sets: Mapping[str, Iterable[str]] | str | os.PathLike,
    *,
    universe: Iterable[str] | None = None,
    min_size: int = 1,
    max_size: int | None = None,
) -> pd.DataFrame:
    """Over-representation of gene sets among markers: one-sided hypergeometric test, BH-adjusted.

    For each set ``S``, with universe ``U`` and markers ``M`` (both restricted to ``U``),
    the p-value is ``P(X >= |M & S|)`` for ``X ~ Hypergeometric(|U|, |S & U|, |M|)``.
    Genes are matched by exact (case-sensitive) name.

    Parameters
    ----------
    markers
        Gene names (e.g. ``top_markers(de)["up"]``).
    gene_sets
        ``{name: genes}`` or the path of a GMT file (:func:`read_gmt`).
    universe
        All genes that could have been markers, e.g. the tested features
        (``adata.var_names``) -- recommended.  Default: every gene in any set (the
        annotated genes); markers outside the universe are dropped.
    min_size, max_size
        Test only sets with that many genes in the universe (bounds included).

    Returns
    -------
    DataFrame sorted by p-value with columns ``set``, ``size`` (genes of the set in the
    universe), ``overlap``, ``expected`` (overlap expected by chance), ``fold_enrichment``,
    ``pval``, ``pval_adj`` (Benjamini-Hochberg over the tested sets) and ``genes`` (the
    overlapping markers, in marker order).  ``attrs`` holds ``n_markers`` (in the
    universe), ``n_dropped`` (markers outside it) and ``n_universe``.
    """
    if isinstance(markers, str):
        raise ValueError("markers must be a list of gene names, not one string")
    if isinstance(markers, Mapping):
        raise ValueError("markers must be a list of gene names; pass e.g. top_markers(de)['up']")
    if isinstance(gene_sets, (str, os.PathLike)):
        gene_sets = read_gmt(gene_sets)
    if not isinstance(gene_sets, Mapping) or not gene_sets:
        raise ValueError("gene_sets must be a non-empty {name: genes} mapping or a GMT path")
    for name, genes in gene_sets.items():
        if isinstance(genes, (str, bytes)):  # set("G1") would be {"G", "1"}
            raise ValueError(
                f"gene set {name!r} must be a collection of gene names, got the string "
                f"{genes!r}; wrap it: [{genes!r}]"
            )
    sets = {name: set(map(str, genes)) for name, genes in gene_sets.items()}
    if universe is None:
        universe_set = set().union(*sets.values())
    else:
        universe_set = set(map(str, universe))
    if not universe_set:
        raise ValueError("the universe is empty")
    unique = list(dict.fromkeys(map(str, markers)))
    hits = [g for g in unique if g in universe_set]
    if not hits:
        raise ValueError("none of the markers is in the universe; check the gene names")
    n_u, n_m = len(universe_set), len(hits)

    rows = []
    for name, genes in sets.items():
        members = genes & universe_set
        size = len(members)
        if size < min_size or (max_size is not None and size > max_size):
            continue
        shared = [g for g in hits if g in members]
        expected = n_m * size / n_u
        rows.append(
            {
                "set": name,
                "size": size,
                "overlap": len(shared),
                "expected": expected,
                "fold_enrichment": len(shared) / expected if expected else np.nan,
                "pval": overlap_pvalue(len(shared), n_u, size, n_m),
                "genes": shared,
            }
        )
    columns = ["set", "size", "overlap", "expected", "fold_enrichment", "pval", "pval_adj", "genes"]
    out = pd.DataFrame(rows, columns=[c for c in columns if c != "pval_adj"])
    out.insert(6, "pval_adj", benjamini_hochberg(out["pval"].to_numpy(float)))
    out = out.sort_values(["pval", "overlap"], ascending=[True, False], kind="stable")
    out = out.reset_index(drop=True)
    out.attrs.update(n_markers=n_m, n_universe=n_u, n_dropped=len(unique) - n_m)
    return out
