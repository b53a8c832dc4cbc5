"""Small shared helpers: device resolution, seeded initialisation, atomic file and directory
writes, integer-argument checks, plain-JSON values."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch


def mps_available() -> bool:
    """Whether an Apple GPU (MPS) can be used."""
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"gpu"`` / ``"gpu:1"`` (CUDA,
    or an Apple GPU where there is no CUDA, as training's ``accelerator="gpu"``) or
    ``"auto"`` -> a device."""
    if device is None:
        return torch.device("cpu")
    name = device.strip().lower() if isinstance(device, str) else device  # any case
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(name, str) and name.startswith("gpu"):
        name = "mps" if name == "gpu" and not torch.cuda.is_available() and mps_available() \
            else "cuda" + name[3:]
    try:
        dev = name if isinstance(name, torch.device) else torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):  # not "meta", "xpu", ...
        raise ValueError(
            "device must be 'cpu', 'cuda', 'cuda:N', 'gpu', 'gpu:N', 'mps', 'auto' or a "
            f"torch.device of these; got {device!r}"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            gpu = isinstance(device, str) and device.strip().lower().startswith("gpu")
            what = ("CUDA is not available" if not gpu else
                    f"CUDA is not available ({device!r} names a CUDA device; the Apple GPU is "
                    "'gpu' or 'mps')" if mps_available() else
                    "no GPU is available (neither CUDA nor an Apple GPU)")
            raise ValueError(f"device {device!r} requested but {what}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: {torch.cuda.device_count()} CUDA device(s) visible"
            )
    if dev.type == "mps" and not mps_available():
        raise ValueError(f"device {device!r} requested but MPS (Apple GPU) is not available")
    return dev


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def is_missing_text(text: str) -> bool:
    """Whether a label string stands for a missing value: ``"nan"``, ``"None"``, ``"<NA>"``
    or blank, as ``astype(str)`` leaves NaN / None / pd.NA."""
    return text.strip().lower() in ("nan", "<na>", "none", "")


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning of the function calling this one point at the
    first frame outside transmodal: the user's line, whichever public call led there."""
    frame, level = sys._getframe(1), 1
    # (and the standard library's context managers: a transmodal one that warns on exit)
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE_DIR)
                                 or frame.f_code.co_filename == contextlib.__file__):
        frame, level = frame.f_back, level + 1
    return level


class FeatureMoments:
    """Per-feature mean and variance of rows added block by block, from float64 sums taken
    around the first row (so that a large common offset costs no precision). NaN entries
    (unmeasured values) are skipped: each feature has its own count (``counts``)."""

    def __init__(self) -> None:
        self.n = 0  # rows added
        self.counts: np.ndarray | None = None  # finite entries per feature
        self._shift: np.ndarray | None = None
        self._s1 = self._s2 = None

    def add(self, block: np.ndarray) -> None:
        """Add a ``(rows, features)`` block."""
        d = np.asarray(block, dtype=np.float64)
        if not len(d):
            return
        if self._shift is None:
            self._shift = d[0].copy()
            self._s1, self._s2 = np.zeros_like(self._shift), np.zeros_like(self._shift)
            self.counts = np.zeros(len(self._shift), dtype=np.int64)
        gaps = np.isnan(self._shift)  # features unmeasured so far: shift by their first value
        if gaps.any():
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # columns all NaN
                first = np.nanmean(d[:, gaps], axis=0)
            self._shift[gaps] = first  # (only features without values so far: sums are 0)
        d = d - self._shift
        self.n += len(d)
        nan = np.isnan(d)
        if nan.any():
            d[nan] = 0.0
            self.counts += len(d) - nan.sum(0)
        else:
            self.counts += len(d)
        self._s1 += d.sum(0)
        self._s2 += np.einsum("ij,ij->j", d, d)

    def mean(self) -> np.ndarray:
        """Per-feature mean of the values added (NaN for a feature without any)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._shift + self._s1 / self.counts

    def var(self, ddof: int = 0) -> np.ndarray:
        """Per-feature variance (divided by ``count - ddof``) of the values added (NaN for a
        feature with at most ``ddof`` values)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self._s1 / self.counts
            return np.maximum(self._s2 - self.counts * m * m, 0.0) / (self.counts - ddof)


