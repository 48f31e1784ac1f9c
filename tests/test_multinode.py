"""The cluster path on a real Ray cluster of several nodes on this machine (tests/multinode.py): work
steered to a worker node runs there, a node that dies is reported dead, and a job refuses a
local storage root on more than one node unless it is declared shared, before any work; with a
bucket root the augmentation runs across the nodes and accounts for every source row, and the
Gemini key its oracle actors used on the worker node is in no file of any node's log folder
(the workers' output included) and no object of the run (seen failing with the key printed in
the oracle actor).

Run as: make test-cluster (or pytest -m ray tests/test_multinode.py)."""

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import SecretStr

from crome_ray.augment.config import AugmentConfig
from crome_ray.augment.job import run_augment_job
from crome_ray.config import StorageConfig, load_config
from crome_ray.oracle.simulator import RunningSimulator, SimConfig
from crome_ray.records import AUGMENTED_PAIR_SCHEMA
from crome_ray.storage import LocalRootOnClusterError, RunFolder
from tests.multinode import (
    WORKER_RESOURCE,
    MultiNodeCluster,
    cluster_processes,
    multinode_cluster,
    wait_until_dead,
)

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "ultrafeedback" / "train_1k.jsonl"
KEY = "sk-SECRET-multinode-0123456789abcdef"
MODEL = "gemini-2.5-flash-lite"
ROWS = 4


@pytest.fixture(scope="module")
def nodes(s3_server) -> MultiNodeCluster:
    """A head and one worker node for the module. Started after the S3 server, so every node's
    processes inherit the S3 test credentials."""
    with multinode_cluster(workers=1) as cluster:
        yield cluster


def test_the_cluster_goes_whole_when_a_test_fails_and_the_sessions_own_cluster_comes_back(ray_cluster):
    """First in the module: the session's cluster is up, the module's is not yet."""
    import ray

    session_env = ray.get_runtime_context().runtime_env
    with pytest.raises(RuntimeError, match="a test that fails"), multinode_cluster() as cluster:
        temp = cluster.temp_dir
        assert ray.get_runtime_context().gcs_address == cluster.cluster.address
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2 and cluster_processes(temp)
        raise RuntimeError("a test that fails")
    assert cluster_processes(temp) == [] and not Path(temp).exists()  # no raylet, worker or file left
    # the session's cluster again: one node, its CPUs, its job's environment, where an address
    # given to its workers (tests/conftest.py gives RAY_ADDRESS) names its new GCS port
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2 and len(ray.nodes()) == 1
    port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    env = ray.get_runtime_context().runtime_env
    assert env.keys() == session_env.keys()
    assert all(v.endswith(f":{port}") for k, v in env.get("env_vars", {}).items() if k == "RAY_ADDRESS")
    assert ray.get(where_it_runs().remote()) == ray.get_runtime_context().get_node_id()


def node_of_the_driver() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def where_it_runs():
    """A task that answers the id of the node it ran on."""
    import ray

    @ray.remote(num_cpus=0)
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    return where


def test_work_asking_for_the_worker_resource_runs_on_the_worker_node_not_the_drivers(nodes):
    import ray

    @ray.remote(num_cpus=0, resources={WORKER_RESOURCE: 1})
    class Where:
        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert node_of_the_driver() == nodes.head_id
    task_node = ray.get(where_it_runs().options(resources={WORKER_RESOURCE: 1}).remote())
    actor = Where.remote()
    actor_node = ray.get(actor.node.remote())
    ray.kill(actor)
    assert task_node == actor_node == nodes.worker_ids[0] != node_of_the_driver()
    # the head takes no CPU work: a task that needs a CPU runs on the worker too
    assert ray.get(where_it_runs().options(num_cpus=1).remote()) == nodes.worker_ids[0]


def test_a_node_that_dies_is_reported_dead_and_the_rest_of_the_cluster_goes_on(nodes):
    import ray

    doomed = nodes.add_worker({"doomed": 1}, cpus=0)
    where = where_it_runs()
    ran_on = ray.get(where.options(resources={"doomed": 1}).remote())
    assert ran_on == doomed.node_id != node_of_the_driver()
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    nodes.remove(doomed)  # its raylet and workers SIGKILLed: a node failure, not a drain
    seconds = wait_until_dead(doomed.node_id)
    print(f"the removed node was reported dead after {seconds:.1f} s")
    listed = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
    assert listed[doomed.node_id] is False  # still listed, as dead
    assert {i for i, up in listed.items() if up} == {nodes.head_id, *nodes.worker_ids}
    assert ray.get(where.options(resources={WORKER_RESOURCE: 1}).remote()) == nodes.worker_ids[0]


def config(sim, root, *over: str) -> AugmentConfig:
    """A tiny augmentation against the Gemini simulator (tests/test_augment_ray.py's shape)."""
    return load_config(
        AugmentConfig,
        None,
        [
            f"input={SAMPLE}",
            f"storage.root={root}",
            f"oracle.base_url={sim.url}",
            f"oracle.model={MODEL}",
            "oracle.retry.timeout_s=5",
            "oracle.retry.initial_backoff_s=0.05",
            "oracle.quota.rpm=600000",
            "oracle.quota.input_tpm=1000000000",
            "oracle.quota.max_in_flight=256",
            "oracle.budget.cap_usd=1",
            "leakage_embeddings=false",
            f"limit={ROWS}",
            "tasks.attributes=1",
            "tasks.elements=false",
            "controls.examples=0",
            "batch_size=2",
            *over,
        ],
    )


