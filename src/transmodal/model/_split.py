"""Seeded train / validation split (consistent across paired modalities) and anchor pairs."""

from __future__ import annotations

import hashlib
import re
import warnings
import zlib
from itertools import combinations

import numpy as np

from .._utils import names_are_numbers, user_stacklevel
from ..data._setup import ModalityData, find_pairs


def validation_masks(
    mods: dict[str, ModalityData], fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Boolean validation mask per modality.

    The split is drawn over pairing keys (``obs_names`` or MuData rows), so the two
    measurements of a paired cell always fall in the same split. A modality that this
    draw leaves with fewer than 2 validation cells (a small modality beside a large one)
    draws its share (``fraction`` of its cells, at least 2) from its own cells: its
    unpaired ones first, then paired ones, whose partners join the validation cells too.
    Returns all-False masks when any modality would still be left with fewer than 2
    validation or training cells (always for a modality of fewer than 4 cells; rarely for
    small modalities whose partners' top-ups leave one too few training cells).
    """
    none = {n: np.zeros(md.n_obs, dtype=bool) for n, md in mods.items()}
    if fraction <= 0:
        return none
    keys = np.unique(np.concatenate([md.pair_keys.astype(str) for md in mods.values()]))
    rng = np.random.default_rng([seed, 7])
    val_keys = keys[rng.permutation(len(keys))[: int(round(fraction * len(keys)))]]
    masks = {n: np.isin(md.pair_keys.astype(str), val_keys) for n, md in mods.items()}
    for name, md in mods.items():
        m = masks[name]
        want = max(2, int(round(fraction * md.n_obs))) - int(m.sum())  # (its own share)
        if m.sum() >= 2 or md.n_obs - int(m.sum()) - want < 2:
            continue
        own = md.pair_keys.astype(str)
        others = np.concatenate(
            [o.pair_keys.astype(str) for n, o in mods.items() if n != name] or [np.array([], str)]
        )
        shared = np.isin(own, others)
        free = np.flatnonzero(~m & ~shared)  # (no other modality's split moves)
        # seeded by the modality's name, not its place in the dict
        rng_own = np.random.default_rng([seed, 7, zlib.crc32(name.encode())])
        if len(free) >= want:
            m[rng_own.choice(free, want, replace=False)] = True
            continue
        m[free] = True  # then paired cells, their partners with them
        paired = rng_own.choice(np.flatnonzero(~m & shared), want - len(free), replace=False)
        m[paired] = True
        for other, o in mods.items():
            if other != name:
                masks[other] |= np.isin(o.pair_keys.astype(str), own[paired])
    for m in masks.values():
        if m.sum() < 2 or (~m).sum() < 2:
            return none
    return masks


def _row_number_pairs(mods: dict[str, ModalityData], a: str, b: str, n: int) -> str | None:
    """The advice for ``n`` cells that ``a`` and ``b`` pair only through default row-number
    names (``None`` when either holds real names: the cells' own ``obs_names``, also in a MuData,
    whose pairing keys are its rows)."""
    if not (names_are_numbers(mods[a].obs_names) and names_are_numbers(mods[b].obs_names)):
        return None
    return (
        f"{a!r} and {b!r} pair {n} cells only by names that are numbers, as AnnData's "
        "default row numbers '0', '1', ... (AnnData(matrix)): if equal numbers are not the "
        "same cells, give each modality its own names (e.g. adata.obs_names = 'atac_' + "
        "adata.obs_names), else set the cell barcodes as obs_names"
    )


def _pairs_across_batches(
    mods: dict[str, ModalityData], a: str, b: str, ia: np.ndarray, ib: np.ndarray
) -> str | None:
    """The advice where most of the cells ``a`` and ``b`` pair by name (rows ``ia`` /
    ``ib``) lie in differently named batches, of two or more batch names both modalities
    use, and each batch of ``a`` pairs mostly with one batch of ``b``: barcodes that repeat
    across samples, made unique in file order (``obs_names_make_unique``), pair the cells
    of one sample with those of another. ``None`` otherwise (also for batches drawn
    independently in each modality, e.g. sequencing lanes named alike)."""
    ma, mb = mods[a], mods[b]
    if ma.batches is None or mb.batches is None:
        return None
    shared = sorted(set(ma.batch_categories) & set(mb.batch_categories))
    if len(shared) < 2:
        return None

    def codes(md: ModalityData, rows: np.ndarray) -> np.ndarray:  # in shared, -1: none
        index = {c: i for i, c in enumerate(shared)}
        to_shared = np.array([index.get(c, -1) for c in md.batch_categories] + [-1])
        return to_shared[md.batches[rows]]  # (a code -1 reads the trailing -1)

    ca, cb = codes(ma, ia), codes(mb, ib)
    both = (ca >= 0) & (cb >= 0)
    n = int(both.sum())
    if n < 20:
        return None
    table = np.zeros((len(shared), len(shared)), dtype=np.int64)
    np.add.at(table, (ca[both], cb[both]), 1)
    apart = n - int(np.trace(table))
    if apart <= n / 2 or table.max(axis=1).sum() < 0.8 * n:
        return None
    key = ma.spec.batch_key
    return (f"{apart} of the {n} cells that {a!r} and {b!r} pair by name lie in different "
            f"batches (obs[{ma.spec.batch_key!r}] / obs[{mb.spec.batch_key!r}]), each batch "
            "of one with another batch of the other: barcodes that repeat across samples "
            "pair cells of different samples (as obs_names_make_unique() numbers them in "
            "file order); if so, prefix the names with the sample in every modality, "
            f"adata.obs_names = adata.obs[{key!r}].astype(str) + '_' + adata.obs_names")


def _decorated_pairs(mods: dict[str, ModalityData], a: str, b: str) -> str | None:
    """The advice where ``a`` and ``b`` share no cell name but most of the smaller one's
    names match once a converter's decoration is set aside (a sample prefix ``'S1#'``, as
    ArchR writes, and a suffix ``'-1'`` / ``'_1'`` / ``'.1'``; else all but the barcode, as
    Seurat's merge prefixes ``'pbmc_'``): the same cells, named differently (in a MuData,
    the modalities' own names: its rows pair them); ``None`` otherwise."""
    ma, mb = mods[a], mods[b]
    return decorated_names_advice(a, b, ma.obs_names, mb.obs_names,
                                  mudata=ma.pair_keys is not ma.obs_names)


def decorated_names_advice(a: str, b: str, names_a, names_b, *, mudata: bool = False
                           ) -> str | None:
    """:func:`_decorated_pairs` of the cell names ``names_a`` / ``names_b`` of modalities
    ``a`` and ``b`` (``mudata``: named in a MuData, to be built anew once renamed)."""
    import pandas as pd

    for what, steps, renaming in _DECORATIONS:
        na = pd.Index(np.asarray(names_a, dtype=str))
        nb = pd.Index(np.asarray(names_b, dtype=str))
        for step in steps:
            na, nb = (x.str.replace(step, "", regex=True) if isinstance(step, str)
                      else x.str.extract(step.pattern, expand=False) for x in (na, nb))
        if na.hasnans or nb.hasnans or not (na.is_unique and nb.is_unique):
            continue
        n = int(na.isin(nb).sum())
        if n < 0.5 * min(len(na), len(nb)) or not n:
            continue
        i = int(np.flatnonzero(na.isin(nb))[0])
        j = int(nb.get_loc(na[i]))
        return (f"{a!r} and {b!r} share no cell name, but {n} of their cells match once "
                f"{what} is set aside, e.g. {names_a[i]!r} and {names_b[j]!r}: if these are "
                f"the same cells, give them the same obs_names, e.g. in both {renaming}"
                + (" (for a MuData, in mdata[name] of both, then build it anew: mdata = "
                   "mudata.MuData(dict(mdata.mod)))" if mudata else ""))
    return None


# the decorations _decorated_pairs sets aside, in turn: (what, the replacements (a str: a
# pattern removed) or the part kept (a compiled pattern), the renaming a user runs)
_DECORATIONS = (
    ("a sample prefix ('S#') or a suffix ('-1', '_1')", (r"^.*#", r"[-_.]\d+$"),
     r"adata.obs_names = adata.obs_names.str.replace(r'^.*#', '', regex=True)"
     r".str.replace(r'[-_.]\d+$', '', regex=True)"),
    # any other prefix or suffix around a barcode (Seurat's merge: 'pbmc_AAAC...-1',
    # anndata.concat's 'AAAC...-1_s1')
    ("all but the barcode (a prefix as 'pbmc_', a suffix as '-1' or '-1_s1')",
     (re.compile(r"([ACGTN]{12,})"),),
     r"adata.obs_names = adata.obs_names.str.extract(r'([ACGTN]{12,})', expand=False)"),
)


def choose_anchors(
    mods: dict[str, ModalityData],
    train_masks: dict[str, np.ndarray],
    fraction: float,
    seed: int,
    *,
    warn: bool = True,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seeded choice of ``fraction`` of the paired training cells of every modality pair
    (rounded, at least one pair where the two modalities share a training cell). ``warn``:
    warn about pairs of cells named by row numbers (once, for the model's own anchors).

    Returns ``{"a|b": (rows_a, rows_b)}`` for pairs of modalities that share cells.

    Raises
    ------
    ValueError
        If ``fraction > 0`` but no two modalities share any cell.
    """
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if fraction <= 0:
        return out
    rng = np.random.default_rng([seed, 11])
    found = [(a, b, *find_pairs(mods[a], mods[b])) for a, b in combinations(mods, 2)]
    if not any(len(ia) for _, _, ia, _ in found):
        decorated = [d for a, b, _, _ in found if (d := _decorated_pairs(mods, a, b))]
        raise ValueError(
            f"anchor_fraction={fraction} needs paired cells, but no two of the modalities "
            f"{list(mods)} share a cell: cells are paired by equal obs_names (for a MuData, "
            "by its per-modality obsmap). Give paired cells the same obs_names, or set "
            "anchor_fraction=0." + "".join(f" ({d})" for d in decorated[:1])
        )
    for a, b, ia, ib in found:
        keep = train_masks[a][ia] & train_masks[b][ib]
        ia, ib = ia[keep], ib[keep]
        if not len(ia):
            continue
        n = max(1, int(round(fraction * len(ia))))  # a fraction > 0 asks for anchors
        sel = np.sort(rng.choice(len(ia), n, replace=False))
        out[f"{a}|{b}"] = (ia[sel], ib[sel])
        advice = _row_number_pairs(mods, a, b, len(ia)) if warn else None
        if advice:
            warnings.warn(
                f"anchor pairs from row numbers: {advice}", UserWarning,
                stacklevel=user_stacklevel(),
            )
        advice = _pairs_across_batches(mods, a, b, ia, ib) if warn else None
        if advice:
            warnings.warn(f"anchor pairs across batches: {advice}", UserWarning,
                          stacklevel=user_stacklevel())
        smaller = min(int(train_masks[a].sum()), int(train_masks[b].sum()))
        if warn and len(ia) < FEW_SHARED * smaller and _barcodes(mods[a].obs_names[ia]):
            # (barcodes of two runs meet by chance; other names shared by few cells are
            # taken for the partly paired cells they may well be)
            warnings.warn(
                f"anchor pairs from few shared names: {a!r} and {b!r} share {len(ia)} of "
                f"{smaller} training cells' names. Barcodes of separate runs can be equal by "
                "chance: if these cells are not the same cells, make the names unique (e.g. "
                "prefix each modality's obs_names with its sample) or set anchor_fraction=0",
                UserWarning, stacklevel=user_stacklevel(),
            )
    return out


# below this share of the smaller modality's training cells, equal names may be chance
FEW_SHARED = 0.05


def _barcodes(names: np.ndarray) -> bool:
    """Whether most ``names`` are cell barcodes (12 or more of A, C, G, T, N first, as 10x
    and others write them), which separate runs share by chance."""
    import pandas as pd

    return bool(len(names)) and float(
        pd.Index(np.asarray(names, dtype=str)).str.match(r"^[ACGTN]{12,}").mean()) > 0.5


def warn_unused_pairs(mods: dict[str, ModalityData], train_masks: dict[str, np.ndarray]) -> None:
    """Warn that modalities share training cells whose pairs no loss uses (for a model
    whose ``anchor_fraction`` was left at its default, 0)."""
    shared, positional, few, decorated, apart = [], [], [], [], []
    for a, b in combinations(mods, 2):
        ia, ib = find_pairs(mods[a], mods[b])
        n = int(np.count_nonzero(train_masks[a][ia] & train_masks[b][ib]))
        if not len(ia) and (advice := _decorated_pairs(mods, a, b)):
            decorated.append(advice)
        if advice := _pairs_across_batches(mods, a, b, ia, ib):
            apart.append(advice)
        advice = _row_number_pairs(mods, a, b, len(ia)) if n else None
        smaller = min(int(train_masks[a].sum()), int(train_masks[b].sum()))
        if advice:
            positional.append(advice)
        elif n and n < FEW_SHARED * smaller:  # (barcodes of two runs meet by chance)
            few.append(f"{a!r} and {b!r} share {n} of {smaller} training cells' names")
        elif n:
            shared.append(f"{a!r} and {b!r} share {n} training cells")
    if apart:  # (before the advice to use the pairs below)
        warnings.warn(f"cells paired across batches: {'; '.join(apart)}", UserWarning,
                      stacklevel=user_stacklevel())
    if decorated:  # (pairs that training would not know of)
        warnings.warn(
            f"cells named differently: {'; '.join(decorated)}; then anchor_fraction=1.0 uses "
            "them as pairs. Until then the modalities are aligned as unpaired",
            UserWarning, stacklevel=user_stacklevel(),
        )
    if few:
        warnings.warn(
            f"few shared cell names: {'; '.join(few)}. Barcodes of separate runs can be equal "
            "by chance: if these cells are not the same cells, make the names unique (e.g. "
            "prefix each modality's obs_names with its sample); if they are, "
            "anchor_fraction=1.0 uses them as pairs. No loss uses them now "
            "(anchor_fraction=0); cells of equal names are kept in the same train / "
            "validation split",
            UserWarning, stacklevel=user_stacklevel(),
        )
    if positional:  # not advised as pairs to use: likely unrelated cells
        warnings.warn(
            f"cell names that are row numbers: {'; '.join(positional)}. Cells of equal names "
            "are kept in the same train / validation split; no loss uses them as pairs "
            "(anchor_fraction=0)",
            UserWarning, stacklevel=user_stacklevel(),
        )
    if shared:
        warnings.warn(
            f"known pairs unused: {'; '.join(shared)} (equal obs_names, or a MuData's "
            "obsmap), but anchor_fraction defaults to 0, so training uses none of their pairs "
            "and aligns the modalities as if they were unpaired (the paper's setting). Pass "
            "anchor_fraction=1.0 to use every pair (or a fraction of them), or "
            "anchor_fraction=0 to keep this and silence the warning (in a config file: "
            "model: {anchor_fraction: 1.0})",
            UserWarning, stacklevel=user_stacklevel(),
        )


def names_digest(names: np.ndarray) -> str:
    """Stable digest of a list of names (to recognise the training data on load)."""
    h = hashlib.sha1()
    for n in names:
        h.update(str(n).encode())
        h.update(b"\0")
    return h.hexdigest()
