"""Argument parsing of ``transmodal`` and the error policy of :func:`main`."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from typing import NoReturn

from .._interrupts import Terminated
from .._version import __version__

PROG = "transmodal"

# Errors a user can fix (bad config, missing file, existing output, wrong names): one line on
# stderr and exit code 2. Anything else is a bug and propagates with its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FloatingPointError,  # training diverged: the message says what to change
    KeyError,
    # files: missing, existing, not a directory, no permission, name too long, read-only
    # or full disk
    OSError,
)

CONFIG_EXAMPLE = """\
config file (YAML, or JSON by .json suffix); relative paths are relative to the config file:

  data:                      # one .h5ad per modality (or instead:  mudata: cells.h5mu)
    rna: rna.h5ad
    atac: atac.h5ad
  modalities:                # transmodal.Modality fields per modality
    rna: {likelihood: nb}
    atac: {likelihood: nb, layer: counts}
  model:                     # keyword arguments of transmodal.CrossModalAE
    n_latent: 16
    labels_key: cell_type
    seed: 0
  train:                     # keyword arguments of CrossModalAE.train
    max_epochs: 100
    batch_size: 128
    lr: 1e-3
  subset: {obs_key: split, value: train}   # optional: train on these cells only (each
                             # modality's obs column; a MuData's own obs column if it has one)
  out: model_dir             # output directory (--out overrides)
  # optional, instead of model: seed: one model per seed, then keep the runs' medoid
  # (combine: consensus, the default) or all of them (combine: ensemble); k: the
  # neighbours the runs' agreement is scored on (default 50)
  # runs: {seeds: [0, 1, 2], combine: consensus, k: 50}
  # optional: add modalities to a trained model (CrossModalAE.from_reference): its
  # modalities in data need no spec; anchor (frozen) defaults to the reference's own
  # anchor, else to the only one of its modalities that data hold
  # reference: {path: rna_atac_model/, anchor: rna}
  # optional: modules imported first (module names or .py files), e.g. one registering a
  # network architecture named in modalities (rna: {likelihood: nb, architecture: mine})
  # import: [my_networks.py]
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def _epilog(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def _desc(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=79)


def _add_data(p: argparse.ArgumentParser, *, required: bool = True, help_extra: str = "") -> None:
    p.add_argument(
        "--data",
        metavar="NAME=PATH",
        nargs="+",
        action="extend",
        required=required,
        help="input .h5ad per modality, e.g. --data rna=rna.h5ad atac=atac.h5ad; or from a "
        "MuData file: rna=cells.h5mu (its modality rna), or cells.h5mu (every modality of the "
        "model that it holds)" + help_extra,
    )


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", metavar="DIR", required=True, help="model directory written by `transmodal train`"
    )


