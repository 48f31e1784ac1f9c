"""A real Ray cluster of several nodes on this machine, for the tests of the cluster path.

``multinode_cluster`` starts a head and ``workers`` worker nodes with ``ray.cluster_utils.Cluster``:
each node its own raylet and object store (small: 128 MiB), the workers with the custom resource
``worker_node`` (work that asks for it is steered off the head), every process under one short
temp dir. The driver (this process) joins the head. ``remove`` kills a node's raylet and workers
with SIGKILL: a real node failure, which the GCS notices by its health check (tuned here to
~1.5 s rather than Ray's default of tens of seconds).

CPUs: the head takes no CPU work (``num_cpus=0``, as Ray advises for the head of a real
cluster), a worker has 2 logical CPUs: 2 in all, as the session's one-node cluster. Not one
each: Ray Data's parquet read starts with a ``ListFiles`` task that asks for a whole CPU on one
node, and the augmentation's actors take their fractions (0.5 + 2 x 0.25) wherever Ray puts
them; with one CPU a node, a fraction on each left no node a whole CPU and the stream waited
forever (seen, Ray 2.60).

The session's own cluster (tests/conftest.py's ``ray_cluster``: ``ray.init`` in this process)
cannot share the driver with this one: a driver joins one cluster. So a Ray already connected
is shut down first and, if this process had started it, started again as it was afterwards
(same CPUs, temp dir and job runtime env, its GCS on a fresh port), so that the ray tests
after these still find it. Nothing of the multi-node cluster is left: its nodes are removed,
then any process naming its temp dir or with a file open under it is killed (``kill_cluster``),
then the dir goes, whether the test passed or not.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import free_port
from tests.test_cluster import stop_cluster

GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"  # Ray's: the port a head started by ray.init gives its GCS
WORKER_RESOURCE = "worker_node"
HEAD_CPUS = 0
WORKER_CPUS = 2
OBJECT_STORE_BYTES = 128 * 1024 * 1024
# the GCS marks a raylet dead after this many missed health checks of this period; Ray's
# defaults (3 s x 5, after a 5 s delay) would make each node-failure test wait ~20 s
HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
}


@dataclass
class MultiNodeCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    temp_dir: str
    workers: list[Any] = field(default_factory=list)  # ray._private.node.Node of each worker node

    @property
    def head_id(self) -> str:
        return self.cluster.head_node.node_id

    @property
    def worker_ids(self) -> list[str]:
        return [w.node_id for w in self.workers]

    def add_worker(self, resources: dict[str, float] | None = None, cpus: int = WORKER_CPUS) -> Any:
        """One more worker node (``worker_node`` and ``resources``), joined and alive on return."""
        node = self.cluster.add_node(
            num_cpus=cpus,
            object_store_memory=OBJECT_STORE_BYTES,
            resources={WORKER_RESOURCE: 1, **(resources or {})},
            temp_dir=self.temp_dir,
        )
        self.cluster.wait_for_nodes()
        self.workers.append(node)
        return node

    def remove(self, node: Any) -> None:
        """Kill the node's raylet and everything on it at once (SIGKILL): a node that dies."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)


def alive(node_id: str) -> bool:
    import ray

    return {n["NodeID"]: n["Alive"] for n in ray.nodes()}[node_id]


def wait_until_dead(node_id: str, timeout: float = 30) -> float:
    """Seconds until ``ray.nodes()`` reports the node dead."""
    started = time.monotonic()
    while alive(node_id):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"node {node_id} still alive after {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


MADE: list[str] = []  # every cluster's temp dir this process made


@atexit.register
def remove_made_folders() -> None:
    """Every cluster's temp dir gone, again. Seen under pytest: the first cluster's session
    folder made again, empty, when the next cluster starts (by a part of Ray in this process
    that kept its path; not found which); the next teardown and the end of the process remove it."""
    for path in MADE:
        shutil.rmtree(path, ignore_errors=True)


