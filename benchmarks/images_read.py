"""Crop extraction for the whole DSB2018 fluorescence folder (541 images, 23,096 nuclei).

Prints one JSON line: seconds (reading, morphology and crops; the package import is timed
separately), nuclei seen / kept / dropped, crop array size and peak RSS (MiB, from
``resource.getrusage``, the package import included). With ``--radial`` it also times the radial
profiles of all kept nuclei.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/images_read.py --crop-size 64
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from _runs import json_line


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crop-size", type=int, default=64,
                   help="crop edge in pixels (default 64; larger nuclei are downscaled to fit)")
    p.add_argument("--min-area", type=int, default=30,
                   help="drop nuclei with fewer pixels than this (default 30)")
    p.add_argument("--keep-border", action="store_true", help="do not drop border-touching nuclei")
    p.add_argument("--radial", action="store_true", help="also time radial_profiles on the crops")
    p.add_argument("--data", default=None, help="data root (default $TRANSMODAL_DATA)")
    args = p.parse_args()

    t0 = time.perf_counter()
    import transmodal as tm
    import transmodal.images  # noqa: F401 - (``import transmodal`` alone imports it lazily)

    t_import = time.perf_counter() - t0
    rss_import = _peak_rss_mib()
    t0 = time.perf_counter()
    nuclei = tm.images.dsb2018_nuclei(
        args.data, crop_size=args.crop_size, min_area=args.min_area, exclude_border=not args.keep_border
    )
    seconds = time.perf_counter() - t0
    crops = nuclei.obsm["crops"]
    result = {
        "dataset": "nuclei_dsb2018_fluo",
        "crop_size": args.crop_size,
        "seconds": round(seconds, 2),
        **{k: v for k, v in nuclei.uns["nuclei_filter"].items() if k.startswith("n_")},
        "n_downscaled": int((nuclei.obs["crop_scale"] < 1).sum()),
        "crops_mib": round((crops.nbytes + nuclei.obsm["masks"].nbytes) / 2**20, 1),
        "import_seconds": round(t_import, 2),
        "import_peak_rss_mib": round(rss_import, 1),
    }
    if args.radial:
        t0 = time.perf_counter()
        tm.images.radial_profiles(nuclei)
        result["radial_seconds"] = round(time.perf_counter() - t0, 2)
    result["peak_rss_mib"] = round(_peak_rss_mib(), 1)
    print(json_line(result))


if __name__ == "__main__":
    main()