def is_global_zero(*, launcher: bool = False) -> bool:
    """Whether this process is rank 0 of a ``torch.distributed`` run (always true outside
    one), by its process group.

    With ``launcher=True`` (for warnings, never for writing files), also before a process
    group exists - a script started by ``torchrun``, or re-run by Lightning for its other
    processes, warns before training - by the launcher's ``RANK`` / ``LOCAL_RANK`` /
    ``NODE_RANK`` variables, read only beside a ``WORLD_SIZE`` above 1 (set by both): a lone
    process is rank 0 whatever a job system exports."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    if not launcher:
        return True
    world = os.environ.get("WORLD_SIZE", "").strip()
    if not (world.isdigit() and int(world) > 1):
        return True
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(var, "0").strip()
        if value.isdigit() and int(value) > 0:
            return False
    return True


# strategies that train in child processes: the history (and the run's own state) would stay
# there, and the model in the caller would come back with an empty history
CHILD_PROCESS_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook")


def parse_devices(devices: Any) -> str | int | list[int] | None:
    """Lightning's forms of ``devices`` (2, "2", -1, "-1", "auto", [0, 1], "0,1") as
    ``"auto"``, a number of devices (-1: all) or a list of device indices; ``None`` for
    anything else (0, negative numbers, booleans, ...)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, (int, np.integer)):
        return int(devices) if devices >= 1 or devices == -1 else None
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return "auto" if text == "auto" else -1
        if "," in text:
            parts = [x.strip() for x in text.split(",") if x.strip()]
            return [int(x) for x in parts] if parts and all(x.isdigit() for x in parts) else None
        return int(text) if text.isdigit() and int(text) >= 1 else None
    if isinstance(devices, (list, tuple)) and devices and all(
        isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 0 for x in devices
    ):
        return [int(x) for x in devices]
    return None


def _device_kind(accelerator: str) -> str:
    """What Lightning's ``accelerator`` (any case) trains on here: ``"cpu"``, ``"cuda"`` or
    ``"mps"``."""
    accelerator = accelerator.strip().lower()
    mps = getattr(torch.backends, "mps", None)
    mps = mps is not None and mps.is_available()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() or not mps else "mps"
    if accelerator == "mps" or (accelerator == "auto" and mps):
        return "mps"
    return "cpu"


def check_parallel(p: Any) -> None:
    """Check ``devices`` / ``num_nodes`` / ``strategy`` of ``train`` (those in the mapping
    ``p``, with ``accelerator``) as Lightning would, before it sees them: a bad value is
    named at once rather than deep inside Lightning after the data are read.

    ``devices``: a positive number of processes, ``"auto"``, such a number as a string, or
    (GPUs only) -1 for all or a list of device indices (``[0, 1]`` or ``"0,1"``).
    ``num_nodes``: a positive integer. ``strategy``: ``"auto"``, a Lightning strategy name
    (any case) other than those that train in child processes, or a strategy object.
    """
    kind = _device_kind(str(p.get("accelerator", "cpu")))
    if "devices" in p:
        d = p["devices"]
        parsed = parse_devices(d)
        if parsed is None:
            raise ValueError(
                "devices must be a positive number of processes, 'auto', -1 (all GPUs) or a "
                f"list of GPU indices, got {d!r}"
            )
        on_cpu = (
            f"training runs on the CPU (accelerator={p.get('accelerator', 'cpu')!r}); give a "
            "number of processes, e.g. devices=2"
        )
        if parsed == -1 and kind == "cpu":
            raise ValueError(f"devices=-1 means all GPUs, but {on_cpu}")
        if isinstance(parsed, list):
            if len(set(parsed)) != len(parsed):
                raise ValueError(f"devices lists a device twice: {d!r}")
            if kind == "cpu":
                raise ValueError(f"devices={d!r} lists GPU indices, but {on_cpu}")
            count = torch.cuda.device_count() if kind == "cuda" else 1
            if max(parsed) >= count:
                raise ValueError(
                    f"devices={d!r}: {kind.upper()} device {max(parsed)} does not exist "
                    f"({count} visible)"
                )
    if "num_nodes" in p:
        n = p["num_nodes"]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"num_nodes must be a positive integer, got {n!r}")
    if "devices" in p:
        strategy = p.get("strategy", "auto")
        ddp = isinstance(strategy, str) and strategy.lower().startswith("ddp")
        _check_launch(parse_devices(p["devices"]), int(p.get("num_nodes", 1)), ddp=ddp)
    if "strategy" in p and p["strategy"] is None:  # (Lightning refuses it after the data)
        raise ValueError("strategy must be 'auto', a Lightning strategy name (e.g. 'ddp') or "
                         "a strategy object, got None")
    if "strategy" in p and isinstance(p["strategy"], str):
        name = p["strategy"].lower()  # as Lightning reads it
        if name.endswith("find_unused_parameters_false"):
            raise ValueError(
                f"strategy={p['strategy']!r}: each training step runs two backward passes "
                "(discriminator, then autoencoders) that each use part of the parameters, so "
                "DDP must look for unused ones; use strategy='ddp' (transmodal makes it "
                "'ddp_find_unused_parameters_true')"
            )
        if name.startswith(CHILD_PROCESS_STRATEGIES):  # also "ddp_spawn_find_unused_..."
            raise ValueError(
                f"strategy={p['strategy']!r} trains in child processes, whose history would be "
                "lost; use strategy='ddp' (launched with torchrun / srun, or by Lightning from "
                "a script)"
            )
        from lightning.pytorch.strategies import StrategyRegistry  # only when asked: ~2 s

        if name != "auto" and name not in StrategyRegistry.available_strategies():
            raise ValueError(
                f"unknown strategy {p['strategy']!r}; use 'auto' or 'ddp' (several processes: "
                "launched with torchrun / srun, or by Lightning from a script), or another "
                "name of Lightning's strategy registry (e.g. 'fsdp', 'deepspeed')"
            )


