"""Build ``skyclear-<version>.zip`` in the layout the QGIS plugin repository expects.

    python scripts/package.py [--out DIR]

The zip holds one folder, ``skyclear/``, with the plugin code (``plugin/``, ``ui/``), the
bundled models (``models/zoo``), icons, metadata, README and LICENSE: what *Install from
ZIP* needs, and nothing of the development tree (tests, benchmarks, training code, venv).
The build refuses metadata without the fields the repository requires, or a changelog
whose newest entry is not this version.
"""
from __future__ import annotations

import argparse
import configparser
import os
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ["__init__.py", "metadata.txt", "LICENSE", "README.md", "resources.qrc", "icons", "plugin", "ui",
           "models/zoo"]
SKIP_SUFFIXES = {".pyc", ".pyo"}
REQUIRED = ["name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository"]


def read_metadata(root: Path = ROOT) -> dict:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(root / "metadata.txt", encoding="utf-8")
    meta = dict(parser["general"])
    missing = [key for key in REQUIRED if not meta.get(key.lower())]
    if missing:
        raise SystemExit(f"metadata.txt lacks {', '.join(missing)}")
    entries = [line.strip() for line in meta.get("changelog", "").splitlines() if line.strip()]
    if not entries or not entries[0].startswith(meta["version"]):
        raise SystemExit(f"metadata.txt: the changelog's first entry must describe version {meta['version']}")
    return meta


def plugin_files(root: Path = ROOT):
    for entry in INCLUDE:
        path = root / entry
        if not path.exists():
            raise SystemExit(f"missing {entry}")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix in SKIP_SUFFIXES:
                continue
            yield file


def build(out_dir: Path, root: Path = ROOT) -> Path:
    meta = read_metadata(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"skyclear-{meta['version']}.zip"
    tmp = target.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in plugin_files(root):
            zf.write(file, "skyclear/" + file.relative_to(root).as_posix())
    os.replace(tmp, target)
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "dist"))
    args = parser.parse_args(argv)
    target = build(Path(args.out))
    with zipfile.ZipFile(target) as zf:
        size = sum(info.file_size for info in zf.infolist())
        print(f"{target} ({len(zf.namelist())} files, {size / 1e6:.1f} MB unpacked, "
              f"{target.stat().st_size / 1e6:.1f} MB zipped)")


if __name__ == "__main__":
    sys.exit(main())