def _add_overwrite(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace an existing {what}")


def build_parser() -> argparse.ArgumentParser:
    """The ``transmodal`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=_Formatter,
        description=_desc(
            "transmodal: cross-modal autoencoders that integrate and translate single-cell "
            "modalities (RNA, ATAC, ...) in one shared latent space."
        ),
        epilog=_epilog(
            """
            examples:
              transmodal train --config run.yaml --out model/
              transmodal embed --model model/ --data rna=rna.h5ad atac=atac.h5ad --out embedded/
              transmodal translate --model model/ --data rna=new_rna.h5ad \\
                  --source rna --target atac --out atac_from_rna.h5ad
              transmodal evaluate --model model/ --data rna=test_rna.h5ad atac=test_atac.h5ad \\
                  --source rna --target atac --out metrics.json
              transmodal demo --out demo/

            Run `transmodal COMMAND --help` for the options of a command.
            """
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    tb_help = "on errors, show the full Python traceback instead of one line"
    parser.add_argument("--traceback", action="store_true", help=tb_help)
    import_help = (
        "import a Python module (a name on the path, or a .py file) first, e.g. one that "
        "registers a likelihood or network architecture the config or the model uses "
        "(tm.register_likelihood / tm.register_architecture); repeatable"
    )
    parser.add_argument("--import", dest="imports_before", metavar="MODULE", action="append",
                        help=import_help)  # (a dest of its own: the command's would replace it)
    # --traceback is also taken after the command (SUPPRESS: absent there, the top-level
    # value stands)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=tb_help)
    common.add_argument("--import", dest="imports", metavar="MODULE", action="append",
                        default=argparse.SUPPRESS, help=import_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    # train --------------------------------------------------------------------------------
    p = sub.add_parser(
        "train",
        parents=[common],
        formatter_class=_Formatter,
        help="train a model from a YAML/JSON config and save it",
        description=_desc(
            "Train a CrossModalAE from a config file and save it to a directory "
            "(model.safetensors + config.json, plus history.csv with the per-epoch losses "
            "and run_config.yaml with the resolved config). With a 'runs' section one model "
            "is trained per seed: 'combine: consensus' saves the run the others agree with "
            "most (and agreement.csv), 'combine: ensemble' saves all of them as one "
            "transmodal.Ensemble, which embed / translate / evaluate read like a model. The "
            "config is fully validated before any data are read."
        ),
        epilog=CONFIG_EXAMPLE
        + "\n"
        + _epilog(
            """

            examples:
              transmodal train --config run.yaml
              transmodal train --config run.yaml --out runs/seed1 --overwrite
              transmodal train --config run.yaml --resume   # train: {checkpoint_dir: ckpt}
            """
        ),
    )
    p.add_argument("--config", metavar="FILE", required=True, help="run config (.yaml/.yml or .json)")
    p.add_argument("--out", metavar="DIR", help="output directory (overrides `out:` of the config)")
    _add_overwrite(p, "output directory (replaced only once the new model is complete)")
    p.add_argument(
        "--resume", action="store_true",
        help="go on from the last checkpoint in the config's train: checkpoint_dir, if it "
             "holds one (a stopped job submitted again), else start the training",
    )

    # embed --------------------------------------------------------------------------------
    p = sub.add_parser(
        "embed",
        parents=[common],
        formatter_class=_Formatter,
        help="write cells with their shared latent coordinates (.obsm['X_transmodal'])",
        description=_desc(
            "Embed cells into the model's shared latent space. Each input AnnData is written "
            "back with the latent coordinates in .obsm[KEY]. Features must match the model's "
            "var_names; modalities without --data are not needed. With --modality NAME only "
            "that modality is embedded and --out is a file; otherwise every modality given "
            "is embedded and --out is a directory receiving NAME.h5ad per modality."
        ),
        epilog=_epilog(
            """
            examples:
              transmodal embed --model model/ --data rna=rna.h5ad atac=atac.h5ad --out embedded/
              transmodal embed --model model/ --data rna=new_rna.h5ad \\
                  --modality rna --out rna_embedded.h5ad
            """
        ),
    )
    _add_model(p)
    _add_data(p, help_extra=" (the modalities to embed)")
    p.add_argument(
        "--out", metavar="PATH", required=True,
        help="output .h5ad file with --modality, else an output directory",
    )
    p.add_argument("--modality", metavar="NAME", help="embed only this modality (--out is then a file)")
    p.add_argument(
        "--key", metavar="KEY", default="X_transmodal",
        help="obsm key of the latent coordinates (default: %(default)s)",
    )
    _add_overwrite(p, "output file")

    # translate ----------------------------------------------------------------------------
    p = sub.add_parser(
        "translate",
        parents=[common],
        formatter_class=_Formatter,
        help="translate cells of one modality into another (D_target(E_source(x)))",
        description=_desc(
            "Translate the cells of --source into modality --target and write the result as "
            ".h5ad: the source cells' obs, the target's var_names, X in the target's units "
            "(counts at --library-size for count likelihoods, probabilities for Bernoulli). "
            "Only --source needs --data."
        ),
        epilog=_epilog(
            """
            examples:
              transmodal translate --model model/ --data rna=rna.h5ad atac=atac.h5ad \\
                  --source rna --target atac --out atac_from_rna.h5ad
              transmodal translate --model model/ --data rna=rna.h5ad atac=atac.h5ad \\
                  --source atac --target rna --library-size 10000 --out rna_from_atac.h5ad
            """
        ),
    )
    _add_model(p)
    _add_data(p, help_extra=" (at least --source's)")
    p.add_argument("--source", metavar="NAME", required=True, help="modality of the input cells")
    p.add_argument("--target", metavar="NAME", required=True, help="modality to translate into")
    p.add_argument("--out", metavar="FILE", required=True, help="output .h5ad file")
    p.add_argument(
        "--library-size", metavar="X", type=float,
        help="library size of translated count profiles (default: median of the training cells)",
    )
    p.add_argument(
        "--target-batch", metavar="BATCH",
        help="a target with a batch_key: decode as measured in this batch (default: the mean "
        "over its batches)",
    )
    _add_overwrite(p, "output file")

    # evaluate -----------------------------------------------------------------------------
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        formatter_class=_Formatter,
        help="metrics on paired cells (FOSCTTM, kNN accuracy, translation Pearson, ...) or "
        "on labelled unpaired cells (label transfer, ...)",
        description=_desc(
            "Evaluate a trained model on cells measured in both --source and --target "
            "(paired by equal obs_names): FOSCTTM, partner ranks, kNN accuracy, cluster "
            "accuracy and label transfer (with labels), mixing accuracy and translation "
            "Pearson vs a mean-profile baseline. Cells measured apart (no obs_names in "
            "common, or names that are numbers such as AnnData's default row numbers, which "
            "say nothing about the cells) are scored by their labels (--labels-key, or the "
            "model's): label transfer and cluster accuracy on the classes both modalities "
            "hold, and mixing accuracy. Prints a table; --out also writes JSON. "
            "Without --train-data the model is rebuilt around --data (every modality needed) "
            "and the baseline is the mean profile of the evaluated cells; with --train-data "
            "it is rebuilt around the training data and --data needs only source and target."
        ),
        epilog=_epilog(
            """
            examples:
              transmodal evaluate --model model/ --data rna=test_rna.h5ad atac=test_atac.h5ad \\
                  --source rna --target atac --labels-key cell_type
              transmodal evaluate --model model/ --data rna=test_rna.h5ad atac=test_atac.h5ad \\
                  --train-data rna=train_rna.h5ad atac=train_atac.h5ad \\
                  --source rna --target atac --out metrics.json
              transmodal evaluate --model model/ --data rna=pbmc_rna.h5ad atac=pbmc_atac.h5ad \\
                  --source rna --target atac --labels-key cell_type    # unpaired cells
            """
        ),
    )
    _add_model(p)
    _add_data(p, help_extra=" (cells to evaluate)")
    p.add_argument("--source", metavar="NAME", required=True, help="first modality ('x' of the metrics)")
    p.add_argument("--target", metavar="NAME", required=True, help="second modality ('y' of the metrics)")
    p.add_argument(
        "--labels-key", metavar="KEY",
        help="obs column of labels (default: the model's labels_key, if the data have it)",
    )
    p.add_argument(
        "--train-data", metavar="NAME=PATH", nargs="+", action="extend",
        help="training .h5ad per modality (every modality of the model; or an .h5mu, as for "
        "--data), for the baseline",
    )
    p.add_argument("--out", metavar="FILE", help="also write the metrics as JSON")
    _add_overwrite(p, "metrics file")

    # demo ---------------------------------------------------------------------------------
    p = sub.add_parser(
        "demo",
        parents=[common],
        formatter_class=_Formatter,
        help="run the sci-CAR A549 demo (train split -> metrics on the test cells)",
        description=_desc(
            "Train on the sci-CAR A549 train split (Yang et al. 2021 setting) and evaluate "
            "on its test cells; writes DIR/metrics.json and DIR/latent.png (replacing "
            "earlier files of those names; nothing else in DIR is touched) and prints the "
            "metrics table. Needs the A549 data ($TRANSMODAL_DATA or --data-path)."
        ),
        epilog=_epilog(
            """
            examples:
              transmodal demo --out demo/
              transmodal demo --out demo_seed1/ --seed 1 --max-epochs 50 --no-progress
            """
        ),
    )
    p.add_argument(
        "--out", metavar="DIR", required=True,
        help="output directory (created; its metrics.json and latent.png are replaced)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument(
        "--max-epochs", type=int, metavar="N",
        help="training epochs (default: size-aware default with early stopping)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the training progress bar")
    p.add_argument("--data-path", metavar="DIR",
                   help="data root (default: $TRANSMODAL_DATA, else ../shared/data)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from . import _commands as c

    from ..nn._registry import import_modules

    imports = [*(args.imports_before or ()), *(getattr(args, "imports", None) or ())]
    import_modules(imports)

    if args.command == "train":
        return c.cmd_train(args.config, out=args.out, overwrite=args.overwrite,
                           resume=args.resume, imports=imports)
    if args.command == "embed":
        return c.cmd_embed(
            args.model, args.data, args.out, modality=args.modality, key=args.key,
            overwrite=args.overwrite,
        )
    if args.command == "translate":
        return c.cmd_translate(
            args.model, args.data, args.source, args.target, args.out,
            library_size=args.library_size, overwrite=args.overwrite,
            target_batch=args.target_batch,
        )
    if args.command == "evaluate":
        return c.cmd_evaluate(
            args.model, args.data, args.source, args.target, labels_key=args.labels_key,
            out=args.out, overwrite=args.overwrite, train_data=args.train_data,
        )
    if args.command == "demo":
        return c.cmd_demo(
            args.out, seed=args.seed, max_epochs=args.max_epochs,
            progress_bar=not args.no_progress, data_path=args.data_path,
        )
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and len(err.args) == 1:
        msg = str(err.args[0])  # str(KeyError) adds quotes
    elif isinstance(err, OSError) and err.filename is not None and err.strerror:
        msg = f"{err.strerror}: {err.filename}"
    else:
        msg = str(err)
    msg = " ".join(part.strip() for part in msg.splitlines() if part.strip())
    # (the library's advice in the command line's terms)
    msg = msg.replace("pass overwrite=True", "pass --overwrite")
    return msg or type(err).__name__


@contextlib.contextmanager
def _warnings_as_lines(traceback: bool) -> Iterator[None]:
    """Print warnings as one line each, ``transmodal: warning: ...`` (the category named
    unless it is a UserWarning), without the file and line that Python adds: from a command
    line they point into the library. Only the formatting changes, so a caller that records
    warnings still gets them; ``--traceback`` keeps Python's form."""
    if traceback:
        yield
        return

    def one_line(message, category, filename, lineno, line=None) -> str:
        kind = "" if category is UserWarning else f"{category.__name__}: "
        return f"{PROG}: warning: {kind}{' '.join(str(message).split())}\n"

    saved = warnings.formatwarning
    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = saved


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` within the block (main thread only)."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:  # the caller ignores SIGTERM (nohup-like): so do we
        yield
        return
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def console() -> NoReturn:
    """The ``transmodal`` executable (and ``python -m transmodal``): :func:`main`'s exit
    code, with stdout flushed first; where its reader has gone (``| head``), stdout is
    pointed at ``os.devnull`` so that Python exits without a broken-pipe error, as Python's
    documentation advises, just before the process exits (:func:`main` called from a
    program leaves the program's stdout as it is)."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        code = code or 1
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``transmodal`` command; returns the exit code.

    User errors (invalid config, missing files, unknown modality names, existing outputs)
    print ``transmodal: error: ...`` on one line to stderr and return 2; Ctrl+C returns 130
    and SIGTERM 143 (the shell's codes), unfinished outputs removed; ``--help`` and
    argument errors exit through :class:`SystemExit` as usual with argparse.
    """
    import yaml

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with _sigterm_raises(), _warnings_as_lines(args.traceback):
            return _run(args)
    except BrokenPipeError:  # stdout's reader stopped early (| head): quiet (see console)
        return 1
    except (*USER_ERRORS, yaml.YAMLError) as err:
        if args.traceback:
            raise
        print(f"{PROG}: error: {_message(err)}", file=sys.stderr)
        return 2
    except Terminated as err:  # SIGTERM: as Ctrl+C, nothing partial is left
        if args.traceback:
            raise
        print(f"{PROG}: {str(err) or 'terminated'}", file=sys.stderr)  # (a training: how far)
        if callable(signal.getsignal(signal.SIGTERM)):  # called in a program with its own
            signal.raise_signal(signal.SIGTERM)  # handler (restored): it gets the signal
        return 143  # the shell's code for SIGTERM
    except KeyboardInterrupt as err:  # Ctrl+C; each output is written atomically: none is partial
        if args.traceback:
            raise
        print(f"{PROG}: {str(err) or 'interrupted'}", file=sys.stderr)
        return 130
