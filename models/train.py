"""``python -m skyclear.models.train KIND --config CONFIG --data DIR --out RUNDIR [...]``

Each KIND lives in its own module exposing ``add_arguments(parser)`` and ``train(args)``;
they are imported lazily so one trainer's dependencies never load for another.
"""
import argparse
import importlib
import sys

# kind -> module (relative to this package) implementing add_arguments/train/export
TRAINERS = {
    "ibhfn": ".ibhfn.trainer",
    "dsen2cr": ".ibhfn.trainer",
    "de-reference": ".diffusion.trainer",
    "de-cnp": ".diffusion.trainer",
    "de-wa": ".diffusion.trainer",
    "de-joint": ".diffusion.trainer",
    "fusion-cyclegan": ".fusion.trainer",
    "fusion": ".fusion.trainer",
}


def trainer_module(kind: str):
    if kind not in TRAINERS:
        raise SystemExit(f"unknown kind {kind!r}; choose one of {sorted(TRAINERS)}")
    return importlib.import_module(TRAINERS[kind], __package__)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m skyclear.models.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(TRAINERS))
    parser.add_argument("--config", help="JSON config (see models/configs/); keys can be overridden with --set")
    parser.add_argument("--data", required=True, help="data folder")
    parser.add_argument("--out", required=True, help="run folder (created; an existing one is resumed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a config key, e.g. --set steps=20")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-resume", action="store_true", help="start over even if RUNDIR has a checkpoint")
    kind = argv[0] if argv and not argv[0].startswith("-") else None
    if kind in TRAINERS:
        trainer_module(kind).add_arguments(parser)
    args = parser.parse_args(argv)
    trainer_module(args.kind).train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
