"""NanoPyx (NanoJ's Python successor) as a peer: rigid drift, elastic channel registration, SQUIRREL error map.
Run with the nanopyx venv's Python (HOME pointed at a scratch folder: it writes state there).

    python nanopyx_job.py shift IN.npz            # ref, movs; shifts d with mov(p) = ref(p - d)
    python nanopyx_job.py elastic IN.npz OUT.npz  # ref, mov, blocks; OUT: field (2, H, W), ours' convention
    python nanopyx_job.py squirrel IN.npz         # ref, sr; seconds, RSE, RSP

Conventions, measured on uniform shifts: ``DriftEstimator``'s drift_x/drift_y are -dx/-dy; the translation
masks hold [-dx | -dy] side by side, so the field ``registered[p] = mov[p + f(p)]`` is f = (-right, -left).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
from _job import done, timed

warnings.filterwarnings("ignore")


def shift(ref: np.ndarray, mov: np.ndarray) -> np.ndarray:
    from nanopyx.methods.drift_alignment.estimator import DriftEstimator

    est = DriftEstimator(verbose=False)
    est.estimate(np.stack([ref, mov]).astype(np.float32), ref_option=0, max_expected_drift=32, apply=False)
    _, dx, dy = est.estimator_table.drift_table[1]
    return np.array([-dy, -dx])


def elastic(ref: np.ndarray, mov: np.ndarray, blocks: int, max_shift: float) -> np.ndarray:
    from nanopyx.methods.channel_registration import ChannelRegistrationEstimator

    est = ChannelRegistrationEstimator(verbose=False)
    est.estimate(np.stack([ref, mov]).astype(np.float32), 0, max_shift, blocks, 0.5, save_translation_masks=False)
    m = np.asarray(est.translation_masks[1], np.float32)
    w = ref.shape[1]
    return np.stack([-m[:, w:], -m[:, :w]])


def main() -> None:
    task, path = sys.argv[1], sys.argv[2]
    data = np.load(path)
    if task == "shift":
        out = [timed(lambda m=m: shift(data["ref"], m), repeat=1) for m in data["movs"]]
        done({"shifts": [o[0].tolist() for o in out], "seconds": [o[1] for o in out]})
    elif task == "elastic":
        field, sec = timed(lambda: elastic(data["ref"], data["mov"], int(data["blocks"]), float(data["max_shift"])),
                           repeat=1)  # fmt: skip
        np.save(sys.argv[3], field)
        done({"seconds": sec})
    elif task == "squirrel":
        from nanopyx.methods.squirrel import calculate_error_map

        (emap, rse, rsp), sec = timed(lambda: calculate_error_map(data["ref"], data["sr"]), repeat=3)
        done({"seconds": sec, "rse": float(rse), "rsp": float(rsp)})
    else:
        raise SystemExit(f"unknown task {task}")


if __name__ == "__main__":
    main()