def _check_launch(devices: Any, num_nodes: int, *, ddp: bool = False) -> None:
    """Check that the processes asked for fit how this one was started: under a launcher
    (``WORLD_SIZE`` set, e.g. by ``torchrun``) ``devices x num_nodes`` must be its number of
    processes, else each process would train the whole model alone; without one, several
    processes are started by Lightning re-running the script, which needs a script file
    (``python -c``, standard input, a REPL or a notebook cannot be re-run). Once a training
    on several processes (or a ``ddp`` one, ``ddp=True``) has run, torch keeps its process
    group, and Lightning would train in it: a later one (or a later ``ddp`` one) must ask
    for as many processes; one process alone trains on its own."""
    import torch.distributed as dist

    count = devices if isinstance(devices, int) and devices > 0 else (
        len(devices) if isinstance(devices, list) else None
    )
    if count is not None and dist.is_available() and dist.is_initialized():
        group = dist.get_world_size()
        if (count * num_nodes > 1 or ddp) and count * num_nodes != group:
            raise ValueError(
                f"devices={count} x num_nodes={num_nodes} asks for {count * num_nodes} "
                f"process(es), but this process already belongs to a group of {group} from "
                "an earlier training on several processes in this program: torch keeps it "
                "until the program ends, and Lightning would train in it with the wrong "
                f"number of processes; ask for {group} here too, train on one process "
                "(devices=1, without strategy='ddp'), or train in another program"
            )
    world = os.environ.get("WORLD_SIZE", "").strip()
    if world.isdigit() and int(world) > 1:
        if count is not None and count * num_nodes != int(world):
            # Lightning's own launcher sets LOCAL_RANK and WORLD_SIZE, torchrun RANK too
            rerun = "RANK" not in os.environ and "TORCHELASTIC_RUN_ID" not in os.environ
            started = (
                f"Lightning started it to train on {world} processes by running this "
                "script again from its start, so every training before that one runs again "
                f"in it, and each must ask for devices={int(world) // num_nodes} (put a "
                "training on fewer processes after it, or in another script)"
                if rerun else "started by torchrun or another launcher"
            )
            raise ValueError(
                f"this process is one of WORLD_SIZE={world} processes ({started}), but "
                f"devices={count} x num_nodes={num_nodes} asks for {count * num_nodes}: "
                "each process would train the whole model on its own; pass "
                f"devices={int(world) // num_nodes} (processes per node) and num_nodes"
            )
        return
    if count is None or count * num_nodes < 2 or num_nodes > 1:  # (nodes: srun starts them)
        return
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    # (a REPL's prompt; `python -i script.py` runs the script first, which Lightning can
    # re-run, without -i, for the other processes)
    interactive = hasattr(sys, "ps1")
    if script is None or not os.path.isfile(script) or interactive:
        raise ValueError(
            f"devices={count}: Lightning starts the other {count - 1} process(es) by running "
            "this program's script again, but it was not started from a script file "
            "(python -c, standard input, an interactive session or a notebook); put the "
            "training in a .py file and run it, or launch it with torchrun --nproc_per_node "
            f"{count} train.py"
        )


