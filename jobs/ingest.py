"""Ingest one preference data set into a committed run folder.

Run as:
    ray job submit --working-dir . -- python jobs/ingest.py --config jobs/configs/ingest.yaml \
        storage.root=s3://my-bucket/crome

Locally: python jobs/ingest.py --config jobs/configs/ingest.yaml
"""

import sys

from crome_ray.cli import main

if __name__ == "__main__":
    main(["ingest", *sys.argv[1:]])
