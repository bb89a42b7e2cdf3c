"""The one place where held-out and validation pairs are named.

Held-out RICE pairs are never used for training by any ``de-*`` stage; the quality benchmark
(``benchmarks/quality_optical_cloud_removal.py``) evaluates on exactly these pairs.
Rule used to pick them (fixed once, then written out): sort the ids of each folder
numerically and take every 8th id starting with the 4th.

Validation pairs choose checkpoints and sampler settings (eta, t0) and are not trained on
either; rule: of the remaining ids of a folder, sorted numerically, every 10th starting with
the 5th. Folders not listed here have no held-out pairs and use that rule for validation.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

HELD_OUT: Dict[str, List[str]] = {
    # RICE1 (thin clouds): 10 of 80 pairs
    "rice1": ["32", "85", "136", "184", "233", "270", "313", "361", "406", "479"],
    # RICE2 (thick clouds and shadows): 15 of 116 pairs
    "rice2": ["35", "77", "122", "215", "281", "323", "363", "410", "441", "486",
              "538", "576", "620", "678", "733"],
}


def dataset_name(root: str) -> str:
    return os.path.basename(os.path.normpath(root))


def is_held_out(root: str, pair_id: str) -> bool:
    return pair_id in HELD_OUT.get(dataset_name(root), ())


def validation_ids(root: str, pair_ids: Sequence[str]) -> List[str]:
    """The validation ids among ``pair_ids`` (all ids of one folder, in any order)."""
    rest = sorted((i for i in pair_ids if not is_held_out(root, i)),
                  key=lambda i: (0, int(i), "") if i.isdigit() else (1, 0, i))
    return rest[4::10]
