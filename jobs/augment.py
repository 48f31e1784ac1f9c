"""Augment preference pairs the Crome way on the cluster: rubrics, counterfactuals, verification,
neutral ties and the baseline filter, under the cluster-wide quota and the dollar cap.

Run as:
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/augment.py --config jobs/configs/augment.yaml storage.root=s3://my-bucket/crome

The Gemini key comes from GEMINI_API_KEY (or GOOGLE_API_KEY) in the cluster's environment.
Add --dry-run to see the calls, tokens and dollars first.
"""

import sys

from crome_ray.cli import main

if __name__ == "__main__":
    main(["augment", *sys.argv[1:]])
