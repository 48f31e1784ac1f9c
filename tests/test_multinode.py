"""The cluster path on a real Ray cluster of several nodes on this machine (tests/multinode.py),
and what each node failure does to a run (docs/cluster.md's table of faults comes from these):

- work steered to a worker node runs there; a node that dies is reported dead and the rest goes on;
- a job refuses a local storage root on more than one node unless it is declared shared, before
  any work; the run's governors and sinks stay on the driver's node whatever the root;
- a client node dies with calls in flight: the governor settles them at their worst case, releases
  what its queue had granted the dead worker at no cost, and the survivor spends up to the cap;
- the governor's own node dies: a new governor resumes from the ledger in the bucket and forgets
  nothing spent, the calls in flight at the kill included;
- training on two nodes loses one: Ray Train resumes from the bucket's checkpoint on what is left,
  and the steps trained again come out the same;
- the augmentation into a bucket loses a worker node: every source row accounted for, only calls in
  flight paid twice, the spend under the cap, and the Gemini key in no file of any node's logs and
  no object of the run;
- the node of a shared local engine (vLLM, SmolLM2) dies mid-batch: Ray restarts the engine on
  the node left, the batch goes to it, and the governor frees the dead engine's calls after its
  silence instead of after their 45-minute leases.

Run as: make test-cluster (or pytest -m ray tests/test_multinode.py)."""

import contextlib
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import SecretStr

from crome_ray.augment.config import AugmentConfig
from crome_ray.augment.job import run_augment_job
from crome_ray.config import StorageConfig, load_config
from crome_ray.oracle.config import OracleConfig, OracleJobConfig
from crome_ray.oracle.simulator import RunningSimulator, SimConfig
from crome_ray.records import AUGMENTED_PAIR_SCHEMA
from crome_ray.storage import LocalRootOnClusterError, RunFolder
from tests import test_oracle_ray as oracle_ray
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


def node_of_actor(actor) -> str:
    """The id of the node an actor runs on, asked of the actor itself."""
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


def test_the_runs_governor_and_sinks_stay_on_the_drivers_node_with_a_bucket_root(nodes, s3_server):
    """What holds a run's state (the quota and dollar cap, the list of files written) lives where
    the run's driver lives: a worker node that dies takes none of it. With a bucket root nothing
    else would keep the sinks off the worker nodes."""
    import ray

    from crome_ray.augment.job import TABLES
    from crome_ray.augment.sink import start_sinks
    from crome_ray.oracle.governor import governor_actor
    from crome_ray.storage import Folder

    storage = StorageConfig(root=f"s3://{s3_server.new_bucket()}/runs", endpoint_url=s3_server.endpoint)
    attempt = Folder.from_uri(f"{storage.root}/augment/placed/attempts/1", storage)
    sinks = start_sinks(6, attempt, storage.model_dump_json(), TABLES, 1000)
    cfg = load_config(AugmentConfig, None, [f"storage.root={storage.root}"])
    args = (cfg.oracle.model_dump_json(), None, storage.root, storage.model_dump_json())
    governors = [governor_actor(f"placed-{i}").remote(*args) for i in range(4)]
    try:
        assert {node_of_actor(a) for a in [*sinks, *governors]} == {node_of_the_driver()} == {nodes.head_id}
    finally:
        for a in [*sinks, *governors]:
            ray.kill(a)


def raylet_pid(node) -> int:
    """The pid of a node's raylet (``ray._private.node.Node``): every worker of the node is its child."""
    return node.all_processes["raylet"][0].process.pid


def worker_nodes_running(nodes: MultiNodeCluster, title: str) -> list:
    """The worker nodes with a live Ray worker whose process title names ``title`` (an actor's class)."""
    import psutil

    by_raylet = {raylet_pid(n): n for n in nodes.workers}
    found = []
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        with contextlib.suppress(psutil.Error):
            node = by_raylet.get(proc.info["ppid"])
            if node is not None and title in " ".join(proc.info["cmdline"] or []) and node not in found:
                found.append(node)
    return found


