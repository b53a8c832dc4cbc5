"""Images against their own radial profiles: DSB2018 nuclei with known pairs.

Default: both autoencoders aligned to each other (``prior="learned"``) with 16 image-private
latent dimensions (orientation and shape details that the profile cannot explain), all 80
epochs (no early stopping; ``--patience``); ``--prior anchor:image`` is the paper's order
(pre-train the image autoencoder alone, then align the profile autoencoder to its latent
space).
Modality ``image`` = the masked, max-normalised crop of every nucleus
(:func:`transmodal.images.dsb2018_nuclei`); modality ``profile`` = the same nucleus's radial
chromatin profile (10 bins) plus morphology (log area, perimeter, axis lengths, mean and
integrated intensity; eccentricity, solidity), so the true pairs are known. Train / test are
split by image (20 % of the images, seeded), never by nucleus. Per (anchor fraction, seed) one
JSON line with, on the test nuclei: FOSCTTM; partner-in-top-k matching (k = 1, 5, 50) and the
paper's k-NN accuracy (L1, k = 5 / 50); image reconstruction MSE and SSIM
(:func:`skimage.metrics.structural_similarity`, data range 1); profile -> image SSIM / MSE of
translated against real crops; image -> profile per-nucleus Pearson over the 10 profile bins
(and of the mean training profile, the baseline); seconds and peak RSS. Writes a gallery
(real / reconstructed / translated from the profile) to ``benchmarks/out/nuclei_gallery.png``.

    .venv/bin/python benchmarks/nuclei_image_profile.py --fractions 0 0.1 --seeds 0
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import transmodal as tm
from transmodal.workflows._demo import peak_rss_mib
from _runs import json_line

# the benchmark's default setting, shared by run() and the command line
CHANNELS = (16, 32, 64)
N_PRIVATE = 16
PRIOR = "learned"
PATIENCE = 0  # no early stopping: all --max-epochs (early stops cost up to 0.05 SSIM)

MORPHOLOGY_LOG = (
    "area", "perimeter", "axis_major_length", "axis_minor_length",
    "mean_intensity", "integrated_intensity",
)
MORPHOLOGY = ("eccentricity", "solidity")


def load(crop_size: int) -> tuple[ad.AnnData, ad.AnnData]:
    """``(image, profile)`` AnnData objects of every kept nucleus, equal ``obs_names``."""
    nuclei = tm.images.dsb2018_nuclei(crop_size=crop_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nuclei without signal: dropped below
        prof = tm.images.radial_profiles(nuclei)
    ok = np.isfinite(prof.X).all(1)
    obs = nuclei.obs[ok]
    feats = [prof.X[ok]]
    names = list(prof.var_names)
    for col in MORPHOLOGY_LOG:
        feats.append(np.log1p(obs[[col]].to_numpy(dtype=np.float64)))
        names.append(f"log_{col}")
    for col in MORPHOLOGY:
        feats.append(obs[[col]].to_numpy(dtype=np.float64))
        names.append(col)
    profile = ad.AnnData(
        np.hstack(feats).astype(np.float32), obs=obs.copy(), var=pd.DataFrame(index=names)
    )
    image = ad.AnnData(np.zeros((int(ok.sum()), 0), np.float32), obs=obs.copy())
    image.obsm["crops"] = nuclei.obsm["crops"][ok]
    return image, profile


def split_by_image(obs: pd.DataFrame, seed: int, test_fraction: float = 0.2) -> np.ndarray:
    """Boolean test mask: every nucleus of a seeded 20 % of the images."""
    ids = np.asarray(sorted(obs["image_id"].astype(str).unique()))
    rng = np.random.default_rng(seed)
    test_ids = rng.choice(ids, size=max(1, round(test_fraction * len(ids))), replace=False)
    return obs["image_id"].astype(str).isin(test_ids).to_numpy()


def ssim_mse(pred: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import structural_similarity

    p, r = pred[:, 0], real[:, 0]
    ssim = np.mean([structural_similarity(a, b, data_range=1.0) for a, b in zip(p, r)])
    return float(ssim), float(np.mean((p - r) ** 2))


def run(
    image, profile, fraction: float, seed: int, max_epochs: int, out_dir: Path,
    channels: tuple[int, ...] = CHANNELS,
    n_private: int = N_PRIVATE,
    prior: str = PRIOR,
    pretrain_epochs: int | None = None,
    patience: int | None = PATIENCE,  # None: the library's early stopping; 0: none
    anchor_distance: str = "l1",
) -> dict:
    test = split_by_image(image.obs, seed)
    tr = {"image": image[~test].copy(), "profile": profile[~test].copy()}
    te_img, te_prof = image[test].copy(), profile[test].copy()
    t0 = time.perf_counter()
    model = tm.CrossModalAE(
        tr,
        {
            "image": tm.Modality("gaussian", obsm_key="crops", hidden=channels),
            "profile": tm.Modality("gaussian"),
        },
        n_latent=16,
        n_private=n_private,
        prior=prior,
        anchor_fraction=fraction,
        seed=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # separability is reported as a number
        model.train(max_epochs=max_epochs, pretrain_epochs=pretrain_epochs, progress_bar=False,
                    early_stopping=patience != 0, patience=patience or None,
                    anchor_distance=anchor_distance)
    seconds = time.perf_counter() - t0
    za = model.get_latent_representation("image", te_img)
    zb = model.get_latent_representation("profile", te_prof)
    top = tm.metrics.partner_in_top_k(za, zb, k=(1, 5, 50))
    knn, chance = tm.metrics.knn_accuracy_and_chance(za, zb, k=(5, 50))
    real = te_img.obsm["crops"]
    recon = model.translate(te_img, source="image", target="image").obsm["crops"]
    from_profile = model.translate(te_prof, source="profile", target="image").obsm["crops"]
    to_profile = model.translate(te_img, source="image", target="profile").X
    n_bins = 10
    pear = tm.metrics.translation_pearson(to_profile[:, :n_bins], te_prof.X[:, :n_bins])
    base = tm.metrics.translation_pearson(
        np.broadcast_to(tr["profile"].X[:, :n_bins].mean(0), (te_prof.n_obs, n_bins)),
        te_prof.X[:, :n_bins],
    )
    rec_ssim, rec_mse = ssim_mse(recon, real)
    tr_ssim, tr_mse = ssim_mse(from_profile, real)
    if fraction > 0 and seed == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        tm.pl.gallery(
            {"real": real, "reconstructed": recon, "from profile": from_profile},
            n=10,
            path=out_dir / "nuclei_gallery.png",
        )
    res = {
        "anchor_fraction": fraction,
        "seed": seed,
        "n_train": int((~test).sum()),
        "n_test": int(test.sum()),
        "crop": list(real.shape[1:]),
        "channels": list(channels),
        "n_private": n_private,
        "prior": prior,
        "anchor_distance": anchor_distance,
        "epochs": int(model.train_params_["epochs_run"]),
        "patience": model.train_params_["patience"] if model.train_params_["early_stopping"] else 0,
        "pretrain_epochs": int(model.train_params_["pretrain_epochs"]),
        "foscttm": tm.metrics.foscttm(za, zb),
        "partner_top1": top[1],
        "partner_top5": top[5],
        "partner_top50": top[50],
        "knn_acc_l1_5": knn["mean"][5],
        "knn_acc_l1_50": knn["mean"][50],
        "knn_chance_l1_5": chance["mean"][5],
        "knn_chance_l1_50": chance["mean"][50],
        "recon_ssim": rec_ssim,
        "recon_mse": rec_mse,
        "profile_to_image_ssim": tr_ssim,
        "profile_to_image_mse": tr_mse,
        "image_to_profile_pearson": float(np.nanmean(pear)),
        "baseline_profile_pearson": float(np.nanmean(base)),
        "mixing_accuracy": model.mixing_accuracy_,
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
    }
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.1],
                    help="anchor fractions: share of the training nuclei given as known pairs "
                    "(default: 0 0.1)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="seeds of the train / test split and the model, one run each per "
                    "fraction (default: 0)")
    ap.add_argument("--crop-size", type=int, default=32,
                    help="crop edge of the image modality in pixels (default 32)")
    ap.add_argument("--max-epochs", type=int, default=80,
                    help="training epochs (default 80, all of them unless --patience turns on "
                    "early stopping)")
    ap.add_argument("--channels", type=int, nargs="+", default=list(CHANNELS),
                    help="channels of the convolution stages of the image autoencoder")
    ap.add_argument("--n-private", type=int, default=N_PRIVATE,
                    help="modality-private latent dimensions (shape / orientation of the image)")
    ap.add_argument("--prior", default=PRIOR,
                    help="'learned' or 'anchor:image' (the paper: pre-train the image "
                    "autoencoder, then align the profiles to it)")
    ap.add_argument("--pretrain-epochs", type=int, default=None,
                    help="epochs of image-only pre-training with the anchor prior "
                    "(default: the library's, a quarter of --max-epochs)")
    ap.add_argument("--patience", type=int, default=PATIENCE,
                    help="early-stopping patience in epochs (0: none, train all --max-epochs; "
                    "-1: the library's default)")
    ap.add_argument("--anchor-distance", default="l1", choices=["l1", "l2", "contrastive"],
                    help="anchor loss of the known pairs (train(anchor_distance=...))")
    ap.add_argument("--out", default="benchmarks/out",
                    help="directory of nuclei_gallery.png (written by the seed-0 runs with "
                    "anchors)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    image, profile = load(args.crop_size)
    print(f"loaded {image.n_obs} nuclei in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
          flush=True)
    for seed in args.seeds:
        for fraction in args.fractions:
            print(json_line(run(image, profile, fraction, seed, args.max_epochs, Path(args.out),
                                 tuple(args.channels), args.n_private, args.prior,
                                 args.pretrain_epochs,
                                 None if args.patience < 0 else args.patience,
                                 args.anchor_distance)),
                  flush=True)


if __name__ == "__main__":
    main()