def lightning_accelerator(accelerator: str) -> str:
    """Validate a Lightning accelerator name (``"cpu"``, ``"gpu"``, ``"cuda"``, ``"mps"``,
    ``"auto"``, in any case); returns it as Lightning spells it (lower case)."""
    allowed = {"cpu", "gpu", "cuda", "mps", "auto"}
    given = accelerator
    if isinstance(accelerator, str):
        accelerator = accelerator.strip().lower()
    if accelerator not in allowed:
        raise ValueError(f"accelerator must be one of {sorted(allowed)}, got {given!r}")
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"accelerator {given!r} requested but CUDA is not available")
    if accelerator == "gpu" and not (torch.cuda.is_available() or mps_available()):
        raise ValueError(
            f"accelerator {given!r} requested but no GPU is available (neither CUDA nor an "
            "Apple GPU)"
        )
    if accelerator == "mps" and not mps_available():
        raise ValueError(f"accelerator {given!r} requested but MPS (Apple GPU) is not available")
    return accelerator


# torch's random generators, default dtype, deterministic mode, Lightning's logger levels
# and Python's warning filters belong to the whole process: the blocks that set them and
# give them back (seeded, torch_defaults, training, the ensembles' runs) hold this lock, so
# that two threads cannot interleave them (one thread's draws moved another's, and a
# training started while another ran left deterministic mode on for the process)
_PROCESS_STATE = threading.RLock()


def _fresh_lock_in_child() -> None:
    """A forked child starts with a free lock (its holder, a thread of the parent, does not
    exist there: the child's first model would wait forever)."""
    global _PROCESS_STATE
    _PROCESS_STATE = threading.RLock()


if hasattr(os, "register_at_fork"):  # (POSIX)
    os.register_at_fork(after_in_child=_fresh_lock_in_child)


@contextlib.contextmanager
def process_state() -> Iterator[None]:
    """Hold the process-wide state of torch, Lightning and ``warnings`` for this thread:
    blocks that change it run one thread at a time (re-entered freely by the holder)."""
    with _PROCESS_STATE:
        yield


@contextlib.contextmanager
def warnings_once() -> Iterator[None]:
    """Give each distinct warning (category and message) of the block once, at the
    caller's line, however often the block gave it (one matrix checked by two steps of a
    workflow, or by every member of an ensemble); also when the block fails, before its
    error. The caller's filters apply inside: an "error" filter raises at the first."""
    caught: list[warnings.WarningMessage] = []

    def pass_on() -> None:
        for category, message in dict.fromkeys((w.category, str(w.message)) for w in caught):
            warnings.warn(message, category, stacklevel=user_stacklevel())

    try:
        with process_state(), warnings.catch_warnings(record=True) as caught:
            yield
    except BaseException:  # the block's warnings, then its failure
        with contextlib.suppress(Warning):
            pass_on()
        raise
    pass_on()


_F = TypeVar("_F", bound=Callable[..., Any])


def passes_warnings_once(func: _F) -> _F:
    """Decorate a workflow whose steps may give one warning several times:
    :func:`warnings_once` over its body."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings_once():
            return func(*args, **kwargs)

    return cast(_F, wrapper)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block with torch's random generators seeded, giving the caller theirs back.

    The CPU generator is seeded, and the GPU generators where the block may draw on them
    (CUDA already started, or ``device`` a CUDA or an Apple (MPS) device): all of them are
    saved and restored.
    ``torch.manual_seed`` is not used, as it also seeds every CUDA generator - before CUDA
    starts, by a queued call - which would change the caller's later GPU draws.
    """
    kind = None if device is None else torch.device(device).type
    cuda: list[int] = []
    if torch.cuda.is_available() and (torch.cuda.is_initialized() or kind == "cuda"):
        cuda = list(range(torch.cuda.device_count()))
    with process_state():
        mps = torch.mps.get_rng_state() if kind == "mps" else None  # (Apple GPUs: one)
        try:
            with torch.random.fork_rng(devices=cuda):
                torch.random.default_generator.manual_seed(int(seed))  # (numpy integers)
                if cuda:
                    torch.cuda.manual_seed_all(int(seed))
                if mps is not None:
                    torch.mps.manual_seed(int(seed))
                yield
        finally:
            if mps is not None:
                torch.mps.set_rng_state(mps)


@contextlib.contextmanager
def torch_defaults() -> Iterator[None]:
    """Build and train networks with torch's defaults whatever the caller set, and give
    the caller's settings back: float32 as the default dtype (a float64 default would
    draw other initial weights from the same seed), autograd on and inference mode off
    (inside ``torch.no_grad()`` or ``torch.inference_mode()`` nothing could learn)."""
    with process_state():
        dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float32)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                yield
        finally:
            torch.set_default_dtype(dtype)


