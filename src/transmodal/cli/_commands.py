"""Bodies of the ``transmodal`` subcommands (argparse wiring lives in ``_main``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._utils import (
    ENSEMBLE_CONFIG,
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    TRAIN_SIDE_FILES,
    atomic_directory,
    atomic_file,
    check_output_directory,
    check_writable_parent,
    is_global_zero,
    names_are_numbers,
    jsonable,
    no_mudata_notice,
)
from ._config import ConfigError, dump_config, h5mu_modalities, load_config

OBSM_KEY = "X_transmodal"


# ----------------------------------------------------------------------------- helpers
def _write_text(text: str, path: Path) -> None:
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(text)


def _check_output(path: Path, *, overwrite: bool, suffix: str) -> None:
    """Check an output file path (before any data are read): a file ending in ``suffix``
    (the format written), new unless ``overwrite``."""
    if path.is_dir():
        raise IsADirectoryError(f"output {path} is a directory, expected a file path")
    if path.suffix.lower() != suffix:
        raise ValueError(
            f"--out {path}: the output is written as {suffix} - name it "
            f"{path.with_suffix(suffix).name if path.suffix else path.name + suffix}"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(f"output {path} exists; pass --overwrite to replace it")
    check_writable_parent(path)


def _check_not_an_input(out: Path, inputs: Mapping[str, Path], option: str = "--data") -> None:
    """Refuse an output file that is one of the input files (``--overwrite`` replaces an
    earlier output, never the data being read)."""
    if not out.exists():
        return
    for name, path in inputs.items():
        if path.exists() and os.path.samefile(out, path):
            raise ValueError(
                f"--out {out} is the file of {option} {name}; write the output elsewhere "
                "(--overwrite replaces an earlier output, not the input)"
            )


def _read(path: Path, where: str, fmt: str, backed: bool = False):
    """Read ``path`` as ``fmt`` (".h5ad" or ".h5mu"; ``backed``: an .h5ad opened read-only
    when its matrices are stored by rows); any failure of the reader (not HDF5, an .h5mu
    given as .h5ad or the reverse, a damaged file) is one ValueError naming ``where`` and
    the file."""
    if not path.exists():
        raise FileNotFoundError(f"{where}: file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{where}: {path} is a directory, expected a {fmt} file")
    if fmt == ".h5ad" and (other := _file_kind_hint(path, where)):  # (opened backed, a
        # MuData reads as an AnnData without X)
        raise ValueError(f"{where}: cannot read {path} as .h5ad:{other}")
    with warnings.catch_warnings():  # e.g. "not created by muon/mudata": the error says more
        warnings.simplefilter("ignore")
        try:
            if fmt == ".h5mu":
                import mudata as md

                return md.read_h5mu(path)
            import anndata as ad

            if backed and _rows_readable(path):
                return ad.read_h5ad(path, backed="r")
            return ad.read_h5ad(path)
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - the readers raise many kinds
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise ValueError(f"{where}: cannot read {path} as {fmt}: {reason}") from None


def _read_once(files: dict[Path, Any], path: Path, where: str, fmt: str,
               backed: bool = False):
    """:func:`_read`, each file once (``files``: those read, by resolved path): a file
    named for two modalities is one object, as the same AnnData given twice in Python."""
    key = path.resolve()
    if key not in files:
        files[key] = _read(path, where, fmt, backed=backed)
    return files[key]


def _file_kind_hint(path: Path, where: str) -> str:
    """What an HDF5 file given as an .h5ad holds, when it is a known other kind (``""``
    otherwise): a 10x Genomics matrix (cellranger's ``filtered_feature_bc_matrix.h5``), or
    a MuData."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            tenx = "matrix" in f and "features" in f["matrix"]
            mudata = "mod" in f
    except Exception:  # noqa: BLE001 - not HDF5: the reader's reason says enough
        return ""
    if tenx:
        return (" a 10x Genomics matrix, as cellranger writes it (read it with "
                "scanpy.read_10x_h5(path, gex_only=False), split its feature types into "
                "modalities with mudata.MuData(adata) and write that as .h5mu, given as "
                "'mudata:' in a config or --data NAME=FILE.h5mu)")
    if mudata and where.startswith("data "):
        return " a MuData (give it as 'mudata:' in the config)"
    if mudata:
        return " a MuData (name the file .h5mu, --data NAME=FILE.h5mu)"
    return ""


def _rows_readable(path: Path) -> bool:
    """Whether the matrices of an .h5ad (``X`` and its layers) can be read by rows from
    the file: dense, or sparse by rows (CSR)."""
    import h5py

    with h5py.File(path, "r") as f:
        mats = [f["X"]] if "X" in f else []
        if "layers" in f:
            mats += [f["layers"][k] for k in f["layers"]]
        return all(
            isinstance(m, h5py.Dataset) or m.attrs.get("encoding-type") == "csr_matrix"
            for m in mats
        )


def _subset_mask(obs, obs_key: str, value: Any, where: str):
    if obs_key not in obs.columns:
        raise ValueError(
            f"{where}: subset obs_key {obs_key!r} not found in obs; available columns: "
            f"{list(obs.columns)}"
        )
    values = value if isinstance(value, list) else [value]
    col = obs[obs_key]
    mask = col.isin(values).to_numpy() | col.astype(str).isin([str(v) for v in values]).to_numpy()
    if not mask.any():
        present = sorted({str(v) for v in col.dropna().unique()})[:10]
        raise ValueError(
            f"{where}: subset: no cell has obs[{obs_key!r}] == {value!r} (values present: {present})"
        )
    return mask


# ------------------------------------------------------------------------------- train
def cmd_train(
    config: str, out: str | None = None, overwrite: bool = False, resume: bool = False,
    imports: Sequence[str] = (),
) -> int:
    """``transmodal train``: validate config, read data, train (or, ``resume``, go on from
    the last checkpoint of ``train: checkpoint_dir``), save the model + history.
    ``imports``: the modules of ``--import`` (imported already), recorded in
    ``run_config.yaml`` beside the config's own."""
    # (paths: "~" expanded, as the shell does not in --opt=~/x)
    cfg = load_config(os.path.expanduser(config))  # everything checked before data are read
    for name in imports:  # (files by absolute path, as the config's own)
        name = str(Path(name).expanduser().resolve()) if name.endswith(".py") else name
        if name not in cfg.imports:
            cfg.imports.append(name)
    out_dir = Path(out).expanduser() if out is not None else cfg.out
    if out_dir is None:
        raise ConfigError(
            f"{cfg.path}: no output directory: set 'out' in the config or pass --out DIR"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"output {out_dir} exists and is not a directory; give a directory")
    if out_dir.exists() and not overwrite:
        finished = (" (the output of a finished run? --resume goes on only where a run stopped "
                    "before saving its model)" if resume else "")
        raise FileExistsError(
            f"output directory {out_dir} exists{finished}; pass --overwrite to replace it"
        )

    from ..model import CrossModalAE
    from ..model._priors import construction_bars

    # whatever kind of run wrote an existing output directory, it is replaced only if it
    # holds nothing but train's outputs (checked before training; member dirs are models)
    outputs = (MODEL_CONFIG, MODEL_WEIGHTS, ENSEMBLE_CONFIG, *TRAIN_SIDE_FILES)
    check_output_directory(out_dir, overwrite=True, names=outputs)
    if cfg.reference is not None:  # (it would be replaced, or written into)
        for what, where in (("the output directory", out_dir),
                            ("train: checkpoint_dir", cfg.train.get("checkpoint_dir"))):
            if where is not None and _nested(Path(where), cfg.reference["path"]):
                raise ConfigError(
                    f"{cfg.path}: {what} {where} is, holds or lies in the reference model's "
                    f"directory {cfg.reference['path']}; give the new model another one"
                )
    checkpoint = _checkpoint_to_resume(cfg, out_dir, resume)
    # (a resumed run goes on from its checkpoint, which holds the reference's networks)
    reference = (CrossModalAE.load(cfg.reference["path"])
                 if cfg.reference is not None and checkpoint is None else None)

    if cfg.data is not None:
        files: dict[Path, Any] = {}
        data: Any = {n: _read_once(files, Path(p), f"data {n!r}", ".h5ad")
                     for n, p in cfg.data.items()}
        if cfg.subset is not None:
            subsets: dict[int, Any] = {}
            for name, adata in data.items():
                if id(adata) not in subsets:
                    mask = _subset_mask(adata.obs, cfg.subset["obs_key"], cfg.subset["value"],
                                        f"modality {name!r}")
                    subsets[id(adata)] = adata[mask].copy()
                data[name] = subsets[id(adata)]
    else:
        data = _read(cfg.mudata, "mudata", ".h5mu")
        missing = [n for n in cfg.modalities if n not in data.mod]
        if missing:
            raise ConfigError(
                f"{cfg.path}: modalities: modality {missing[0]!r} is not in {cfg.mudata} "
                f"(it holds {', '.join(data.mod)})"
            )
        used = _modalities_used(cfg, data)
        if cfg.subset is not None:
            key, value = cfg.subset["obs_key"], cfg.subset["value"]
            if key in data.obs.columns:  # a column of the MuData's own obs
                unset = int(data.obs[key].isna().sum())
                if unset:  # (e.g. "rna:split": NaN for the cells of other modalities only)
                    warnings.warn(
                        f"{cfg.mudata}: subset: the MuData's obs[{key!r}] has no value for "
                        f"{unset} of its {data.n_obs} cells (cells measured in other "
                        "modalities only?), which are left out; a column of each modality's "
                        "obs (obs_key without a modality prefix) selects each modality's "
                        "cells by its own", UserWarning, stacklevel=2,
                    )
                mask = _subset_mask(data.obs, key, value, str(cfg.mudata))
                with no_mudata_notice():
                    data = data[mask].copy()
            else:  # each modality by its own obs column, as with data:
                for name in used:
                    mod = data.mod[name]
                    where = f"{cfg.mudata}: modality {name!r} (the MuData's obs has no {key!r})"
                    data.mod[name] = mod[_subset_mask(mod.obs, key, value, where)].copy()
                with no_mudata_notice():
                    data.update()

    if is_global_zero(launcher=True):  # (once, not by each process of a DDP run)
        print(f"transmodal: training on {_describe(data, _modalities_used(cfg, data))}",
              file=sys.stderr)
    train_kwargs = dict(cfg.train)
    agreement = None

    def build(**seed: int) -> CrossModalAE:
        """The config's new model (``seed``: a run's, else the model section's)."""
        if cfg.reference is None:
            return CrossModalAE(data, cfg.modalities, **cfg.model, **seed)
        return CrossModalAE.from_reference(reference, data, cfg.modalities,
                                           anchor=cfg.reference["anchor"], **cfg.model, **seed)
    if cfg.runs is None:
        if checkpoint is not None:
            from ..workflows import resume_training

            if is_global_zero(launcher=True):
                print(f"transmodal: going on from the checkpoint in {checkpoint}",
                      file=sys.stderr)
            # (the schedule's epochs are the stopped run's: resume_training sets what is
            # left of them)
            kept = {k: v for k, v in train_kwargs.items()
                    if k not in ("checkpoint_dir", "pretrain_epochs", "adv_warmup_epochs")}
            result: Any = resume_training(checkpoint, data, **kept)
        else:
            with construction_bars(train_kwargs.get("progress_bar", True)):
                result = build()
            result.train(**train_kwargs)
        hist = result.history
        done = f"trained {result.train_params_.get('epochs_run', '?')} epochs"
    else:
        from ..workflows import train_consensus, train_ensemble

        seeds, k = cfg.runs["seeds"], cfg.runs["k"]

        def build_seed(seed: int) -> CrossModalAE:
            return build(seed=seed)

        if cfg.runs["combine"] == "consensus":
            run = train_consensus(build_seed, seeds, k=k, **train_kwargs)
            result, hist, agreement = run.model, run.model.history, run.agreement
            done = f"trained seeds {seeds}, kept seed {run.seed} " + (
                "(the runs' medoid)" if len(seeds) > 2 else "(the first: two runs have no medoid)"
            )
        else:
            result = train_ensemble(build_seed, seeds, k=k, **train_kwargs)
            hist = result.history  # indexed by (seed, epoch)
            done = f"trained seeds {seeds} as an ensemble"
    if not is_global_zero():  # a multi-process run: rank 0 alone writes the directory
        return 0
    # model and side files replace an earlier output directory together, or not at all
    with atomic_directory(out_dir, overwrite=overwrite, replaceable=outputs) as tmp:
        result.save(tmp, overwrite=True)  # tmp is empty
        if hist is not None:
            (tmp / "history.csv").write_text(hist.to_csv())
        if agreement is not None:
            (tmp / "agreement.csv").write_text(agreement.to_csv(index=False))
        # the directory the model was written to (--out overrides the config's out)
        run_config = {**cfg.to_dict(), "out": str(out_dir.resolve())}
        (tmp / "run_config.yaml").write_text(dump_config(run_config))
    print(f"transmodal: {done}; model saved to {out_dir}", file=sys.stderr)
    return 0


def _modalities_used(cfg: Any, data: Any) -> dict[str, Any]:
    """The specs of the modalities the config's model has: with a reference, those of its
    modalities that ``data`` (a dict or a MuData) hold first."""
    held = data.mod if hasattr(data, "mod") else data
    ref = {} if cfg.reference is None else cfg.reference["specs"]
    used = {n: s for n, s in ref.items() if n in held}  # (as the model takes them)
    return {**used, **{n: s for n, s in cfg.modalities.items() if n not in used}}


def _describe(data, modalities: Mapping[str, Any]) -> str:
    """``rna 283 x 914, prot 283 x 30``: each modality's cells x features as the model reads
    them (an ``obsm_key`` modality: that matrix's shape, an image's ``c x H x W``)."""
    mods = data.mod if hasattr(data, "mod") else data

    def shape(name: str) -> tuple[int, ...]:
        key = modalities[name].obsm_key
        if key is not None and key in mods[name].obsm:
            return tuple(mods[name].obsm[key].shape)
        return (mods[name].n_obs, mods[name].n_vars)

    return ", ".join(f"{n} {' x '.join(map(str, shape(n)))}" for n in modalities)


# ---------------------------------------------------------------- model + data loading
def _is_mudata(path: Path) -> bool:
    return path.suffix.lower() == ".h5mu"


def _mudata_modalities(path: Path, names: Sequence[str], option: str) -> list[str]:
    """The modalities among ``names`` that the .h5mu file ``path`` holds (read from the
    file's index alone, not its matrices)."""
    if not path.is_file():
        raise FileNotFoundError(f"{option}: file not found: {path}")
    held = h5mu_modalities(path, option)
    found = [n for n in names if n in held]
    if not found:
        raise ValueError(
            f"{option}: {path} holds the modalities {', '.join(held) or '(none)'}, none of the "
            f"model's ({', '.join(names)})"
        )
    return found


def parse_data_args(
    items: Sequence[str] | None, names: Sequence[str], option: str = "--data"
) -> dict[str, Path]:
    """``["rna=a.h5ad", "atac=b.h5ad"]`` -> ``{"rna": Path("a.h5ad"), ...}``.

    ``NAME=PATH.h5mu`` takes modality ``NAME`` of a MuData file; a bare ``PATH.h5mu`` every
    modality among ``names`` (the model's) that the file holds.
    """
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        whole = Path(os.path.expanduser(item.strip()))
        # an "=" in a folder name (a modality name holds no "/")
        if sep and _is_mudata(whole) and (whole.is_file() or "/" in name or os.sep in name):
            name, sep = item.strip(), ""
        if not sep and _is_mudata(Path(name)):
            mudata = Path(os.path.expanduser(name))
            pairs = [(n, mudata) for n in _mudata_modalities(mudata, names, option)]
        elif not sep or not name or not path:
            raise ValueError(
                f"{option} {item!r}: expected NAME=PATH.h5ad (e.g. rna=rna.h5ad), "
                "NAME=PATH.h5mu (modality NAME of a MuData file) or PATH.h5mu"
            )
        else:
            pairs = [(name, Path(os.path.expanduser(path)))]
        for name, path in pairs:
            if name in out:
                raise ValueError(f"{option}: modality {name!r} given twice")
            out[name] = path
    return out


def _read_inputs(
    paths: Mapping[str, Path], option: str = "--data", backed: bool = False
) -> dict[str, Any]:
    """Read each modality's cells: an .h5ad file (``backed``: opened read-only, unless
    its matrix is stored by columns, which cannot be read by rows), or that modality of an
    .h5mu file (each file read once, also an .h5ad named for two modalities)."""
    files: dict[Path, Any] = {}
    out: dict[str, Any] = {}
    for name, path in paths.items():
        where = f"{option} {name}"
        if not _is_mudata(path):
            out[name] = _read_once(files, path, where, ".h5ad", backed=backed)
            continue
        mods = _read_once(files, path, where, ".h5mu").mod
        if name not in mods:
            raise ValueError(
                f"{where}: {path} holds no modality {name!r} (it has {', '.join(mods) or 'none'})"
            )
        out[name] = mods[name]
    return out


def _checkpoint_to_resume(cfg: Any, out_dir: Path, resume: bool) -> Path | None:
    """The config's ``train: checkpoint_dir`` if ``resume`` and it holds a checkpoint;
    checked before any data are read: without ``resume`` a checkpoint there is refused (the
    first new one would replace it), and it may not be the output directory."""
    ckpt = cfg.train.get("checkpoint_dir")
    if ckpt is None:
        if resume:
            raise ConfigError(f"{cfg.path}: --resume needs train: checkpoint_dir in the config")
        return None
    ckpt = Path(ckpt)
    if _nested(ckpt, out_dir):
        raise ConfigError(
            f"{cfg.path}: train: checkpoint_dir {ckpt} is, holds or lies in the output "
            f"directory {out_dir}; give the checkpoints a directory of their own"
        )
    check_output_directory(ckpt, overwrite=True, names=(MODEL_CONFIG, MODEL_WEIGHTS))
    held = (ckpt / MODEL_CONFIG).is_file()
    if held and not resume:
        raise ConfigError(
            f"{cfg.path}: train: checkpoint_dir {ckpt} holds a checkpoint of an earlier run; "
            "pass --resume to go on from it, or remove it to start anew"
        )
    if held:
        _check_resumed_settings(cfg, ckpt)
    return ckpt if held else None


def _nested(a: Path, b: Path) -> bool:
    """Whether directories ``a`` and ``b`` are one, or one lies in the other."""
    a, b = Path(os.path.abspath(a)), Path(os.path.abspath(b))
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _reference_problem(cfg: Any, ckpt: Path, saved: Mapping[str, Any]) -> str | None:
    """What differs if the checkpoint's anchor encoder (frozen) is not the config's
    reference model's (a run on another reference), else ``None``."""
    from safetensors import safe_open

    from ..model._checks import check_prior

    try:
        anchor = check_prior((saved.get("init_params") or {}).get("prior", "learned"),
                             list(saved.get("modalities") or {}))
    except ValueError:
        anchor = None
    if anchor is None:
        return f"no reference (checkpoint: prior {saved.get('init_params', {}).get('prior')!r})"
    if (saved.get("train_params") or {}).get("pretrain_epochs"):
        return None  # (its anchor was trained again, as warned: no longer the reference's)
    prefix = f"module.encoders.{anchor}."
    with safe_open(str(ckpt / MODEL_WEIGHTS), "pt") as mine, \
            safe_open(str(cfg.reference["path"] / MODEL_WEIGHTS), "pt") as theirs:
        keys = sorted(k for k in mine.keys() if k.startswith(prefix))
        same = bool(keys) and keys == sorted(k for k in theirs.keys() if k.startswith(prefix))
        same = same and all(mine.get_tensor(k).equal(theirs.get_tensor(k)) for k in keys)
    if same:
        return None
    return (f"reference {cfg.reference['path']} (the checkpoint's anchor {anchor!r} holds "
            "other networks: built on another reference?)")


def _check_resumed_settings(cfg: Any, ckpt: Path) -> None:
    """``ConfigError`` unless the checkpoint in ``ckpt`` was built with the config's
    ``model:`` and ``modalities:`` settings: another run's checkpoint (the tasks of a job
    array sharing a checkpoint_dir) would otherwise be trained on, and saved, under this
    config's name."""
    from ..data import Modality
    from ..model._io import read_config

    saved = read_config(ckpt)
    init, mods = saved.get("init_params") or {}, saved.get("modalities") or {}
    given = cfg.model_params  # (as the model saves them, defaults included)
    differ = [
        f"model: {key} {given[key]!r} (checkpoint: {value!r})"
        for key, value in init.items() if key in given and given[key] != value
    ]
    # (with a reference: its modalities in the data first; in a MuData, those it held)
    expected = _modalities_used(cfg, cfg.data if cfg.data is not None else mods)
    if list(mods) != list(expected):
        differ.append(f"modalities {list(expected)} (checkpoint: {list(mods)})")
    else:
        for name, spec in expected.items():
            mine = jsonable(spec.to_dict())
            try:
                theirs = jsonable(Modality.from_dict(mods[name], name=name).to_dict())
            except (TypeError, ValueError):
                theirs = mods[name]
            differ += [
                f"modalities: {name}: {key} {mine.get(key)!r} (checkpoint: {theirs.get(key)!r})"
                for key in sorted(set(mine) | set(theirs)) if mine.get(key) != theirs.get(key)
            ]
    if cfg.reference is not None and not differ:
        problem = _reference_problem(cfg, ckpt, saved)
        if problem is not None:
            differ.append(problem)
    if differ:
        raise ConfigError(
            f"{cfg.path}: --resume: the checkpoint in {ckpt} was built with other settings "
            f"than this config's ({'; '.join(differ[:3])}): another run's checkpoint? Give "
            "each run a checkpoint_dir of its own"
        )


def _is_ensemble(model_dir: Path) -> bool:
    return (model_dir / ENSEMBLE_CONFIG).is_file()


def _model_modalities(model_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """Modality names and config of a saved model (of an ensemble: its first member's)."""
    from ..model._ensemble import read_manifest
    from ..model._io import read_config

    config = read_config(
        model_dir / read_manifest(model_dir)[0][0] if _is_ensemble(model_dir) else model_dir
    )
    return list(config["modalities"]), config


def _check_data_args(
    data_paths: dict[str, Path],
    names: list[str],
    model_dir: Path,
    needed: Sequence[str] | None = None,
    option: str = "--data",
) -> None:
    """Check ``--data`` (or ``option``): files exist, modalities are the model's, ``needed``
    ones (default: every modality) are given."""
    needed = names if needed is None else needed
    missing = [n for n in needed if n not in data_paths]
    if missing:
        which = "every modality it has" if needed == names else "the modalities used"
        raise ValueError(
            f"{option}: the model in {model_dir} needs data for {which} "
            f"({', '.join(needed)}); missing: {', '.join(missing)} (add {option} NAME=PATH.h5ad)"
        )
    if not data_paths:
        raise ValueError(f"{option}: give at least one modality's cells ({option} NAME=PATH.h5ad)")
    extra = [n for n in data_paths if n not in names]
    if extra:
        raise ValueError(
            f"{option}: modality {extra[0]!r} is not in the model in {model_dir} "
            f"(it has {', '.join(names)})"
        )
    for name, path in data_paths.items():
        if not path.exists():
            raise FileNotFoundError(f"{option} {name}: file not found: {path}")
        if not path.is_file():
            raise ValueError(f"{option} {name}: {path} is not a file")


def _check_modality(name: str, names: list[str], option: str) -> None:
    if name not in names:
        raise ValueError(f"{option}: modality {name!r} is not in the model (it has {', '.join(names)})")


def _load(
    model_dir: Path, data_paths: dict[str, Path], config: dict[str, Any], option: str = "--data",
    backed: bool = False,
):
    """Read the data and rebuild the model around it; returns ``(model, data)``.

    New cells need no labels: ``load`` treats a missing ``labels_key`` column (or unknown
    labels) as unlabelled, since embedding and translation never read labels. ``backed``:
    .h5ad files are opened read-only and read block by block where their matrices allow.
    """
    from ..model import CrossModalAE, Ensemble

    data = _read_inputs(data_paths, option, backed=backed)
    # the matrices are checked again (per modality used) when embedding / translating
    cls = Ensemble if _is_ensemble(model_dir) else CrossModalAE
    with warnings.catch_warnings():  # no training here: that saved pairs are dropped is moot
        warnings.filterwarnings("ignore", message="the data given to load", category=UserWarning)
        return cls.load(model_dir, data, check_data=False), data


# ------------------------------------------------------------------------------- embed
def cmd_embed(
    model: str,
    data: Sequence[str],
    out: str,
    modality: str | None = None,
    key: str = OBSM_KEY,
    overwrite: bool = False,
) -> int:
    """``transmodal embed``: write the inputs with ``.obsm[key]`` = the shared latent."""
    if not isinstance(key, str) or not key.strip() or "/" in key:
        raise ValueError(f"--key {key!r}: give a non-empty obsm key without '/'")
    model_dir = Path(model).expanduser()
    names, config = _model_modalities(model_dir)
    data_paths = parse_data_args(data, names)
    if modality is not None:
        _check_modality(modality, names, "--modality")
    _check_data_args(data_paths, names, model_dir, [] if modality is None else [modality])
    out_path = Path(out).expanduser()
    if modality is not None:
        targets = {modality: out_path}
        _check_not_an_input(out_path, data_paths)  # (before advising --overwrite)
        _check_output(out_path, overwrite=overwrite, suffix=".h5ad")
    else:
        if out_path.suffix.lower() in (".h5ad", ".h5mu"):
            raise ValueError(
                f"--out {out_path}: without --modality every modality is embedded and --out is a "
                "directory (files NAME.h5ad); give --modality NAME to write one file"
            )
        if out_path.exists() and not out_path.is_dir():
            raise FileExistsError(f"--out {out_path} exists and is not a directory")
        # ('/' of a name of a model saved before names refused it: as %2F, so that the file
        # stays in the directory)
        targets = {n: out_path / f"{n.replace('/', '%2F')}.h5ad"
                   for n in names if n in data_paths}
        for p in targets.values():
            _check_not_an_input(p, data_paths)
            _check_output(p, overwrite=overwrite, suffix=".h5ad")
    # .h5ad inputs opened read-only and read block by block (memory of a block and of the
    # embedding, not of the data), as translate does
    m, adatas = _load(model_dir, data_paths, config, backed=True)
    # every modality is embedded before any file is written: a modality that fails leaves
    # no partial set of outputs behind
    latents = {name: m.get_latent_representation(name, adatas[name]) for name in targets}
    # every file written under a temporary name, and all renamed once all are written: a
    # failed write (a full disk) leaves none of them, nor does a failed commit of one (a
    # file another process wrote meanwhile) leave the new files committed before it
    done: list[Path] = []
    try:
        with contextlib.ExitStack() as stack:
            for name, path in targets.items():
                tmp = stack.enter_context(_committed(path, overwrite, done))
                _write_embedded(adatas[name], latents[name], key, tmp)
    except BaseException:
        if not overwrite:  # (new files, this call's)
            for path in done:
                path.unlink(missing_ok=True)
        raise
    for name, path in targets.items():
        print(f"transmodal: {name}: {adatas[name].n_obs} cells embedded (obsm[{key!r}]) -> "
              f"{path}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _committed(path: Path, overwrite: bool, done: list[Path]) -> Iterator[Path]:
    """:func:`atomic_file` of an ``.h5ad``, noting ``path`` in ``done`` once it is in place."""
    with atomic_file(path, overwrite=overwrite, suffix=".h5ad") as tmp:
        yield tmp
    done.append(path)


def _write_embedded(adata: Any, latent: Any, key: str, path: Path) -> None:
    """Write ``adata`` with ``obsm[key] = latent`` to ``path``. A backed .h5ad is copied as
    it is on disk and the embedding added to the copy, so its matrices are never read whole
    (and everything in the file is kept as stored)."""
    if not getattr(adata, "isbacked", False):
        adata.obsm[key] = latent
        adata.write_h5ad(path)
        return
    import h5py
    import numpy as np
    from anndata.io import write_elem

    shutil.copyfile(adata.filename, path)
    with h5py.File(path, "r+") as f:
        # (copied by its name: the file must still hold the cells embedded)
        from anndata.io import read_elem

        index = f["obs"].attrs.get("_index", "_index")
        copied = np.asarray(read_elem(f["obs"][index]), dtype=object).astype(str)
        if not np.array_equal(copied, np.asarray(adata.obs_names, dtype=object).astype(str)):
            raise ValueError(
                f"{adata.filename} was changed while its cells were embedded (another "
                "process writing it?); run the command again"
            )
        if "obsm" not in f:
            write_elem(f, "obsm", {})
        if key in f["obsm"]:
            del f["obsm"][key]
        write_elem(f["obsm"], key, np.asarray(latent))


# --------------------------------------------------------------------------- translate
def cmd_translate(
    model: str,
    data: Sequence[str],
    source: str,
    target: str,
    out: str,
    library_size: float | None = None,
    overwrite: bool = False,
    target_batch: str | None = None,
) -> int:
    """``transmodal translate``: write ``model.translate(data[source], source, target)``."""
    model_dir = Path(model).expanduser()
    names, config = _model_modalities(model_dir)
    _check_modality(source, names, "--source")
    _check_modality(target, names, "--target")
    if library_size is not None and not (library_size > 0 and math.isfinite(library_size)):
        raise ValueError(f"--library-size must be a positive number, got {library_size}")
    from ..data._setup import target_batch_codes

    # checked before any data are read
    target_batch_codes((config.get("batch_categories") or {}).get(target), target, target_batch,
                       what="--target-batch")
    data_paths = parse_data_args(data, names)
    _check_data_args(data_paths, names, model_dir, [source])
    out_path = Path(out).expanduser()
    _check_not_an_input(out_path, data_paths)
    _check_output(out_path, overwrite=overwrite, suffix=".h5ad")
    # the cells are read block by block and the translation written so (memory of a block,
    # not of the data), as translate(out=) does in Python (for a model or an ensemble)
    m, adatas = _load(model_dir, data_paths, config, backed=True)
    result = m.translate(adatas[source], source=source, target=target,
                         library_size=library_size, target_batch=target_batch, out=out_path,
                         overwrite=overwrite)
    result.file.close()
    print(
        f"transmodal: {result.n_obs} cells translated {source} -> {target} "
        f"({result.n_vars} features) -> {out_path}",
        file=sys.stderr,
    )
    return 0


# ---------------------------------------------------------------------------- evaluate
def cmd_evaluate(
    model: str,
    data: Sequence[str],
    source: str,
    target: str,
    labels_key: str | None = None,
    out: str | None = None,
    overwrite: bool = False,
    train_data: Sequence[str] | None = None,
) -> int:
    """``transmodal evaluate``: paired-cell metrics as a table (and optionally JSON); for
    inputs without cells in common, the label-based metrics of unpaired cells.

    The model is rebuilt around ``train_data`` when given (then the mean-profile baseline is
    the training cells' mean), otherwise around ``data`` (baseline: the evaluated cells' mean).
    """
    from ..model._split import decorated_names_advice
    from ..workflows import evaluate_paired, evaluate_unpaired, format_table

    model_dir = Path(model).expanduser()
    names, config = _model_modalities(model_dir)
    _check_modality(source, names, "--source")
    _check_modality(target, names, "--target")
    if source == target:
        raise ValueError(f"--source and --target must differ, both are {source!r}")
    data_paths = parse_data_args(data, names)
    for name in (source, target):
        if name not in data_paths:
            raise ValueError(f"--data: no data for modality {name!r} (add --data {name}=PATH.h5ad)")
    for name, path in data_paths.items():
        _check_modality(name, names, "--data")
        if not path.is_file():
            raise FileNotFoundError(f"--data {name}: file not found: {path}")
    train_paths = parse_data_args(train_data, names, "--train-data") if train_data else None
    if train_paths is not None:
        _check_data_args(train_paths, names, model_dir, option="--train-data")
    else:
        _check_data_args(data_paths, names, model_dir)
    out_path = Path(out).expanduser() if out is not None else None
    if out_path is not None:
        _check_output(out_path, overwrite=overwrite, suffix=".json")
    if train_paths is not None:
        m, _ = _load(model_dir, train_paths, config, "--train-data")
        adatas = _read_inputs(data_paths)
    else:
        m, adatas = _load(model_dir, data_paths, config)
    if labels_key is None:  # default: the model's labels_key, where both inputs have it
        model_key = (config.get("init_params") or {}).get("labels_key")
        if model_key is not None and all(model_key in adatas[n].obs for n in (source, target)):
            labels_key = model_key
    else:
        for name in (source, target):
            if labels_key not in adatas[name].obs:
                raise ValueError(
                    f"--labels-key {labels_key!r} not found in obs of --data {name} "
                    f"(columns: {list(adatas[name].obs.columns)})"
                )
    a, b = adatas[source], adatas[target]
    common = a.obs_names.intersection(b.obs_names)
    numbers = names_are_numbers(a.obs_names) and names_are_numbers(b.obs_names)
    if numbers and len(common) and labels_key is not None:
        print(f"transmodal: the cell names of --data {source} and {target} are numbers (as "
              "AnnData's default row numbers), which do not say which cells are the same: "
              "scored as cells measured apart, by their labels", file=sys.stderr)
    if len(common) >= 2 and not (numbers and labels_key is not None):
        if len(common) < max(a.n_obs, b.n_obs):
            print(f"transmodal: scoring the {len(common)} cells present in both --data "
                  f"{source} ({a.n_obs} cells) and {target} ({b.n_obs})", file=sys.stderr)
        metrics = evaluate_paired(m, adatas, source=source, target=target, labels_key=labels_key)
    else:
        renamed = decorated_names_advice(source, target, a.obs_names, b.obs_names)
        if labels_key is None:
            raise ValueError(
                f"--data {source} and --data {target} share {len(common)} cell(s) (equal "
                "obs_names), so no cell can be paired; to score cells measured apart by their "
                "labels, give --labels-key" + (f" ({renamed})" if renamed else "")
            )
        if not (numbers and len(common)):  # (said above)
            print(f"transmodal: --data {source} and {target} share {len(common)} cell "
                  "name(s): scored as cells measured apart, by their labels"
                  + (f" ({renamed})" if renamed else ""), file=sys.stderr)
        metrics = evaluate_unpaired(m, adatas, source=source, target=target,
                                    labels_key=labels_key)
    if out_path is not None:  # before the table: a reader closing the pipe early loses nothing
        _write_text(json.dumps(jsonable(metrics), indent=1) + "\n", out_path)
        print(f"transmodal: metrics written to {out_path}", file=sys.stderr)
    print(format_table(metrics))
    return 0


# -------------------------------------------------------------------------------- demo
def cmd_demo(
    out: str,
    seed: int = 0,
    max_epochs: int | None = None,
    progress_bar: bool = True,
    data_path: str | None = None,
) -> int:
    """``transmodal demo``: the sci-CAR A549 workflow (train split -> test metrics)."""
    from ..workflows import run_demo

    if max_epochs is not None and max_epochs < 1:
        raise ValueError(f"--max-epochs must be >= 1, got {max_epochs}")
    run_demo(os.path.expanduser(out), seed=seed, max_epochs=max_epochs,
             data_path=None if data_path is None else os.path.expanduser(data_path),
             progress_bar=progress_bar)
    return 0
