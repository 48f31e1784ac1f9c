"""Sweep λ (the tie-loss weight) × seeds with Ray Tune (ASHA on the validation metric); each
trial is a training run, the sweep run names the best.

Run as:
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/tune.py --config jobs/configs/tune.yaml

The trials' table, report.md and lambda.png are in <storage.root>/tune/<run>/; the best model
is the best trial's <storage.root>/train/<run>-lambda<λ>-seed<s>/model/.
"""

import sys

from crome_ray.cli import main

if __name__ == "__main__":
    main(["tune", *sys.argv[1:]])