# the files of a saved model (model/_io.py); a directory holding just these may be replaced
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"
# a saved ensemble (model/_ensemble.py): this file and one saved model per member<N>/
ENSEMBLE_CONFIG = "ensemble.json"
_SHOWN_ENTRIES = 5  # foreign entries named in an error message
# files the command line's ``train`` writes into its output directory besides the saved
# model (or ensemble)
TRAIN_SIDE_FILES = ("history.csv", "agreement.csv", "run_config.yaml")


def _written_by_transmodal(path: Path) -> bool:
    """Whether the file ``path``, named as a saved model's file, is one: a model's
    ``config.json`` (its class and format version), an ``ensemble.json`` of the ensemble
    format, or weights whose safetensors header says transmodal. Another program's
    ``config.json`` is never taken for a model's."""
    if not path.is_file():  # (a link to a file is read through: git-annex, DVC)
        return False
    try:
        if path.name == MODEL_WEIGHTS:
            with open(path, "rb") as fh:
                size = int.from_bytes(fh.read(8), "little")
                if not 0 < size <= 100_000_000:
                    return False
                header = json.loads(fh.read(size))
            return (header.get("__metadata__") or {}).get("format") == "transmodal"
        config = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False
    if not isinstance(config, dict):
        return False
    if path.name == ENSEMBLE_CONFIG:
        return config.get("format") == "transmodal-ensemble"
    return isinstance(config.get("class"), str) and "format_version" in config


def _is_ensemble_member(path: Path) -> bool:
    """Whether ``path`` is a member directory of the saved ensemble around it: named
    ``member<N>``, next to an ``ensemble.json``, holding a saved model and nothing else.
    Other directories (a user's other saved models among them) are never replaced."""
    if not re.fullmatch(r"member\d+", path.name) or not (path.parent / ENSEMBLE_CONFIG).is_file():
        return False
    if not path.is_dir() or path.is_symlink():
        return False
    entries = list(path.iterdir())
    return {p.name for p in entries} == {MODEL_CONFIG, MODEL_WEIGHTS} and all(
        _written_by_transmodal(p) for p in entries
    )


def names_are_numbers(names: Any) -> bool:
    """Whether every cell name is a number, as AnnData's default row numbers "0".."n-1"
    (``AnnData(matrix)``) and any subset of them: names that say nothing about which
    cells of two modalities are the same."""
    keys = np.asarray(names).astype(str)
    return bool(len(keys)) and bool(np.char.isdigit(keys).all())


def is_mudata(data: Any) -> bool:
    """Whether ``data`` is a MuData (a MuData exists only once mudata is imported, so this
    never imports it)."""
    mudata = sys.modules.get("mudata")
    return mudata is not None and isinstance(data, mudata.MuData)


