"""Send a table of prompts through the oracle (quota, dollar cap, cache) on the cluster.

Run as:
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/oracle.py --config jobs/configs/oracle.yaml storage.root=s3://my-bucket/crome

The Gemini key comes from GEMINI_API_KEY (or GOOGLE_API_KEY) in the cluster's environment.
"""

import sys

from crome_ray.cli import main

if __name__ == "__main__":
    main(["oracle", "run", *sys.argv[1:]])
