"""Fixed held-out SAR–optical pairs for fusion evaluation (never used in training).

Torch-free, so benchmarks can import it. Held out:

* ``cfog``: the bottom third of the CFOG Stest3 scene (rows ``[412, 618)`` of the 618×628
  pair in ``sar_optical/``); training crops come only from rows ``[0, 412 - CFOG_GAP)``,
  so no training pixel touches the held-out strip (``CFOG_GAP`` rows of margin).
* ``sen12mscr``: the samples ``oriolac_1302``, ``oriolac_2729``, ``oriolac_5349``
  (VV of ``s1.tif`` + RGB of ``s2_cloudfree.tif``).

ssl4eo and the remaining 12 sen12mscr samples are training data, with the sources added for
issue 12 (``sar_optical_vsff``, ``bigearthnet_s1s2``, ``sen12ms_s1s2``, the warped
``sar_optical_cfog_cp`` pair).

Validation (``VALIDATION``; used to choose loss weights and checkpoints, never the held-out
pairs): the bottom quarter of the WHU-OPT-SAR crop (rows ``[750, 1000)``, training rows stop
``VSFF_GAP`` earlier), SEN12MS-CR ``oriolac_0581`` and ``oriolac_4438`` and BigEarthNet ``36_85``.
A final run may train on the validation pairs too (``include_validation``); the held-out pairs
stay out in every case.
"""
from __future__ import annotations

import os
from typing import Dict, List

CFOG_SAR = "sar_optical/cfog_stest3_sar.tif"
CFOG_OPTICAL = "sar_optical/cfog_stest3_optical.tif"
CFOG_HEIGHT = 618
CFOG_HELDOUT_ROW0 = 412           # rows [412, 618) are held out (bottom third)
CFOG_GAP = 16                     # training rows stop at 412 - 16 = 396
SEN12MSCR_HELDOUT = ("oriolac_1302", "oriolac_2729", "oriolac_5349")

VSFF_SAR = "sar_optical_vsff/whuoptsar_sar.tif"
VSFF_OPTICAL = "sar_optical_vsff/whuoptsar_optical.tif"
VSFF_VAL_ROW0, VSFF_HEIGHT, VSFF_GAP = 750, 1000, 16
SEN12MSCR_VALIDATION = ("oriolac_0581", "oriolac_4438")
BIGEARTHNET_VALIDATION = ("36_85",)


def vsff_train_rows():
    return 0, VSFF_VAL_ROW0 - VSFF_GAP


def vsff_validation_rows():
    return VSFF_VAL_ROW0, VSFF_HEIGHT


def cfog_train_rows():
    return 0, CFOG_HELDOUT_ROW0 - CFOG_GAP


def cfog_heldout_rows():
    return CFOG_HELDOUT_ROW0, CFOG_HEIGHT


def heldout_pairs(data_root: str) -> List[Dict]:
    """Held-out pairs as dicts: name, kind ('uint8' or 's1s2'), sar, optical paths and
    ``rows`` (row range (r0, r1) of the evaluation window, None = whole image)."""
    out = []
    sar, opt = os.path.join(data_root, CFOG_SAR), os.path.join(data_root, CFOG_OPTICAL)
    if os.path.exists(sar) and os.path.exists(opt):
        out.append({"name": "cfog_stest3_bottom", "kind": "uint8", "sar": sar, "optical": opt,
                    "rows": cfog_heldout_rows()})
    for sid in SEN12MSCR_HELDOUT:
        folder = os.path.join(data_root, "sen12mscr", sid)
        if os.path.isdir(folder):
            out.append({"name": f"sen12mscr_{sid}", "kind": "s1s2",
                        "sar": os.path.join(folder, "s1.tif"),
                        "optical": os.path.join(folder, "s2_cloudfree.tif"), "rows": None})
    return out


def is_heldout_sen12mscr(folder_name: str) -> bool:
    return folder_name in SEN12MSCR_HELDOUT