def check_path(path: Any, what: str = "the directory to write") -> None:
    """``TypeError`` naming ``what`` unless ``path`` is a str or os.PathLike."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (a str or pathlib.Path), got {path!r:.80}")


def check_writable_parent(path: str | os.PathLike) -> None:
    """Check, before any work, that ``path`` can be created where it is to be written: its
    nearest existing ancestor folder must be a folder that accepts new entries (tried by
    creating and removing an empty temporary folder there), so a long computation does not
    end in an error about its output.

    Raises
    ------
    NotADirectoryError
        If an ancestor of ``path`` is a file.
    PermissionError
        If nothing can be created there (no permission, a read-only or virtual file system).
    """
    given = Path(path)
    parent = Path(os.path.abspath(path)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot write {given}: {parent} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".transmodal-check.", dir=parent))
    except OSError as err:
        raise PermissionError(
            f"cannot write {given}: nothing can be created in {parent} ({err.strerror})"
        ) from None


def check_output_directory(
    path: str | os.PathLike, *, overwrite: bool, names: Collection[str] | None = None
) -> Path:
    """Check that directory ``path`` may be written, before anything is written or moved.

    Parameters
    ----------
    path
        The directory to create (or replace).
    overwrite
        Whether an existing directory may be replaced.
    names
        The names of the entries the write produces (files, or saved-model directories).
        With ``overwrite=True``, an existing directory is replaced only if every entry in it
        is a file or link with one of these names or a member directory of a saved ensemble
        (``member<N>/`` next to ``ensemble.json``, holding nothing but a saved model, e.g. a
        member left from a larger ensemble); ``None`` skips this check (the names are not
        known yet).

    Returns
    -------
    ``path`` made absolute (``..`` and ``.`` resolved).

    Raises
    ------
    ValueError
        If ``path`` is the current working directory or one of its parents.
    FileExistsError
        If ``path`` is a file, exists without ``overwrite``, or holds other entries.
    FileNotFoundError
        If ``path`` is a symbolic link to nothing.
    """
    check_path(path)
    given, target = Path(path), Path(os.path.abspath(path))
    if target.is_symlink() and not target.exists():  # (checked now, not after training)
        raise FileNotFoundError(
            f"{given} is a symbolic link to {os.readlink(target)!r}, which does not exist; "
            "create that directory or remove the link"
        )
    if target.is_symlink() and target.is_dir():  # a link to a folder: replace the folder
        target = Path(os.path.realpath(target))
    check_writable_parent(target)
    cwd = Path.cwd().resolve()
    if target.exists() and target.resolve() in (cwd, *cwd.parents):
        raise ValueError(
            f"cannot write a directory to {str(path)!r}: it is the current working directory "
            "(or holds it); give a new directory such as 'model'"
        )
    if target.exists() and not target.is_dir():
        raise FileExistsError(
            f"{given} exists and is not a directory; refusing to replace it - choose a "
            "directory path"
        )
    if target.exists() and not overwrite:
        raise FileExistsError(f"{given} exists; pass overwrite=True to replace it")
    if target.exists() and names is not None:
        foreign = []
        # a saved model's files are replaced by a writer of a model or an ensemble (either
        # kind replaces the other) when transmodal wrote them; other files by their names
        model_files = (MODEL_CONFIG, MODEL_WEIGHTS, ENSEMBLE_CONFIG)
        writes_model = any(n in model_files for n in names)
        for entry in sorted(target.iterdir()):
            is_dir = entry.is_dir() and not entry.is_symlink()
            if entry.name in model_files:
                ours = not is_dir and writes_model and _written_by_transmodal(entry)
            else:
                ours = not is_dir and entry.name in names
            if not (ours or _is_ensemble_member(entry)):
                foreign.append(f"{entry.name}/" if is_dir else entry.name)
        if foreign and set(foreign) <= set(TRAIN_SIDE_FILES):
            raise FileExistsError(
                f"{given} is the output of the command line's train (its "
                f"{', '.join(foreign)} would go on describing the run that wrote it); "
                "refusing to replace it - save to a new path, or delete those files first"
            )
        if foreign:
            shown = ", ".join(foreign[:_SHOWN_ENTRIES])
            n_more = len(foreign) - _SHOWN_ENTRIES
            more = f" and {n_more} more" if n_more > 0 else ""
            raise FileExistsError(
                f"{given} exists and holds files that are not part of a saved model "
                f"({shown}{more}); refusing to replace it - choose a new or empty path"
            )
    return target


def first_few(items: Sequence[Any], k: int = 3) -> str:
    """``items`` for a message: the first ``k`` as a list, and how many more there are
    (``"['a', 'b', 'c'] and 17 more"``)."""
    items = list(items)
    more = f" and {len(items) - k} more" if len(items) > k else ""
    return f"{items[:k]}{more}"


@contextlib.contextmanager
def no_mudata_notice() -> Iterator[None]:
    """Without mudata 0.3's notice, on building or updating a MuData, of its defaults to
    come in 0.4 (the global obs / var columns, which transmodal does not read)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pull_on_update.*", category=FutureWarning)
        yield


def _temporary_prefix(target: Path, kind: str = "") -> str:
    """The prefix of the temporary names beside ``target`` (``kind``: ``"old-"`` for a
    replaced directory on its way out): hidden, naming this host and process, so that a
    later write can tell those left by a process killed meanwhile
    (:func:`_remove_stale_temporaries`)."""
    return f".{target.name}.{kind}{_host()}-{os.getpid()}-"


