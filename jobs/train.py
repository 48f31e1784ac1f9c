"""Train a reward model (Bradley–Terry + λ × tie loss) on Ray Train, on the cluster.

Run as:
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/train.py --config jobs/configs/train_baseline.yaml storage.root=s3://my-bucket/crome

Checkpoints go to <storage.root>/train/<run>/ray/; a killed worker resumes from the
latest one, and so does a re-submitted job whose run never committed.
"""

import sys

from crome_ray.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
