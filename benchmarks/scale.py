"""Scale: overhead against a bare torch loop, a million cells from backed h5ad, OT at 10^4.

Parts (each runs in its own subprocess; its peak RSS is that child's own, from
``os.wait4``; one JSON line per part):

- ``gen``: :func:`transmodal.datasets.synthetic` written straight to .h5ad
  (``out=``): ``--n-cells`` cells x 2,000 genes (NB counts) + the same cells x 5,000
  peaks (binary), CSR on disk. Seconds, peak RSS, file sizes.
- ``a``: training throughput (cells/s) of ``CrossModalAE.train`` on in-memory data
  (``--a-cells`` cells, the same 2,000 + 5,000 features, dense and CSR) against a bare torch
  loop over the same networks (a fresh copy of the model's module, same initial weights):
  the same losses, batch size, (fused) Adam optimisers and number of steps, on dense torch
  tensors, in the same process. Repeated ``--repeats`` times, best time of each; ratio = library /
  bare cells per second. ``cells`` count every modality's cells of a step. With
  ``--accelerator gpu`` both train on the first CUDA GPU, the data staying in host memory
  (the bare loop copies each batch from pinned memory).
- ``b``: one training epoch over the ``gen`` files opened lazily
  (:func:`transmodal.datasets.read_backed`): seconds for the setup (value scan,
  preprocessing fit) and the epoch, peak RSS; the model is saved for ``c``.
- ``c``: embedding of all cells of both modalities, streamed to .h5ad
  (``get_latent_representation(..., out=)``), then FOSCTTM, partner top-k and 5-NN label
  transfer. Exact FOSCTTM costs O(n^2) distances (10^12 at 10^6 cells, hours on 2 cores),
  so with more than ``--queries`` cells it is estimated from ``--queries`` random cells per
  direction, each ranked against *all* cells of the other modality (unbiased; the standard
  error is reported); label transfer queries the same cells against all reference cells.
- ``d``: at ``--d-cells`` cells (pairs hidden, unlabelled: the ``syn_clusters`` setting
  of ``benchmarks/unpaired.py``): wall time and FOSCTTM of the library (``--d-epochs``).
- ``d_ot``: the same data through :class:`~transmodal.baselines.GromovWassersteinOT`
  (entropic Gromov-Wasserstein, POT, SCOT's settings) in its own process; with
  ``--ot-max-iter`` only its first iterations (a lower bound of the time of a full solve that
  needs more, its full memory).
- ``infer``: peak memory of in-memory outputs at ``--infer-cells`` new cells (a model of
  500 + 1,000 features trained one epoch on 2,000 cells): ``translate`` into 1,000 features
  and a two-member :class:`~transmodal.Ensemble`'s ``translate``, each as the rise of RSS
  during the call (sampled every 5 ms) against the size of the output; and
  :func:`transmodal.images.cluster_profiles` of ``--cluster-profiles`` random 10-bin
  profiles against the size of the condensed distances that complete linkage needs.
- ``evaluate``: seconds of :func:`transmodal.workflows.evaluate_paired` (labels given) on
  ``--eval-cells`` new paired cells (a model like ``infer``'s), and its metrics.
- ``batch_mmd``: seconds per training epoch with and without ``train(lam_batch=1)`` at
  ``--mmd-cells`` cells whose RNA comes from each of ``--mmd-batches`` numbers of batches
  (samples of an atlas).
- ``wide``: fitting the preprocessing (library size, scaling, ``--wide-pca`` components) of
  a wide sparse binary matrix (``--wide-cells`` x ``--wide-features``, in memory): seconds
  and peak RSS against the sizes of the sparse and of the dense matrix.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --parts a d d_ot --d-cells 2000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --parts d d_ot --ot-max-iter 11
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --parts gen b c --n-cells 1000000 \\
        --workdir /tmp/tm_scale --cleanup
    .venv/bin/python benchmarks/scale.py --parts a --accelerator gpu --batch-size 1024
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --parts wide
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --parts infer
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --parts evaluate
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --parts batch_mmd
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from _runs import json_line

PARTS = ("gen", "a", "b", "c", "d", "d_ot", "wide", "infer", "evaluate", "batch_mmd")
FEATURES = {"rna": 2000, "atac": 5000}
SPECS = {"rna": "nb", "atac": "bernoulli"}
N_LATENT = 16


def _modalities():
    import transmodal as tm

    return {k: tm.Modality(v) for k, v in SPECS.items()}


def _paths(workdir: str) -> dict[str, str]:
    return {k: os.path.join(workdir, "data", f"{k}.h5ad") for k in SPECS}


def _round(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


# ------------------------------------------------------------------------------ gen
def part_gen(args) -> dict:
    import transmodal as tm

    t0 = time.perf_counter()
    tm.datasets.synthetic(
        args.n_cells, n_features=FEATURES, seed=args.seed, out=os.path.join(args.workdir, "data"),
        overwrite=True,
    )
    seconds = time.perf_counter() - t0
    sizes = {k: os.path.getsize(p) / 2**30 for k, p in _paths(args.workdir).items()}
    return {"n_cells": args.n_cells, "features": FEATURES, "seconds": seconds,
            "file_gib": {k: round(v, 3) for k, v in sizes.items()}}


# ------------------------------------------------------------------------------ a
def _device(args):
    """The device of ``--accelerator`` (a clear error when CUDA is asked for but missing)."""
    from transmodal._utils import resolve_device

    return resolve_device("cuda" if args.accelerator == "gpu" else "cpu")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _warm_up(device) -> None:
    """Start CUDA and its matrix library before anything is timed (otherwise the first
    timed run, the library's dense one, pays their start-up of about a second)."""
    import torch

    if device.type == "cuda":
        w = torch.randn(256, 256, device=device, requires_grad=True)
        (w @ w).sum().backward()
        _sync(device)


def _bare_loop(module, data: dict, *, steps: int, batch_size: int, seed: int, device) -> float:
    """The library's default training step in plain torch; returns seconds. ``data`` stays
    where it is (host memory, like the library's): each batch is copied to ``device``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    module.to(device)
    pin = device.type == "cuda"
    ae = [p for n, p in module.named_parameters() if not n.startswith("discriminator.")]
    # (fused, as the library's: one kernel per step where the device has it)
    opt_ae = torch.optim.Adam(ae, lr=1e-3, fused=True)
    opt_d = torch.optim.Adam(module.discriminator.parameters(), lr=1e-3, fused=True)
    module.train()
    names = list(data)
    n = {k: v.shape[0] for k, v in data.items()}
    perms = {k: torch.randperm(n[k], generator=gen) for k in names}
    pos = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + batch_size > max(n.values()):
            perms = {k: torch.randperm(n[k], generator=gen) for k in names}
            pos = 0
        zs, recon = {}, []
        for k in names:
            x = data[k][perms[k][pos : pos + batch_size]]
            x = (x.pin_memory() if pin else x).to(device, non_blocking=pin)
            z, nll, _ = module.reconstruction(k, x)
            zs[k] = z
            recon.append(nll.mean())
        pos += batch_size
        objective = torch.stack(recon).sum()
        objective = objective + torch.stack([z.pow(2).mean() for z in zs.values()]).mean()
        detached = {k: z.detach() for k, z in zs.items()}
        d_loss, _ = module.discriminator_loss(detached, {}, {})
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        adv = torch.stack([module.adversarial_loss(k, zs[k], None, None, None) for k in names])
        objective = objective + adv.mean() + module.mmd_loss(zs)
        opt_ae.zero_grad(set_to_none=True)
        objective.backward()
        opt_ae.step()
    _sync(device)
    return time.perf_counter() - t0


def part_a(args) -> dict:
    import torch

    import transmodal as tm
    import transmodal.train as train_mod  # CrossModalAE.train imports run_training from it

    data = tm.datasets.synthetic(args.a_cells, n_features=FEATURES, seed=args.seed)
    dense = {}
    for k, a in data.items():
        b = a.copy()
        b.X = a.X.toarray()
        if "counts" in b.layers:
            del b.layers["counts"]
        dense[k] = b
    tensors = {k: torch.from_numpy(np.ascontiguousarray(a.X)) for k, a in dense.items()}

    loop_seconds: list[float] = []
    real_run = train_mod.run_training

    def timed_run(*a, **kw):  # the training loop alone, without setup and the final check
        t = time.perf_counter()
        try:
            return real_run(*a, **kw)
        finally:
            loop_seconds.append(time.perf_counter() - t)

    train_mod.run_training = timed_run

    def make(d):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tm.CrossModalAE(d, modalities=_modalities(), n_latent=N_LATENT,
                                   validation_fraction=0.0, seed=args.seed,
                                   geometric_pairs=False)  # throughput: no setup transport

    batch = args.batch_size
    device = _device(args)
    _warm_up(device)
    steps = math.ceil(args.a_cells / batch) * args.a_epochs
    cells = steps * batch * len(SPECS)
    res: dict[str, list[float]] = {"library_dense": [], "library_csr": [], "library_dense_loop": [],
                                   "library_csr_loop": [], "bare": []}
    for _ in range(args.repeats):
        for name, d in (("dense", dense), ("csr", data)):
            model = make(d)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.train(max_epochs=args.a_epochs, batch_size=batch, early_stopping=False,
                            progress_bar=False, accelerator=args.accelerator)
            res[f"library_{name}"].append(time.perf_counter() - t0)
            res[f"library_{name}_loop"].append(loop_seconds[-1])
        module = make(dense).module  # the same initial weights as the library's runs
        res["bare"].append(_bare_loop(module, tensors, steps=steps, batch_size=batch,
                                      seed=args.seed, device=device))
    train_mod.run_training = real_run
    best = {k: min(v) for k, v in res.items()}
    rate = {k: cells / v for k, v in best.items()}
    return {
        "n_cells": args.a_cells, "features": FEATURES, "batch_size": batch, "steps": steps,
        "accelerator": args.accelerator,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "epochs": args.a_epochs, "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
        "bare_cells_per_s": rate["bare"],
        "library_dense_cells_per_s": rate["library_dense"],
        "library_csr_cells_per_s": rate["library_csr"],
        "ratio_dense": rate["library_dense"] / rate["bare"],
        "ratio_csr": rate["library_csr"] / rate["bare"],
        "ratio_dense_loop_only": rate["library_dense_loop"] / rate["bare"],
        "ratio_csr_loop_only": rate["library_csr_loop"] / rate["bare"],
        "seconds": {k: [round(x, 2) for x in v] for k, v in res.items()},
        "note": "ratio: whole train() call (setup of the plan, Lightning, the final mixing "
                "check); *_loop_only: the Lightning fit alone",
    }


# ------------------------------------------------------------------------------ b
def _open(workdir: str):
    import transmodal as tm

    return {k: tm.datasets.read_backed(p) for k, p in _paths(workdir).items()}


def part_b(args) -> dict:
    import transmodal as tm

    data = _open(args.workdir)
    n = {k: a.n_obs for k, a in data.items()}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tm.CrossModalAE(data, modalities=_modalities(), n_latent=N_LATENT, seed=args.seed)
        t1 = time.perf_counter()
        model.train(max_epochs=1, batch_size=args.batch_size, early_stopping=False,
                    progress_bar=False, accelerator=args.accelerator)
    t2 = time.perf_counter()
    model.save(os.path.join(args.workdir, "model"), overwrite=True)
    steps = math.ceil(max(int((~m).sum()) for m in model.val_masks_.values()) / args.batch_size)
    return {"n_cells": n, "batch_size": args.batch_size, "steps": steps,
            "accelerator": args.accelerator,
            "seconds_setup": t1 - t0, "seconds_epoch": t2 - t1,
            "train_cells_per_s": steps * args.batch_size * len(n) / (t2 - t1),
            "history": {k: round(float(v), 4) for k, v in model.history.iloc[-1].items()}}


# ------------------------------------------------------------------------------ c
def _sampled_ranks(q_all: np.ndarray, r_all: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each cell in ``rows``: how many rows of ``r_all`` are strictly closer to
    ``q_all[cell]`` than its partner ``r_all[cell]`` (FOSCTTM's count, all reference rows)."""
    from transmodal.metrics._chunked import _BlockDistance, count_before

    q = np.ascontiguousarray(q_all[rows], dtype=np.float64)
    r = np.ascontiguousarray(r_all, dtype=np.float64)
    dist = _BlockDistance(q, r, "euclidean")
    thr = dist.exact(np.arange(len(rows)), rows)
    return count_before(dist, thr, tie_before=None, exclude=rows, chunk_size=None)


def part_c(args) -> dict:
    import anndata as ad
    from sklearn.neighbors import KNeighborsClassifier

    import transmodal as tm

    data = _open(args.workdir)
    t0 = time.perf_counter()
    model_dir = os.path.join(args.workdir, "model")
    trained = os.path.isdir(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if trained:
            model = tm.CrossModalAE.load(model_dir, data, check_data=False)
        else:  # embedding costs the same for an untrained model
            model = tm.CrossModalAE(data, modalities=_modalities(), n_latent=N_LATENT,
                                    seed=args.seed, check_data=False)
    t1 = time.perf_counter()
    emb = {}
    for k in data:
        path = os.path.join(args.workdir, f"latent_{k}.h5ad")
        model.get_latent_representation(k, out=path, overwrite=True, device=_device(args))
        emb[k] = ad.read_h5ad(path).X  # n x 16 float32: small
    t2 = time.perf_counter()
    x, y = emb["rna"], emb["atac"]
    n = x.shape[0]
    rng = np.random.default_rng(args.seed)
    m = min(args.queries, n)
    exact = m == n
    out: dict = {"n_cells": n, "trained_model": trained, "seconds_load": t1 - t0,
                 "seconds_embed": t2 - t1, "foscttm_queries": m, "foscttm_exact": exact}
    ranks = []
    for q, r in ((x, y), (y, x)):
        rows = np.arange(n) if exact else np.sort(rng.choice(n, m, replace=False))
        ranks.append(_sampled_ranks(q, r, rows))
    frac = np.concatenate(ranks) / (n - 1)
    out["foscttm"] = float(frac.mean())
    out["foscttm_se"] = 0.0 if exact else float(frac.std(ddof=1) / math.sqrt(len(frac)))
    for k in (1, 5, 50):
        out[f"partner_in_top_{k}"] = float(np.mean(np.concatenate(ranks) < k))
    labels = {k: np.asarray(a.obs["label"]).astype(str) for k, a in data.items()}
    lt = []
    for qk, rk in (("rna", "atac"), ("atac", "rna")):
        rows = np.sort(rng.choice(n, m, replace=False))
        clf = KNeighborsClassifier(n_neighbors=5).fit(emb[rk], labels[rk])
        lt.append(float(np.mean(clf.predict(emb[qk][rows]) == labels[qk][rows])))
    out["label_transfer_5nn"] = float(np.mean(lt))
    t3 = time.perf_counter()
    out["seconds_metrics"] = t3 - t2
    out["seconds"] = t3 - t0
    return out


# ------------------------------------------------------------------------------ d
def _d_data(args):
    import transmodal as tm

    data = tm.datasets.synthetic(args.d_cells, seed=args.seed)
    x, y = data["rna"], data["atac"].copy()
    y.obs_names = [f"hidden_{i}" for i in range(y.n_obs)]  # hide the pairing
    return x, y


def part_d(args) -> dict:
    import transmodal as tm
    from transmodal.metrics import foscttm

    x, y = _d_data(args)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tm.CrossModalAE({"x": x, "y": y},
                                modalities={"x": tm.Modality("nb"), "y": tm.Modality("bernoulli")},
                                n_latent=N_LATENT, seed=args.seed)
        model.train(max_epochs=args.d_epochs, progress_bar=False)
    zx, zy = model.get_latent_representation("x"), model.get_latent_representation("y")
    t_lib = time.perf_counter() - t0
    return {"n_cells": args.d_cells, "library_seconds": t_lib, "library_foscttm": foscttm(zx, zy),
            "library_epochs": args.d_epochs}


def part_d_ot(args) -> dict:
    """The OT baseline on part d's data, in its own process (its own peak RSS). With
    ``--ot-max-iter`` the solver stops after that many iterations: its memory is the full
    solve's (every matrix is allocated before iterating), its FOSCTTM that of the plan
    reached so far, and its seconds a lower bound of the full solve's where that needs more
    iterations. (At 3,000 cells the plan's FOSCTTM after 11 iterations is within 0.001 of
    its value after 21.)"""
    import transmodal as tm
    from transmodal.metrics import foscttm

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from unpaired import ot_features

    x, y = _d_data(args)
    kw = {} if args.ot_max_iter is None else {"max_iter": args.ot_max_iter, "n_retries": 0}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns when max_iter ends the solve
        gw = tm.baselines.GromovWassersteinOT(seed=args.seed, **kw).fit(
            ot_features(x, "nb"), ot_features(y, "bernoulli"))
    out = {"n_cells": args.d_cells, "ot_seconds": time.perf_counter() - t0,
           "ot_max_iter": args.ot_max_iter, "ot_foscttm": foscttm(gw.embed_x(), gw.embed_y())}
    return out


# ------------------------------------------------------------------------------ wide
def part_wide(args) -> dict:
    """Fitting the preprocessing of a wide sparse modality: ``--wide-cells`` cells x
    ``--wide-features`` binary features (density ``--wide-density``, CSR in memory), with
    per-feature scaling and ``--wide-pca`` principal components (a scATAC peak matrix).
    Seconds, the peak RSS before the fit (imports and data) and, from the parent, the peak
    RSS of the whole part; the sizes of the sparse and of the dense matrix for comparison."""
    import scipy.sparse as sp

    from transmodal.data import MatrixSource, Modality, fit_preprocessing
    from transmodal.nn import InputTransform
    from transmodal.workflows._demo import peak_rss_mib

    rng = np.random.default_rng(args.seed)
    n, g = args.wide_cells, args.wide_features
    per_row = rng.binomial(g, args.wide_density, size=n)  # features drawn with replacement
    indptr = np.concatenate([[0], np.cumsum(per_row)])
    indices = rng.integers(0, g, size=int(indptr[-1]), dtype=np.int32)
    x = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n, g))
    x.sum_duplicates()
    x.data[:] = 1.0
    before = peak_rss_mib()
    opts = Modality("bernoulli", n_pca=args.wide_pca).resolved()
    t = InputTransform(g, normalize=opts["normalize"], log1p=opts["log1p"],
                       scale=opts["scale"], n_pca=opts["n_pca"])
    t0 = time.perf_counter()
    fit_preprocessing(t, MatrixSource(x, name="atac", where="X"), np.arange(n), seed=args.seed)
    sparse_mib = (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**20
    return {"n_cells": n, "n_features": g, "density": args.wide_density, "n_pca": args.wide_pca,
            "fit_seconds": time.perf_counter() - t0, "sparse_input_mib": sparse_mib,
            "dense_input_mib": n * g * 4 / 2**20, "rss_before_fit_mib": before}


# ------------------------------------------------------------------------------ infer
def _rise_mib(fn) -> tuple[float, float]:
    """``(seconds, MiB)``: the wall time of ``fn()`` and how far the resident memory rose
    above its level at the start (sampled every 5 ms from /proc/self/statm)."""
    import threading

    def current() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    start = current()
    high, done = [start], threading.Event()

    def sample() -> None:
        while not done.is_set():
            high[0] = max(high[0], current())
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    del result
    return seconds, max(high[0], current()) - start


SMALL_FEATURES = {"rna": 500, "atac": 1000}


def _small_model(args, seed: int):
    """A model of ``SMALL_FEATURES`` trained one epoch on 2,000 labelled cells (``infer``,
    ``evaluate``)."""
    import transmodal as tm

    train = tm.datasets.synthetic(2000, n_features=SMALL_FEATURES, seed=args.seed)
    model = tm.CrossModalAE(train, modalities=_modalities(), n_latent=N_LATENT,
                            labels_key="label", seed=seed)
    return model.train(max_epochs=1, progress_bar=False)


def part_evaluate(args) -> dict:
    """Seconds of ``tm.workflows.evaluate_paired`` (labels given) on ``--eval-cells`` new
    paired cells, whose neighbour metrics compare every cell with every other."""
    import transmodal as tm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _small_model(args, args.seed)
        cells = tm.datasets.synthetic(args.eval_cells, n_features=SMALL_FEATURES,
                                      seed=args.seed + 1)
        t0 = time.perf_counter()
        res = tm.workflows.evaluate_paired(model, cells, source="rna", target="atac",
                                          labels_key="label")
    keys = ("foscttm", "partner_top5", "knn_acc_l1_50", "knn_chance_l1_50",
            "cluster_accuracy", "label_transfer")
    return {"n_cells": args.eval_cells, "seconds": time.perf_counter() - t0,
            **{k: res[k] for k in keys}}


def part_infer(args) -> dict:
    """In-memory outputs: RSS rise of translate, Ensemble.translate and cluster_profiles."""
    import gc

    import transmodal as tm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = [_small_model(args, seed) for seed in (0, 1)]
        cells = tm.datasets.synthetic(args.infer_cells, n_features=SMALL_FEATURES,
                                      seed=args.seed + 1)["rna"]
        out_mib = args.infer_cells * SMALL_FEATURES["atac"] * 4 / 2**20
        res: dict = {"n_cells": args.infer_cells, "output_mib": out_mib}
        for name, fn in (
            ("translate", lambda: models[0].translate(cells, source="rna", target="atac")),
            ("ensemble_translate",
             lambda: tm.Ensemble(models).translate(cells, source="rna", target="atac")),
        ):
            gc.collect()
            res[f"{name}_seconds"], res[f"{name}_rise_mib"] = _rise_mib(fn)
    n = args.cluster_profiles
    profiles = np.random.default_rng(args.seed).random((n, 10))
    gc.collect()
    res["cluster_profiles_n"] = n
    res["cluster_condensed_mib"] = n * (n - 1) / 2 * 8 / 2**20
    res["cluster_seconds"], res["cluster_rise_mib"] = _rise_mib(
        lambda: tm.images.cluster_profiles(profiles, n_clusters=4)
    )
    return res


# ------------------------------------------------------------------------------ driver
# ------------------------------------------------------------------------------ batch_mmd
def part_batch_mmd(args) -> dict:
    """Seconds per training epoch with and without the batch MMD (``train(lam_batch=1)``)
    at ``--mmd-cells`` cells whose RNA comes from each of ``--mmd-batches`` numbers of
    batches (100 genes, 120 peaks, all pairs as anchors; the best of ``--repeats``)."""
    import warnings

    import transmodal as tm

    out = {"n_cells": args.mmd_cells, "epochs": args.a_epochs}
    for k in args.mmd_batches:
        data = tm.datasets.synthetic(args.mmd_cells, n_batches={"rna": k},
                                     n_features={"rna": 100, "atac": 120}, seed=args.seed)
        specs = {"rna": tm.Modality("nb", batch_key="batch"), "atac": "bernoulli"}
        for lam in (0.0, 1.0):
            best = math.inf
            for _ in range(args.repeats):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = tm.CrossModalAE(data, specs, anchor_fraction=1.0, n_latent=8,
                                            seed=args.seed)
                    t0 = time.perf_counter()
                    model.train(max_epochs=args.a_epochs, lam_batch=lam, progress_bar=False,
                                early_stopping=False)
                best = min(best, (time.perf_counter() - t0) / args.a_epochs)
            out[f"s_per_epoch_{k}_batches_lam{lam:g}"] = best
    return out


RUNNERS = {"gen": part_gen, "a": part_a, "b": part_b, "c": part_c, "d": part_d,
           "d_ot": part_d_ot, "wide": part_wide, "infer": part_infer, "evaluate": part_evaluate,
           "batch_mmd": part_batch_mmd}


def run_child(part: str, argv: list[str]) -> dict:
    """Run one part in a subprocess; add its own peak RSS (``os.wait4``)."""
    with tempfile.TemporaryFile(mode="w+") as fout, tempfile.TemporaryFile(mode="w+") as ferr:
        proc = subprocess.Popen([sys.executable, __file__, "--one", part, *argv],
                                stdout=fout, stderr=ferr, env=os.environ.copy())
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        ferr.seek(0)
        lines = [ln for ln in fout.read().splitlines() if ln.startswith("{")]
        err = ferr.read().strip().splitlines()
    peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    if proc.returncode or not lines:
        return {"part": part, "error": err[-3:], "returncode": proc.returncode,
                "peak_rss_mib": round(peak, 1)}
    res = json.loads(lines[-1])
    res["peak_rss_mib"] = round(peak, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS,
                    help="parts to run, each in its own subprocess (default: all)")
    ap.add_argument("--n-cells", type=int, default=1_000_000, help="cells per modality (gen, b, c)")
    ap.add_argument("--a-cells", type=int, default=20_000,
                    help="part a: in-memory cells per modality (default 20,000)")
    ap.add_argument("--a-epochs", type=int, default=2,
                    help="parts a, batch_mmd: training epochs per timed run, no early stopping "
                    "(default 2)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="parts a, batch_mmd: timed runs per setting, the best one reported "
                    "(default 2)")
    ap.add_argument("--d-cells", type=int, default=10_000,
                    help="parts d, d_ot: cells per modality, pairs hidden (default 10,000)")
    ap.add_argument("--d-epochs", type=int, default=30,
                    help="part d: the library's max_epochs (default 30; early stopping may end "
                    "it sooner)")
    ap.add_argument("--ot-max-iter", type=int, default=None,
                    help="part d_ot: stop the OT solver after this many iterations (a lower "
                    "bound of the full solve's time where that needs more; same memory)")
    ap.add_argument("--queries", type=int, default=10_000,
                    help="part c: query cells per direction of the FOSCTTM estimate")
    ap.add_argument("--batch-size", type=int, default=128,
                    help="cells per modality per step (a, b)")
    ap.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu",
                    help="train (a, b) and embed (c) on the CPU or the first CUDA GPU")
    ap.add_argument("--wide-cells", type=int, default=10_000,
                    help="part wide: cells (rows) of the sparse binary matrix (default 10,000)")
    ap.add_argument("--wide-features", type=int, default=50_000,
                    help="part wide: features (columns) of the matrix (default 50,000)")
    ap.add_argument("--wide-density", type=float, default=0.02,
                    help="part wide: share of non-zero entries drawn per row, a little less "
                    "after duplicates merge (default 0.02)")
    ap.add_argument("--wide-pca", type=int, default=50,
                    help="part wide: PCA components of the preprocessing fit (default 50)")
    ap.add_argument("--infer-cells", type=int, default=100_000,
                    help="part infer: new cells translated into 1,000 features (default 100,000)")
    ap.add_argument("--eval-cells", type=int, default=20_000,
                    help="part evaluate: new paired cells scored by evaluate_paired "
                    "(default 20,000)")
    ap.add_argument("--mmd-cells", type=int, default=3000,
                    help="part batch_mmd: simulated cells per number of batches (default 3,000)")
    ap.add_argument("--mmd-batches", type=int, nargs="+", default=[5, 60],
                    help="part batch_mmd: numbers of RNA batches, one data set each "
                    "(default: 5 60)")
    ap.add_argument("--cluster-profiles", type=int, default=8_000,
                    help="part infer: random 10-bin profiles given to cluster_profiles "
                    "(default 8,000)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of every part's simulated data and models (default 0)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "transmodal_scale"),
                    help="directory of the gen files and of the model b saves for c (default: "
                    "transmodal_scale in the system's temporary directory)")
    ap.add_argument("--cleanup", action="store_true", help="delete --workdir at the end")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        t0 = time.perf_counter()
        res = RUNNERS[args.one](args)
        res = {"part": args.one, **res, "wall_s": time.perf_counter() - t0}
        print(json_line(_round(res), default=str), flush=True)
        return
    os.makedirs(args.workdir, exist_ok=True)
    argv = [a for a in sys.argv[1:] if a != "--cleanup"]
    failed = 0
    try:
        for part in args.parts:
            res = run_child(part, argv)
            failed += "error" in res
            print(json_line(res), flush=True)
    finally:
        if args.cleanup:
            shutil.rmtree(args.workdir, ignore_errors=True)
    if failed:
        sys.exit(f"scale.py: {failed} part(s) failed (their lines hold the errors)")


if __name__ == "__main__":
    main()