def _host() -> str:
    """This host's name as it stands in temporary names."""
    import socket

    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _remove_stale_temporaries(target: Path) -> None:
    """Remove the temporary files and directories beside ``target`` that a write of it by
    a process of this host left when it was killed (SIGKILL, a pre-empted job: no clean-up
    ran), so that repeated kills do not fill the disk; those of running processes, of other
    hosts (a shared file system) and of other names are left alone."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:old-)?{re.escape(_host())}-(\d+)-")
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        found = pattern.match(entry.name)
        if found is None or int(found.group(1)) == os.getpid() or _alive(int(found.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user's counts). On
    Windows every process counts as running: its ``os.kill`` terminates the process,
    whatever the signal, so a leftover of another process is left alone there."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (PermissionError: another user's process)
        return True
    return True


def _umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status; elsewhere
    set and put back at once, which a file created by another thread in between would
    feel)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike, *, overwrite: bool = False, suffix: str = ""
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On any error the temporary file is removed and an existing ``path`` is left as it was.

    Parameters
    ----------
    path
        The file to write.
    overwrite
        Whether an existing file may be replaced.
    suffix
        Ending of the temporary name, for writers that choose a format by it (``".png"``,
        ``".h5ad"``).
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    fd, name = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=f".tmp{suffix}",
                                dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates private files
        if overwrite or target.is_symlink():  # (a link to nothing yet: replaced, as before)
            os.replace(tmp, target)
        else:  # a file written there meanwhile (another process) is not replaced
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise FileExistsError(
                    f"{target} was written while this was (by another process?); pass "
                    "overwrite=True to replace it"
                ) from None
            except OSError:  # a file system without hard links
                os.replace(tmp, target)
            else:
                tmp.unlink()
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _sync(directory: Path) -> None:
    """Flush the files of ``directory`` and the directory itself to disk (where the system
    allows: some file systems refuse to sync a directory)."""
    for f in [*directory.rglob("*"), directory]:
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _renameat2(a: Path, b: Path, flags: int) -> bool:
    """Linux ``renameat2(a, b, flags)``; ``False`` where the system or its file system
    cannot, ``OSError`` if it fails otherwise."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a C library without it (glibc < 2.28, musl)
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def _exchange(a: Path, b: Path) -> bool:
    """Swap the entries ``a`` and ``b`` in one atomic step (``RENAME_EXCHANGE``); ``False``
    where the system or its file system cannot."""
    return _renameat2(a, b, 2)


def _rename_new(a: Path, b: Path) -> None:
    """Rename ``a`` to ``b``, which must not exist: ``FileExistsError`` if ``b`` was created
    meanwhile (by another process; ``RENAME_NOREPLACE`` where the system has it, else a
    plain rename, which replaces an empty directory)."""
    import errno

    try:
        if _renameat2(a, b, 1):
            return
        os.rename(a, b)
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise
        raise FileExistsError(
            f"{b} was created while this was written (by another process?); write it again"
            " to replace it"
        ) from None


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike, *, overwrite: bool, replaceable: Collection[str] = ()
) -> Iterator[Path]:
    """Write a directory atomically: fill a temporary sibling, then rename it into place.

    If anything fails, the temporary directory is removed and an existing ``path`` is left
    untouched. With ``overwrite=True`` an existing directory is replaced only after the new
    one is complete and flushed to disk (on Linux by swapping the two in one step, so that
    even a crash leaves one of them whole at ``path``), and only if it holds nothing but
    what the new one holds, ensemble member directories and files named in ``replaceable``
    (see :func:`check_output_directory`); otherwise :class:`FileExistsError` is raised and
    nothing is changed.

    Parameters
    ----------
    path
        The directory to write.
    overwrite
        Whether an existing directory may be replaced.
    replaceable
        Names of further files the writer produces at other times (e.g. outputs of other
        kinds of run), which may be replaced too.
    """
    target = check_output_directory(path, overwrite=overwrite)
    if target.is_dir() and not os.access(target, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{os.fspath(path)!r} is read-only (its permissions forbid changing what it "
            "holds); refusing to replace it - make it writable (chmod u+w) or choose "
            "another path"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), suffix=".tmp",
                                dir=target.parent))
    umask = _umask()
    try:
        yield tmp
        # mkdtemp (and some writers) create private files; give them the usual permissions
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.rglob("*"):
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)
        _sync(tmp)  # on disk before its name is: a crash leaves the old or the new, whole
        # checked last, just before anything existing is moved: a directory that another
        # thread or process wrote there meanwhile is replaced only with overwrite, and only
        # if it holds what may be replaced; one written after this look makes the rename
        # of a new directory fail (_rename_new) rather than be replaced unseen
        exists = target.exists()
        if exists:
            written = {p.name for p in tmp.iterdir()}
            check_output_directory(path, overwrite=overwrite, names=written | set(replaceable))
        if exists and _exchange(tmp, target):  # one step: no moment without either
            _remove_replaced(tmp, target)  # (now the old directory)
        elif exists:
            # the old directory waits in a fresh hidden folder (a unique name) until the
            # new one is in place; if that rename fails, it goes back
            hold = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target, "old-"),
                                         dir=target.parent))
            old = hold / target.name
            try:
                os.replace(target, old)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    os.replace(old, target)
                    raise
            finally:
                _remove_replaced(hold, target)
        else:
            _rename_new(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_replaced(old: Path, target: Path) -> None:
    """Delete ``old``, the directory that ``target`` replaced; warn, naming it, where some
    of it cannot be deleted (its permissions), rather than leave it hidden unsaid."""
    failed: list[str] = []
    handler = {"onexc" if sys.version_info >= (3, 12) else "onerror":
               lambda *args: failed.append(str(args[1]))}
    shutil.rmtree(old, **handler)
    if failed and old.exists():
        warnings.warn(
            f"{target} was replaced, but the directory it replaced could not be deleted "
            f"entirely ({len(failed)} entries, e.g. {failed[0]}); it is left at {old}",
            UserWarning, stacklevel=user_stacklevel(),
        )


def check_int(
    value: Any, name: str, *, minimum: int, allow_none: bool = False
) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an integer >= ``minimum``."""
    if allow_none and value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        extra = " or None" if allow_none else ""
        raise ValueError(
            f"{name} must be an integer >= {minimum}{extra}; got {value!r}"
        )


def with_article(word: str) -> str:
    """``word`` after its indefinite article ("a likelihood", "an architecture")."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


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


def check_unique_obs_names(adata: Any, name: str, sample_key: str | None = None) -> None:
    """``ValueError`` naming modality ``name`` when ``adata.obs_names`` repeat a name (cells
    are paired across modalities by their obs_names). The advice keeps the pairs: a prefix
    from the cells' sample (``sample_key``, e.g. the modality's batch_key, when given), the
    same in every modality; ``obs_names_make_unique`` numbers repeats in file order, which
    pairs the wrong cells where two modalities list them in different orders."""
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][0]
        prefix = (f"adata.obs_names = adata.obs[{sample_key!r}].astype(str) + '_' + "
                  "adata.obs_names, or " if sample_key is not None else "")
        raise ValueError(
            f"modality {name!r}: obs_names are not unique (e.g. {dup!r}, as barcodes "
            "repeat across samples); cells are paired between modalities by their obs_names, so "
            "make them unique the same way in every modality, e.g. prefixed with the "
            f"sample: {prefix}when the samples are concatenated, anndata.concat(samples, "
            "index_unique='_') with the same keys for every modality. "
            "adata.obs_names_make_unique() numbers the repeats in file order, which pairs "
            "the wrong cells where the modalities list them in different orders"
        )


