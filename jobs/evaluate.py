"""Evaluate reward models side by side (RewardBench-style categories, reWordBench-style
transformations, reward shift, a planted cue) into a committed run with a report and plots.

Run as:
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/evaluate.py --config jobs/configs/evaluate.yaml

The report (report.md, report.json, PNG plots) is in <storage.root>/evaluate/<run>/.
"""

import sys

from crome_ray.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
