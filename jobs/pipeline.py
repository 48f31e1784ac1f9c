"""The Crome method end to end: ingest → baseline RM → augment (filtered by the baseline) → Crome RM
(or the λ sweep's best) → evaluation of both side by side; each step a committed run.

Run as:
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/pipeline.py --config jobs/configs/pipeline.yaml storage.root=s3://BUCKET/crome

A second submission of the same config finds every step committed and does nothing; a changed
setting redoes that step and the ones after it. The pipeline's run is
<storage.root>/pipeline/<run>/; its manifest names every step's run and the report.
"""

import sys

from crome_ray.cli import main

if __name__ == "__main__":
    main(["pipeline", *sys.argv[1:]])