def governor_of(prefix: str):
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    [name] = [n for n in names if n.startswith(prefix) and not n.endswith("-fb")]
    return ray.get_actor(name, namespace="crome-ray")


def billed_micros(stats: dict) -> int:
    """What the provider bills for every token the simulator counted (abandoned answers too)."""
    return oracle_ray.billed_micros(stats, load_config(OracleJobConfig, None, [f"oracle.model={MODEL}"]))


# --- the governor across the loss of a node ------------------------------------------------------

PROMPT = "Grade answer {:05d}: it is fine, and short."
VERDICT = json.dumps(
    {
        "type": "object",
        "properties": {"verdict": {"type": "string", "enum": ["Pass", "Fail"]}},
        "required": ["verdict"],
    }
)


def oracle_config(sim, cap_micros: int) -> OracleConfig:
    from crome_ray.oracle.pricing import micros_to_usd

    return load_config(
        OracleConfig,
        None,
        [
            f"base_url={sim.url}",
            f"model={MODEL}",
            "retry.timeout_s=2",  # a lease lives 1.5 x 2 + 2 = 5 s
            "retry.initial_backoff_s=0.05",
            "quota.rpm=600000",
            "quota.input_tpm=1000000000",
            "quota.max_in_flight=8",
            f"budget.cap_usd={micros_to_usd(cap_micros)}",
        ],
    )


def worst_micros(oracle: OracleConfig) -> int:
    """The worst-case cost the governor reserves for one of these requests."""
    from crome_ray.oracle.pricing import worst_case_micros
    from crome_ray.oracle.stage import request_from_row

    req = request_from_row({"prompt": PROMPT.format(0), "schema": VERDICT}, 16)
    return worst_case_micros(req.worst_input_tokens(), 16, oracle.price())


