"""The optical tool outside its training data: PSNR (uint8, range 255) of the cloudy input, the
reference network E and DE (the card's steps and samples) against the clear image, on the thin-cloud pairs
of ../shared/data/thin_cloud (not RICE), run as the tool runs them.

    python benchmarks/optical_outside_rice.py [--data ../shared/data/thin_cloud]
"""
import argparse
import glob
import os
import sys
import tempfile

import rasterio

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "thin_cloud"))
    args = parser.parse_args()
    from skyclear.plugin.core import jobs
    from skyclear.plugin.core.metrics.restoration import psnr   # the quality benchmarks' PSNR

    pairs = sorted(glob.glob(os.path.join(args.data, "*_cloudy.tif")))
    if not pairs:
        sys.exit(f"no *_cloudy.tif pairs in {args.data}")
    print("| pair | cloudy input | reference E | DE |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for cloudy in pairs:
            with rasterio.open(cloudy.replace("_cloudy.tif", "_clear.tif")) as ds:
                clear = ds.read()
            images = [cloudy]
            for mode in ("reference", "diffusion"):
                out = os.path.join(tmp, f"{mode}.tif")
                jobs.remove_clouds_optical(optical=cloudy, output=out, mode=mode, device="cpu")
                images.append(out)
            scores = []
            for path in images:
                with rasterio.open(path) as ds:
                    scores.append(psnr(ds.read(), clear, 255.0))
            name = os.path.basename(cloudy)[:-len("_cloudy.tif")]
            print(f"| {name} | " + " | ".join(f"{s:.2f}" for s in scores) + " |", flush=True)


if __name__ == "__main__":
    main()