def align_to_cells(values: Any, obs_names: Any, name: str) -> Any:
    """A pandas Series of per-cell values aligned to the cells ``obs_names`` by its index,
    as pandas would (a default RangeIndex, or anything that is not a Series, is taken by
    position and returned as it is); ``ValueError`` naming ``name`` when the index does not
    name every cell exactly once."""
    import pandas as pd

    if not isinstance(values, pd.Series):
        return values
    index, obs_names = values.index, pd.Index(obs_names)
    if isinstance(index, pd.RangeIndex) or index.equals(obs_names):
        return values
    lacking = obs_names.difference(index)
    if len(lacking) or not index.is_unique:
        example = list(lacking[:3]) or list(index[index.duplicated()][:3])
        kinds = ""
        if (len(lacking) and index.dtype != obs_names.dtype
                and index.astype(str).isin(lacking.astype(str)).any()):  # (e.g. 0 for "0")
            kinds = (f" - its index holds them as {index.dtype} values, not as the strings "
                     "of the obs_names: give it series.index.astype(str)")
        raise ValueError(
            f"{name} is a Series whose index does not name every cell once (e.g. {example})"
            f"{kinds}; index it by the cells' obs_names, or pass .to_numpy() to give values "
            "by position"
        )
    return values.reindex(obs_names)


def linked_groups(names: Sequence[str], linked: Callable[[str, str], bool]) -> list[list[str]]:
    """``names`` grouped by chains of ``linked`` pairs (the connected components), each
    group and the groups in the order of ``names``."""
    group = {n: n for n in names}  # union-find

    def root(n: str) -> str:
        while group[n] != n:
            n = group[n]
        return n

    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if root(a) != root(b) and linked(a, b):
                group[root(a)] = root(b)
    parts: dict[str, list[str]] = {}
    for n in names:
        parts.setdefault(root(n), []).append(n)
    return list(parts.values())
