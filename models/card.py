"""Command line for model cards: ``python -m skyclear.models.card show|validate|write|example``."""
import argparse
import json
import sys

from ..plugin.core.errors import ModelCardError
from ..plugin.core.model_card import parse_card, read_card, write_card

EXAMPLE = {
    "schema_version": 1,
    "name": "example-identity",
    "version": "1.0.0",
    "task": "generic",
    "description": "Copies the three RGB bands through unchanged.",
    "inputs": [{"name": "optical", "role": "optical",
                "bands": [{"name": b, "clip": [0, 255], "scale": 255.0, "offset": 0.0} for b in "RGB"]}],
    "outputs": [{"name": "restored", "dtype": "uint8", "nodata": 0,
                 "bands": [{"name": b, "clip": [0, 255], "scale": 255.0, "offset": 0.0} for b in "RGB"]}],
    "tiling": {"tile_size": 256, "size_multiple": 1, "default_overlap": 32},
    "training": {"data": "none", "steps": 0, "metrics": {}},
    "license": "CC0-1.0",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyclear.models.card", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="print the card of an ONNX file as JSON").add_argument("model")
    sub.add_parser("validate", help="check the card of an ONNX file (exit 1 if invalid)").add_argument("model")
    write = sub.add_parser("write", help="validate a card JSON and store it in an ONNX file")
    write.add_argument("model")
    write.add_argument("card_json")
    sub.add_parser("example", help="print an example card")
    args = parser.parse_args(argv)
    try:
        if args.command == "example":
            print(json.dumps(EXAMPLE, indent=2))
        elif args.command == "show":
            print(json.dumps(read_card(args.model).to_dict(), indent=2, sort_keys=True))
        elif args.command == "validate":
            card = read_card(args.model)
            print(f"OK: {args.model}: {card.name} {card.version} ({card.task}), card sha256 {card.sha256[:12]}")
        elif args.command == "write":
            with open(args.card_json) as f:
                card = json.load(f)
            parse_card(card)
            write_card(args.model, card)
            read_card(args.model)
            print(f"wrote card to {args.model}")
    except ModelCardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