def remove_folder(path: str, timeout: float = 15) -> None:
    """``path`` gone, though a worker that is still dying (its command line, ``ray::IDLE``, does
    not name the folder, so ``stop_cluster`` missed it) writes a log line into it meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path) or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def cluster_processes(temp_dir: str) -> list[int]:
    """Pids of the processes of the cluster under ``temp_dir``: those whose command line names it
    (raylets, GCS, agents) and those with a file open under it (workers, ``ray::IDLE``, whose
    output goes to the session's log folder)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid == os.getpid():  # the driver: its log of the cluster may still be open
            continue
        with contextlib.suppress(psutil.Error):
            if any(temp_dir in arg for arg in proc.info["cmdline"] or []) or any(
                f.path.startswith(temp_dir + os.sep) for f in proc.open_files()
            ):
                found.append(proc.pid)
    return found


def kill_cluster(temp_dir: str) -> None:
    """Every process of the cluster under ``temp_dir`` killed and reaped: ``stop_cluster`` (the
    processes naming it, and their children), then any worker it missed."""
    import psutil

    stop_cluster(temp_dir)
    left = []
    for pid in cluster_processes(temp_dir):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            proc.kill()
            left.append(proc)
    psutil.wait_procs(left, timeout=30)


@dataclass(frozen=True)
class LocalRay:
    """A local cluster this process had started with ``ray.init`` (the session's ``ray_cluster``):
    what it takes to start it again the same, whatever arguments tests/conftest.py gave it."""

    cpus: int
    temp_dir: str
    gcs_address: str  # host:port
    runtime_env: dict[str, Any]  # the job's (the session's gives its workers RAY_ADDRESS)

    def start_again(self) -> None:
        """With its GCS on a fresh port (the old one may not be free again yet), and the job's
        environment variables that named the old address naming the new one."""
        import ray

        port = free_port()
        old, new = self.gcs_address.rsplit(":", 1)[1], str(port)
        env = dict(self.runtime_env)
        if env.get("env_vars"):
            env["env_vars"] = {
                k: v.replace(f":{old}", f":{new}") if v.endswith(f":{old}") else v
                for k, v in env["env_vars"].items()
            }
        os.environ[GCS_PORT_ENV] = new  # read by ray.init when it starts a head
        try:
            ray.init(
                num_cpus=self.cpus,
                _temp_dir=self.temp_dir,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env=env or None,
            )
        finally:
            os.environ.pop(GCS_PORT_ENV, None)
        ray.data.DataContext.get_current().enable_progress_bars = False


def take_down_connected_ray() -> LocalRay | None:
    """Disconnect from any Ray; the local cluster this process had started, if it had, to bring back."""
    import ray

    if not ray.is_initialized():
        return None
    node = ray._private.worker._global_node
    local = None
    if node is not None and node.head:  # started by this process's ray.init, not joined
        local = LocalRay(
            cpus=int(ray.cluster_resources().get("CPU", 1)),
            temp_dir=node.get_temp_dir_path(),
            gcs_address=node.gcs_address,
            runtime_env=dict(ray.get_runtime_context().runtime_env),
        )
    ray.shutdown()
    return local


def reopen_ray_data_logs() -> None:
    """Ray Data's log files in this process (``SessionFileHandler``) resolve the session's log
    folder on their first line and keep writing there: after a switch of cluster they would
    write into (and make again) the folder of the one that is gone. Closed, each opens its file
    in the connected cluster's session on its next line."""
    import logging

    from ray.data._internal.logging import SessionFileHandler

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, SessionFileHandler) and handler._handler is not None:
                handler._handler.close()
                handler._handler = None


def start_head(temp_dir: str, tries: int = 2) -> Any:
    """A ``Cluster`` with its head node up. Ray gives a raylet 30 s to register with its GCS
    (fixed in ``ray._private.node``); on this shared 2-core machine, under another session's
    load and at ``nice 15``, a head missed it twice in a dozen runs: it is started again, once."""
    from ray.cluster_utils import Cluster

    for attempt in range(1, tries + 1):
        try:
            return Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": HEAD_CPUS,
                    "object_store_memory": OBJECT_STORE_BYTES,
                    "temp_dir": temp_dir,
                    "include_dashboard": False,
                    "dashboard_port": free_port(),  # the API server's; another cluster may hold 8265
                    "_system_config": HEALTH_CHECKS,
                },
            )
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == tries:
                raise
            print(f"the head did not start in time ({e}); starting it again")
            kill_cluster(temp_dir)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def multinode_cluster(workers: int = 1) -> Iterator[MultiNodeCluster]:
    """A head and ``workers`` worker nodes on this machine, the driver joined to the head."""
    import ray

    previous = take_down_connected_ray()
    temp = tempfile.mkdtemp(prefix="crm", dir="/tmp")  # short: Ray's socket paths have a length cap
    MADE.append(temp)
    # Cluster writes (and at the end removes) the "current cluster" file in Ray's default temp
    # dir, /tmp/ray: here, in ours, so another Ray on this machine keeps its own
    os.makedirs(os.path.join(temp, "ray"))
    saved_tmpdir = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    cluster = None
    try:
        cluster = start_head(temp)
        nodes = MultiNodeCluster(cluster, temp)
        for _ in range(workers):
            nodes.add_worker()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        reopen_ray_data_logs()
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield nodes
    finally:
        ray.shutdown()
        reopen_ray_data_logs()
        if cluster is not None:
            with contextlib.suppress(Exception):  # a node that is half gone; stop_cluster finishes it
                cluster.shutdown()
        kill_cluster(temp)
        remove_folder(temp)
        remove_made_folders()
        if saved_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved_tmpdir
        if previous is not None:
            previous.start_again()
