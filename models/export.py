"""``python -m skyclear.models.export RUNDIR --out FILE.onnx``: export a trained run with its card.

The run's ``config.json`` names its ``kind``; that trainer's ``export(run_dir, out, args)``
writes the ONNX file(s) and reports the ONNX-vs-torch agreement.
"""
import argparse
import json
import os
import sys

from .train import trainer_module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyclear.models.export", description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--sample", help="a real sample (folder or file) to check ONNX vs torch on")
    args = parser.parse_args(argv)
    config_path = os.path.join(args.run_dir, "config.json")
    if not os.path.exists(config_path):
        raise SystemExit(f"{args.run_dir} is not a run folder (no config.json)")
    with open(config_path) as f:
        kind = json.load(f)["kind"]
    trainer_module(kind).export(args.run_dir, args.out, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