def test_a_job_refuses_a_local_root_on_two_nodes_before_any_work_and_goes_on_when_it_is_shared(
    nodes, tmp_path, tiny_bert
):
    root = tmp_path / "runs"
    with RunningSimulator(SimConfig(latency_median_s=0.0, seed=5)) as sim:
        cfg = config(sim, root, f"iqn.embedder={tiny_bert}")
        with pytest.raises(LocalRootOnClusterError) as refused:
            run_augment_job(cfg, SecretStr(KEY))
        message = str(refused.value)
        assert f"storage.root='{root}'" in message and "2 alive nodes" in message
        assert "storage.root=s3://<bucket>/runs" in message
        assert f"storage.shared=true if {root} is the same shared filesystem on every node" in message
        assert not root.exists() and sim.stats.requests == 0  # nothing written, no call made

        # on this machine the root *is* the same folder on both nodes: declared so, the job runs
        shared = config(sim, root, f"iqn.embedder={tiny_bert}", "storage.shared=true")
        result = run_augment_job(shared, SecretStr(KEY))
    assert result.counts["source_rows"] == ROWS == result.counts["pairs_original"]
    assert sim.stats.answered > 0
    pairs = RunFolder.from_uri(result.run.uri).read_table("pairs")
    assert pairs.num_rows == result.counts["pairs"]


def _is(table: pa.Table, *kinds: str):
    return pc.is_in(table.column("kind"), value_set=pa.array(kinds))


def test_the_augmentation_into_a_bucket_runs_across_the_nodes_accounts_for_every_row_and_writes_no_key(
    nodes, s3_server, tiny_bert
):
    import ray

    head = next(n for n in ray.nodes() if n["NodeID"] == nodes.head_id)
    assert (
        head["Resources"].get("CPU", 0) == 0
    )  # what needs a CPU (reads, oracle actors, IQN) runs on the worker
    bucket = s3_server.new_bucket()
    storage = StorageConfig(endpoint_url=s3_server.endpoint)
    with RunningSimulator(SimConfig(latency_median_s=0.0, seed=7)) as sim:
        cfg = config(
            sim,
            f"s3://{bucket}/crome",
            f"iqn.embedder={tiny_bert}",
            "iqn.pool=256",
            "workers=2",
            f"storage.endpoint_url={s3_server.endpoint}",
        )
        result = run_augment_job(cfg, SecretStr(KEY))
    run = RunFolder.from_uri(result.run.uri, storage)
    pairs = run.read_table("pairs")
    # every line of the source is a pair of the ingest run, or that run says where it went
    ingest = RunFolder.from_uri(result.manifest["inputs"]["pairs"]["uri"], storage)
    c = ingest.manifest()["counts"]
    originals = set(pairs.filter(_is(pairs, "original")).column("source_id").to_pylist())
    assert len(originals) == ROWS == result.counts["source_rows"] < c["pairs_written"]
    assert c["records_read"] == 1000 == sum(1 for _ in SAMPLE.open())
    assert c["pairs_written"] + c["quarantined"] + c["ties_dropped"] + c["unpaired"] == 1000
    # every augmented pair points back at a source pair, and every causal pair names its attribute
    assert set(pairs.column("source_id").to_pylist()) <= originals
    causal = pairs.filter(_is(pairs, "causal_degrade", "causal_upgrade"))
    assert causal.num_rows > 0
    assert all(causal.column("attribute").to_pylist()) and all(causal.column("request_keys").to_pylist())
    ties = pairs.filter(_is(pairs, "neutral_iqn", "neutral_can", "neutral_para"))
    assert set(ties.column("label").to_pylist()) == {"tie"}
    assert pairs.schema.remove_metadata() == AUGMENTED_PAIR_SCHEMA.remove_metadata()
    # the manifest's counts are the files'
    assert result.counts["pairs"] == pairs.num_rows == result.manifest["tables"]["pairs"]["rows"]
    for kind, n in Counter(pairs.column("kind").to_pylist()).items():
        assert result.counts[f"pairs_{kind}"] == n
    # the key reached the oracle actors on the worker node and nothing any node or the run wrote
    assert sim.stats.answered > 0  # the calls were made, with the key
    assert not files_holding(KEY, nodes.temp_dir)  # every node's logs, the workers' output included
    written = storage_files(f"s3://{bucket}/crome", storage)
    assert any(p.endswith(".parquet") for p in written) and any(p.endswith("manifest.json") for p in written)
    assert not [p for p, body in written.items() if KEY.encode() in body]


def files_holding(text: str, root: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``text`` (sockets and the like skipped)."""
    found = []
    for path in Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if text.encode() in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def storage_files(uri: str, storage: StorageConfig) -> dict[str, bytes]:
    """Every object under ``uri`` and its bytes."""
    from crome_ray.storage import filesystem

    fs, path = filesystem(uri, storage)
    return {p: fs.cat_file(p) for p in fs.find(path)}
