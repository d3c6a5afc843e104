"""How small an ECE the held-out pairs of an evaluation can show: the noise floor of the calibration figure.

Reads an eval run that fitted its calibrator (``calibration.fit=true``) and the checkpoint it stored it in,
recomputes the held-out pairs' calibrated probabilities, and prints (1) their ECE, (2) the ECE a perfectly
calibrated predictor with the same probabilities shows (labels drawn from the probabilities themselves, 1,000
draws: mean and 95th percentile) and (3) a pair bootstrap 95 % interval of the observed ECE.

    python research/ece_floor.py outputs/eval/px56_calib600 outputs/pipeline/px56/sft/final
"""

import glob
import json
import sys

import numpy as np

from preferthinker.calibration import heldout_split, load_calibrator, pair_probability
from preferthinker.evaluation.calibration_metrics import expected_calibration_error, pairs_from_records

run, ckpt = sys.argv[1], sys.argv[2]
fit = json.load(open(f"{run}/calibration.json"))
frac, seed = fit["fitted_on"]["fraction"], fit["fitted_on"]["seed"]
cal = load_calibrator(ckpt)
pairs = []
for f in glob.glob(f"{run}/predictions/model/*.jsonl"):
    recs = [json.loads(line) for line in open(f)]
    pairs += [p for p in pairs_from_records(recs) if not heldout_split(p["user_id"], frac, seed)]
p = np.array([pair_probability(x["features"], cal)[0] for x in pairs])
y = np.array([x["y"] for x in pairs])
rng = np.random.default_rng(0)
obs = expected_calibration_error(p, y, 10)
sim = [expected_calibration_error(p, (rng.random(len(p)) < p).astype(int), 10) for _ in range(1000)]
boot = []
for _ in range(1000):
    i = rng.integers(0, len(p), len(p))
    boot.append(expected_calibration_error(p[i], y[i], 10))
print(f"held-out pairs n={len(p)}: ECE {obs:.4f}; a perfectly calibrated predictor shows mean {np.mean(sim):.4f} "
      f"(p95 {np.percentile(sim, 95):.4f}); bootstrap 95 % [{np.percentile(boot, 2.5):.4f}, {np.percentile(boot, 97.5):.4f}]")
