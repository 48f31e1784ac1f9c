"""Extract the ``v1`` openAPIV3Schema from a KubeRay CRD file, for cluster/kuberay/schemas/.

The CRD files are large (the RayCluster one ~900 kB, with the v1alpha1 version beside v1);
the tests need only the v1 schema. Run as:

    python tools/kuberay_schema.py ray.io_rayclusters.yaml cluster/kuberay/schemas/raycluster-v1.json

with a CRD file from the KubeRay release that cluster/kuberay/schemas/README.md names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def v1_schema(crd: dict) -> dict:
    """The openAPIV3Schema of the CRD's ``v1`` version (ValueError if it has none)."""
    for version in crd["spec"]["versions"]:
        if version["name"] == "v1":
            return version["schema"]["openAPIV3Schema"]
    names = [v["name"] for v in crd["spec"]["versions"]]
    raise ValueError(f"{crd['metadata']['name']}: no v1 version (has {names})")


def main(source: str, target: str) -> None:
    schema = v1_schema(yaml.safe_load(Path(source).read_text()))
    Path(target).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