def caller_on(node_id: str, oracle: OracleConfig, governor: str, storage: StorageConfig, root: str):
    """A real oracle stage (``OracleStage``: cache, governor client, Gemini client) as an actor on
    that node; ``ask(caller, ids)`` sends it one batch."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from crome_ray.oracle.stage import OracleStage

    args = {
        "config_json": oracle.model_dump_json(),
        "cache_root": root,
        "storage_json": storage.model_dump_json(),
        "api_key": SecretStr(KEY),
        "governor_name": governor,
    }
    on = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return ray.remote(num_cpus=0)(OracleStage).options(scheduling_strategy=on).remote(args, 16)


def ask(caller, ids: range):
    batch = pa.table({"prompt": [PROMPT.format(i) for i in ids], "schema": [VERDICT] * len(ids)})
    return caller.__ray_call__.remote(lambda self, b: self(b).column("oracle_error").to_pylist(), batch)


def ask_until_the_cap(caller, first: int, most: int) -> tuple[list, int]:
    """Batches of 24 new requests until one is refused for the budget (at most ``most`` requests):
    each request's error (None: answered), and the next request's number."""
    import ray

    outcomes, n = [], first
    while "budget_exhausted" not in outcomes and n < first + most:
        outcomes += ray.get(ask(caller, range(n, n + 24)))
        n += 24
    return outcomes, n


def test_a_client_node_that_dies_with_calls_in_flight_leaves_the_cap_true_and_the_quota_to_the_survivors(
    nodes, s3_server
):
    """The dead node's calls may have been billed: they are settled at their worst case (not
    released: releasing them could let the run spend past the cap if the provider billed them),
    once the dead client has been silent for ``silence_seconds`` (2.5 s here) or at the latest
    when their leases expire (5 s). The survivor keeps getting grants until the cap, and none past it."""
    import ray

    from crome_ray.oracle.governor import governor_actor

    doomed = nodes.add_worker({"client_doomed": 1}, cpus=0)
    storage = StorageConfig(endpoint_url=s3_server.endpoint)
    root = f"s3://{s3_server.new_bucket()}/cache"
    with RunningSimulator(SimConfig(latency_median_s=0.3, latency_sigma=0.2, seed=3)) as sim:
        oracle = oracle_config(sim, 0)
        cap = 30 * worst_micros(oracle)
        oracle = oracle_config(sim, cap)
        governor = governor_actor("client-loss").remote(
            oracle.model_dump_json(), None, root, storage.model_dump_json()
        )
        survivor = caller_on(nodes.worker_ids[0], oracle, "client-loss", storage, root)
        dying = caller_on(doomed.node_id, oracle, "client-loss", storage, root)
        dying_batch = ask(dying, range(100_000, 100_200))  # more than it can finish before the kill
        while ray.get(governor.stats.remote())["in_flight"] < 4:
            time.sleep(0.02)
        nodes.remove(doomed)  # with calls in flight
        in_flight_at_kill = ray.get(governor.stats.remote())["in_flight"]
        killed_at = time.monotonic()
        with pytest.raises(ray.exceptions.RayError):
            ray.get(dying_batch, timeout=60)
        after, n = ask_until_the_cap(survivor, 0, 2_000)
        time.sleep(max(0.0, killed_at + 5.5 - time.monotonic()))  # every dead lease has expired
        ray.get(ask(survivor, range(n, n + 1)))  # a request after that: the governor settles them
        stats = ray.get(governor.close.remote())
        billed = billed_micros(sim.stats.summary())
    print(
        f"worst case per call {cap // 30} micro-dollars, cap {cap}; in flight at the kill "
        f"{in_flight_at_kill}; abandoned {stats['abandoned_leases']}, expired leases "
        f"{stats['expired_leases']}; survivor answered after the "
        f"kill {after.count(None)}, refused {after.count('budget_exhausted')}; spent "
        f"{stats['spent_micros']}, billed {billed}; grants released {stats['released_grants']}"
    )
    # the dead node's calls, settled at their worst case: at most the quota's in-flight cap (the
    # reading just after the kill can miss an exchange the dying worker had sent just before it)
    settled_at_worst = stats["abandoned_leases"] + stats["expired_leases"]
    assert 1 <= settled_at_worst <= oracle.quota.max_in_flight
    assert stats["in_flight"] == 0 and stats["reserved_micros"] == 0
    assert after.count(None) > 0 and "budget_exhausted" in after  # the survivor went on, up to the cap
    assert billed <= stats["spent_micros"] <= cap  # what the provider billed never crossed it


def test_the_governors_node_dying_forgets_no_spend_a_new_governor_resumes_from_the_ledger(nodes, s3_server):
    """The governor runs on the driver's node, so it dies with the run; here it is placed on a
    node that dies, to see what its successor knows. The ledger in the bucket holds an allowance
    persisted before it could be spent: the new governor counts all of it as spent, which covers
    the calls in flight at the kill (billed later, settled nowhere), and the run never crosses the cap."""
    import ray

    from crome_ray.oracle.governor import GovernorActorImpl, governor_actor

    doomed = nodes.add_worker({"governor_doomed": 1}, cpus=0)
    storage = StorageConfig(endpoint_url=s3_server.endpoint)
    bucket = s3_server.new_bucket()
    root, ledger = f"s3://{bucket}/cache", f"s3://{bucket}/run.ledger.json"
    with RunningSimulator(SimConfig(latency_median_s=0.3, latency_sigma=0.2, seed=4)) as sim:
        oracle = oracle_config(sim, 0)
        cap = 40 * worst_micros(oracle)
        oracle = oracle_config(sim, cap)
        args = (oracle.model_dump_json(), ledger, root, storage.model_dump_json())
        first = ray.remote(num_cpus=0, max_concurrency=4096, resources={"governor_doomed": 1})(
            GovernorActorImpl
        )
        first = first.options(name="gov-lost", namespace="crome-ray").remote(*args)
        client = caller_on(nodes.worker_ids[0], oracle, "gov-lost", storage, root)
        batch = ask(client, range(0, 400))
        while ray.get(first.stats.remote())["grants"] < 12:
            time.sleep(0.02)
        nodes.remove(doomed)
        with pytest.raises(ray.exceptions.RayError):
            ray.get(batch, timeout=60)
        ray.kill(client)
        time.sleep(1.0)  # the calls in flight at the kill come back to nobody, billed all the same
        billed_before = billed_micros(sim.stats.summary())
        second = governor_actor("gov-found").remote(*args)
        resumed = ray.get(second.stats.remote())["resumed_from_micros"]
        client = caller_on(nodes.worker_ids[0], oracle, "gov-found", storage, root)
        again, _ = ask_until_the_cap(client, 400, 3_600)
        stats = ray.get(second.close.remote())
        billed = billed_micros(sim.stats.summary())
    print(
        f"cap {cap}; billed before the new governor {billed_before}, it resumed from {resumed}; "
        f"then answered {again.count(None)}, refused {again.count('budget_exhausted')}; spent "
        f"{stats['spent_micros']}, billed in all {billed}"
    )
    assert billed_before > 0 and billed_before <= resumed <= cap  # nothing spent was forgotten
    assert again.count(None) > 0 and "budget_exhausted" in again
    assert billed <= stats["spent_micros"] <= cap


# --- training across nodes ------------------------------------------------------------------------

TRAIN_STEPS, CHECKPOINT_EVERY, KILL_AFTER, LOG_EVERY = 30, 10, 16, 2


def train_config(model, root: str, endpoint: str, source, *extra: str):
    from crome_ray.train.config import TrainConfig

    return load_config(
        TrainConfig,
        None,
        [
            f"model={model}",
            f"storage.root={root}",
            f"storage.endpoint_url={endpoint}",
            f"train_data={source}",
            "train_limit=64",
            "eval_data=null",
            "max_length=96",
            "batch_size=4",
            "lora.r=4",
            "optim.lr=0.01",
            f"max_steps={TRAIN_STEPS}",
            f"checkpoint_every={CHECKPOINT_EVERY}",
            f"log_every={LOG_EVERY}",
            "max_failures=2",
            "scaling.workers=2",
            "scaling.cpus_per_worker=0.5",
            *extra,
        ],
    )


def logged_steps(fs, path: str) -> dict[int, dict]:
    """A run's metrics per logged step (metrics.jsonl, rewritten whole by rank 0 at each report:
    after a restart a step logged again replaces the first)."""
    return {r["step"]: r for r in map(json.loads, fs.cat(path).decode().splitlines())}


def test_training_on_two_nodes_loses_one_and_resumes_from_its_bucket_checkpoint_to_the_same_numbers(
    nodes, s3_server, tiny_llama, tmp_path
):
    """Two workers spread over two nodes, checkpoints in the bucket, a metric line per step; one
    node dies some steps after a checkpoint. Ray Train restarts both workers on what is left (the
    one worker node: the spread is soft) from that checkpoint, and the steps it trains again come
    out as they did the first time, uninterrupted on two nodes: the same losses, accuracy and
    learning rate (the data where it was, each worker's random stream where it was)."""
    import ray

    from crome_ray.storage import filesystem
    from crome_ray.train.job import run_train_job

    doomed = nodes.add_worker()
    bucket = s3_server.new_bucket()
    root = f"s3://{bucket}/crome"
    source = tmp_path / "pairs.jsonl"  # the sample's first 80 lines: 64 pairs after the ingest's checks
    source.write_text("".join(SAMPLE.read_text().splitlines(keepends=True)[:80]))
    cfg = train_config(
        tiny_llama, root, s3_server.endpoint, source, "run_name=node-lost", "scaling.placement=spread"
    )
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = run_train_job(cfg, log=lambda _: None)
        except Exception as e:
            out["error"] = e

    job = threading.Thread(target=run)
    job.start()
    fs, _ = filesystem(root, cfg.storage)
    before, hosts, deadline = {}, [], time.monotonic() + 300
    while job.is_alive() and time.monotonic() < deadline:
        fs.invalidate_cache()
        logged = fs.glob(f"{bucket}/crome/train/node-lost/attempts/*/metrics.jsonl")
        before = logged_steps(fs, logged[0]) if logged else {}
        if max(before, default=0) >= KILL_AFTER:  # past a checkpoint, some steps before the next
            hosts = worker_nodes_running(nodes, "RayTrainWorker")
            break
        time.sleep(0.1)
    assert job.is_alive(), f"the run ended before the kill: {out}"
    assert {h.node_id for h in hosts} == {nodes.worker_ids[0], doomed.node_id}  # one worker on each
    nodes.remove(doomed)
    job.join(400)
    assert not job.is_alive(), "the run did not end within 400 s of the kill"
    assert "error" not in out, out.get("error")
    result = out["result"]
    final = result.details["final"]
    resumed_at = final["started_at_step"]
    assert final["step"] == TRAIN_STEPS and result.details["resumed"] is True
    assert resumed_at == CHECKPOINT_EVERY  # from the checkpoint in the bucket, not from the start
    assert ray.get(where_it_runs().options(num_cpus=1).remote()) == nodes.worker_ids[0]  # what is left
    after = logged_steps(result.run.fs, result.run.file("metrics.jsonl"))
    again = [step for step in before if step > resumed_at]  # trained before the kill and after it
    assert len(again) >= (KILL_AFTER - CHECKPOINT_EVERY) // LOG_EVERY
    assert set(after) == set(range(LOG_EVERY, TRAIN_STEPS + 1, LOG_EVERY))
    print(f"resumed at step {resumed_at}; steps trained again {again[0]}-{again[-1]}, first and second time:")
    for step in again:
        assert after[step]["started_at_step"] == resumed_at and before[step]["started_at_step"] == 0
        print(step, {k: (before[step][k], after[step][k]) for k in ("loss", "pair_accuracy")})
        for k in ("loss", "loss_bt", "pair_accuracy", "lr"):
            assert after[step][k] == pytest.approx(before[step][k], rel=1e-4, abs=1e-6), (step, k)


def test_a_node_killed_mid_augmentation_into_a_bucket_loses_no_row_pays_only_in_flight_twice_writes_no_key(
    nodes, s3_server, tiny_bert
):
    """It kills a worker node (a second one is added first, so the work has somewhere to go).
    The oracle actors, the IQN stage and the reads run on the worker nodes (the
    head takes no CPU work); the sinks write to the bucket from the driver's node. Ray Data
    restarts the oracle actors that were on the dead node and runs their batches again: what
    had been answered comes from the run's cache in the bucket, and only the calls in flight at
    the kill are asked again, at most the quota's in-flight cap. They are settled at the worst
    case when the dead actors are presumed gone (or their leases expire), so the spend still
    bounds the bill. The Gemini key the oracle
    actors used is in no file of any node's log folder (the workers' output included) and in no
    object of the run (seen failing with the key printed in the oracle actor)."""
    import ray

    nodes.add_worker()
    rows = 12
    bucket = s3_server.new_bucket()
    storage = StorageConfig(endpoint_url=s3_server.endpoint)
    sim_cfg = SimConfig(latency_median_s=0.5, latency_sigma=0.3, seed=11)
    with RunningSimulator(sim_cfg) as sim:
        cfg = config(
            sim,
            f"s3://{bucket}/crome",
            f"iqn.embedder={tiny_bert}",
            "iqn.pool=256",
            "workers=2",
            f"limit={rows}",
            "run_name=node-loss",
            "oracle.quota.max_in_flight=8",
            "oracle.retry.timeout_s=2",  # a lease lives 1.5 x 2 + 2 = 5 s
            f"storage.endpoint_url={s3_server.endpoint}",
        )
        out: dict = {}

        def run() -> None:
            try:
                out["result"] = run_augment_job(cfg, SecretStr(KEY))
            except Exception as e:  # reported by the test, not left waiting
                out["error"] = e

        job = threading.Thread(target=run)
        job.start()
        deadline = time.monotonic() + 240
        while sim.stats.answered < 8 and job.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.is_alive(), f"the job ended before the kill: {out}"
        hosts = worker_nodes_running(nodes, "OracleWorkStage")
        assert hosts, "no oracle actor on a worker node"
        doomed = hosts[-1]
        answered_at_kill = sim.stats.answered
        nodes.remove(doomed)
        governor = governor_of("aug-node-loss-")
        # the dead node's leases stay until they expire (5 s): this reading counts each of its
        # calls in flight, and the survivors' (an upper bound)
        in_flight_at_kill = ray.get(governor.stats.remote())["in_flight"]
        seconds = wait_until_dead(doomed.node_id)
        job.join(300)
        assert not job.is_alive(), "the job did not end within 300 s of the kill"
        stats = sim.stats.summary()
    assert "error" not in out, out.get("error")
    result = out["result"]
    run = RunFolder.from_uri(result.run.uri, storage)
    pairs = run.read_table("pairs")
    # every line of the source is a pair of the ingest run, or that run says where it went
    ingest = RunFolder.from_uri(result.manifest["inputs"]["pairs"]["uri"], storage)
    c = ingest.manifest()["counts"]
    assert c["records_read"] == 1000 == sum(1 for _ in SAMPLE.open())
    assert c["pairs_written"] + c["quarantined"] + c["ties_dropped"] + c["unpaired"] == 1000
    # every source row the run took is in it once (its original pair), and no pair twice
    originals = pairs.filter(_is(pairs, "original")).column("source_id").to_pylist()
    assert len(originals) == len(set(originals)) == rows == result.counts["source_rows"]
    columns = [pairs.column(c).to_pylist() for c in ("source_id", "kind", "chosen", "rejected")]
    keys = list(zip(*columns, strict=True))
    assert len(keys) == len(set(keys)) == pairs.num_rows == result.counts["pairs"]
    # every augmented pair points back at a source pair, and every causal pair names its attribute
    assert set(pairs.column("source_id").to_pylist()) <= set(originals)
    causal = pairs.filter(_is(pairs, "causal_degrade", "causal_upgrade"))
    assert causal.num_rows > 0
    assert all(causal.column("attribute").to_pylist()) and all(causal.column("request_keys").to_pylist())
    ties = pairs.filter(_is(pairs, "neutral_iqn", "neutral_can", "neutral_para"))
    assert set(ties.column("label").to_pylist()) == {"tie"}
    assert pairs.schema.remove_metadata() == AUGMENTED_PAIR_SCHEMA.remove_metadata()
    # the manifest's counts are the files'
    assert result.manifest["tables"]["pairs"]["rows"] == pairs.num_rows
    for kind, n in Counter(pairs.column("kind").to_pylist()).items():
        assert result.counts[f"pairs_{kind}"] == n
    # paid twice: a request body the provider billed twice; only calls in flight at the kill
    oracle = result.details["oracle"]
    print(
        f"node dead after {seconds:.1f} s; answered at the kill {answered_at_kill}, in flight "
        f"{in_flight_at_kill}; billed twice {stats['billed_twice']}; expired leases "
        f"{oracle['expired_leases']}, abandoned {oracle['abandoned_leases']}; spent "
        f"{oracle['spent_micros']} of {oracle['cap_micros']} micro-dollars"
    )
    # at most the calls in flight at the kill: the quota's in-flight cap bounds them (the reading
    # just after the kill can miss an exchange the dying worker had sent just before it)
    assert stats["billed_twice"] <= cfg.oracle.quota.max_in_flight
    assert billed_micros(stats) <= oracle["spent_micros"] <= oracle["cap_micros"]
    # the key reached the oracle actors on the worker nodes and nothing any node or the run wrote
    assert stats["answered"] > 0  # the calls were made, with the key
    assert not files_holding(
        KEY, nodes.temp_dir
    )  # every node's logs (the dead one's too), the workers' output
    written = storage_files(f"s3://{bucket}/crome", storage)
    assert any(p.endswith(".parquet") for p in written) and any(p.endswith("manifest.json") for p in written)
    assert not [p for p, body in written.items() if KEY.encode() in body]


# --- a shared local engine's node dies -------------------------------------------------------------


def test_a_shared_engines_node_dying_mid_batch_restarts_it_on_the_node_left_and_the_batch_is_answered(
    nodes, tmp_path, smollm2_path
):
    """The augmentation's local fallback engine (``graph.engine_server``: one ``OracleServer``
    actor that the oracle actors send their calls to) runs on a worker node; the node dies while
    it generates a batch. Ray restarts the engine on the node left and sends it the batch again.
    The new engine asks the governor for the same questions, which the dead engine still holds:
    without more, it would wait for their leases to run out (45 minutes for a local engine's
    30-minute attempts; seen hanging). The dead engine is silent, so after ``silence_seconds``
    the governor settles its calls and frees their keys, and the batch is answered in full."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from crome_ray.augment.graph import engine_server
    from crome_ray.oracle.governor import governor_actor
    from crome_ray.oracle.governor_core import lease_seconds, silence_seconds
    from crome_ray.oracle.protocol import GenerationParams, OracleError, OracleRequest, OracleResult

    doomed = nodes.add_worker()
    local = OracleConfig(
        backend="vllm", model=str(smollm2_path), engine={"cpus_per_engine": 0.5, "max_model_len": 1024}
    )
    assert silence_seconds(local) == 30 and lease_seconds(local) > 2_700  # the defaults: 30 s, 45 min
    governor = governor_actor("engine-node-loss").remote(
        local.model_dump_json(), str(tmp_path / "ledger.json"), str(tmp_path / "cache"), None
    )
    ray.get(governor.ping.remote())
    args = {
        "config_json": local.model_dump_json(),
        "cache_root": str(tmp_path / "cache"),
        "storage_json": None,
        "api_key": SecretStr(""),
        "governor_name": "engine-node-loss",
    }
    on_doomed = NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)  # soft: restarts go elsewhere
    server = engine_server({"num_cpus": 0.5, "num_gpus": 0}, scheduling_strategy=on_doomed).remote(args)

    def node_of_server() -> str:
        return ray.get(
            server.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()), timeout=300
        )

    hello = OracleRequest(prompt="Say hello.", params=GenerationParams(max_output_tokens=4))
    assert isinstance(ray.get(server.call_many.remote([hello]), timeout=300)[0], OracleResult)  # engine up
    assert node_of_server() == doomed.node_id
    batch = [
        OracleRequest(
            prompt=f"Write a short poem about river number {i}.",
            params=GenerationParams(max_output_tokens=200),
        )
        for i in range(6)
    ]
    answers = server.call_many.remote(batch)
    while ray.get(governor.stats.remote())["in_flight"] < len(batch):  # every call granted, generating
        time.sleep(0.05)
    nodes.remove(doomed)
    killed = time.monotonic()
    assert not ray.wait([answers], timeout=0)[0], "the batch was done before the kill: nothing tested"
    results = ray.get(answers, timeout=240)  # the leases would hold it for 45 minutes
    waited = time.monotonic() - killed
    stats = ray.get(governor.close.remote())
    errors = [r for r in results if isinstance(r, OracleError)]
    print(
        f"batch answered {waited:.0f} s after the kill; presumed gone {stats['workers_presumed_gone']}, "
        f"abandoned {stats['abandoned_leases']}, expired {stats['expired_leases']}, "
        f"grants {stats['grants']}, "
        f"engines started {len(stats['engines'])} ({[round(e['startup_s'], 1) for e in stats['engines']]} s)"
    )
    assert not errors, errors
    assert len(results) == len(batch) and all(r.text.strip() for r in results)
    assert [r.key for r in results] == [q.key("vllm", local.model) for q in batch]  # the batch's own answers
    assert waited >= silence_seconds(local)  # its new engine waited out the dead one's silence...
    assert stats["workers_presumed_gone"] == 1 and stats["abandoned_leases"] == len(batch)
    assert stats["expired_leases"] == 0 and stats["in_flight"] == 0  # ...not its leases
    assert stats["grants"] == 1 + 2 * len(batch)  # the hello, the batch, the batch again
    assert len(stats["engines"]) == 2  # the first engine and the one restarted
    assert node_of_server() == nodes.worker_ids[0] != doomed.node_id  # on the node left
    ray.kill(server)
