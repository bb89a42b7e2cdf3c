"""The one place that fixes which SEN12MS-CR samples are held out for evaluation.

The 15 triplets in ``../shared/data/sen12mscr/`` are split once and for all:

- ``HELDOUT``: 4 samples the models never see (not in training, not in validation, not
  used for early stopping). Chosen for a mix of cloud fractions (mask mean in brackets):
  0581 (0.31), 5278 (0.61), 6317 (0.80), 6780 (1.00).
- ``VALIDATION``: 1 sample used for the validation curve during training (4065, 0.70).
- everything else (10 samples) is training data, also the only source of cloud layers
  and clear backgrounds for synthetic cloud compositing.
"""
from __future__ import annotations

from typing import Iterable, List

HELDOUT = ("oriolac_0581", "oriolac_5278", "oriolac_6317", "oriolac_6780")
VALIDATION = ("oriolac_4065",)


def split_ids(ids: Iterable[str]):
    """Return (train, val, heldout) lists of sample ids, in sorted order.

    Ids not in the fixed lists are training data. If a data folder has none of the
    validation ids (e.g. the official SEN12MS-CR layout), every 10th sample is used
    for validation; held-out ids are always excluded from training and validation.
    """
    ids = sorted(ids)
    heldout = [i for i in ids if i in HELDOUT]
    val = [i for i in ids if i in VALIDATION]
    rest = [i for i in ids if i not in HELDOUT and i not in VALIDATION]
    if not val and len(rest) >= 2:
        val = rest[::10]
        rest = [i for i in rest if i not in val]
    return rest, val, heldout


def heldout_ids() -> List[str]:
    return list(HELDOUT)
