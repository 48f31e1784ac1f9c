"""Connecting to Ray: a local cluster started by crome-ray is the one its own workers find, even
with another Ray instance on the machine (a notebook's, a second job's, `ray start`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ray

# a worker of the crome-ray cluster asks Ray's state API (as Ray Train's placement-group cleaner
# does) which cluster it is in
SCRIPT = """
import json, ray
from crome_ray.ray_runtime import connect
connect(1, dashboard=True)

@ray.remote(num_cpus=0)
def which():
    from ray.util.state import list_nodes
    return [n.node_id for n in list_nodes()]

print(json.dumps({"mine": [n["NodeID"] for n in ray.nodes()], "seen": ray.get(which.remote())}))
"""


# another Ray instance on the machine, started as a notebook would (ray.init), until its stdin closes
OTHER = """
import ray, sys
ray.init(num_cpus=0, include_dashboard=False)
print("up", flush=True)
sys.stdin.read()
"""


def test_with_another_ray_on_the_machine_the_workers_state_api_finds_their_own_cluster():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    other = subprocess.Popen([sys.executable, "-c", OTHER], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "up"
        proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["seen"] == got["mine"]  # not "Found multiple active Ray instances", not the other one
    finally:
        other.stdin.close()
        other.wait(120)
