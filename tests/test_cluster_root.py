"""A local storage root on a Ray cluster of several nodes is refused before a job does any work:
the decision (``storage.local_root_on_cluster``, a pure function of the nodes and the storage
config), the opt-in ``storage.shared``, and the one place every job meets it (``Step.begin``).

The same refusal from a real job on a real 2-node cluster: tests/test_multinode.py."""

import sys
from pathlib import Path

import pytest

from crome_ray import ray_runtime
from crome_ray.config import StorageConfig, load_config
from crome_ray.data.config import IngestConfig
from crome_ray.data.ingest import run_ingest
from crome_ray.errors import CromeError
from crome_ray.storage import LocalRootOnClusterError, check_root_on_cluster, local_root_on_cluster

ALIVE = {"NodeID": "a" * 56, "Alive": True}
OTHER = {"NodeID": "b" * 56, "Alive": True}
THIRD = {"NodeID": "c" * 56, "Alive": True}
DEAD = {"NodeID": "d" * 56, "Alive": False}


def test_a_local_root_on_two_alive_nodes_is_refused_naming_the_root_the_nodes_and_the_fix():
    error = local_root_on_cluster(StorageConfig(root="/data/runs"), [ALIVE, OTHER])
    assert isinstance(error, LocalRootOnClusterError) and isinstance(error, CromeError)
    message = str(error)
    assert "storage.root='/data/runs'" in message
    assert "2 alive nodes" in message
    assert "use a bucket: storage.root=s3://<bucket>/runs" in message.lower()
    assert "set storage.shared=true if /data/runs is the same shared filesystem on every node" in message


def test_the_count_is_of_alive_nodes_only():
    three = local_root_on_cluster(StorageConfig(root="runs"), [ALIVE, OTHER, THIRD, DEAD])
    assert "3 alive nodes" in str(three)
    # one node left alive (the others died or were removed): every writer is on the driver's disk
    assert local_root_on_cluster(StorageConfig(root="runs"), [ALIVE, DEAD]) is None
    assert local_root_on_cluster(StorageConfig(root="runs"), [ALIVE]) is None


@pytest.mark.parametrize("root", ["s3://bucket/runs", "s3a://bucket/runs", "gs://bucket/runs", "gcs://b/r"])
def test_a_bucket_root_reaches_every_node(root):
    assert local_root_on_cluster(StorageConfig(root=root), [ALIVE, OTHER, THIRD]) is None


@pytest.mark.parametrize("root", ["runs", "/mnt/nfs/runs", "file:///mnt/nfs/runs"])
def test_a_local_root_declared_shared_goes_on(root):
    assert local_root_on_cluster(StorageConfig(root=root, shared=True), [ALIVE, OTHER]) is None
    assert local_root_on_cluster(StorageConfig(root=root), [ALIVE, OTHER]) is not None


def test_shared_is_off_by_default_settable_from_the_command_line_and_absent_from_dumps_until_set():
    assert StorageConfig().shared is False
    assert "shared filesystem" in StorageConfig.model_fields["shared"].description
    cfg = load_config(IngestConfig, None, ["storage.root=/mnt/nfs/runs", "storage.shared=true"])
    assert cfg.storage.shared is True
    # the sinks get the storage config as JSON: the flag survives the trip
    assert StorageConfig.model_validate_json(cfg.storage.model_dump_json()).shared is True
    # unset, a dump (a manifest's config, the fingerprints that dump StorageConfig()) reads as it
    # did before the field existed
    assert StorageConfig().model_dump() == {"root": "runs", "endpoint_url": None, "region": None}
    off = load_config(IngestConfig, None, ["storage.root=/mnt/nfs/runs"])
    assert "shared" not in off.model_dump(mode="json")["storage"]


def test_without_ray_connected_there_is_nothing_to_check(monkeypatch):
    # a process that never imported Ray (an earlier test in the same session may have connected
    # this one: `make test` runs every tier in one process)
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert ray_runtime.cluster_nodes() is None
    check_root_on_cluster(StorageConfig(root="runs"))  # no error
    assert "ray" not in sys.modules  # nor did the check import it


def nodes_of_a_cluster(monkeypatch, *nodes):
    """What ``ray.nodes()`` answers on a connected cluster of these nodes."""
    monkeypatch.setattr(ray_runtime, "cluster_nodes", lambda: list(nodes))


def test_a_job_on_a_cluster_of_two_nodes_with_a_local_root_refuses_before_writing_anything(
    tmp_path: Path, samples: Path, monkeypatch
):
    """Every job meets the check where it begins its step: the ingest here, a real job entry."""
    nodes_of_a_cluster(monkeypatch, ALIVE, OTHER)
    root = tmp_path / "runs"
    source = samples / "ultrafeedback" / "train_1k.jsonl"
    cfg = load_config(IngestConfig, None, [f"storage.root={root}", f"source.path={source}"])
    with pytest.raises(LocalRootOnClusterError, match="2 alive nodes"):
        run_ingest(cfg)
    assert not root.exists()  # not a folder made, not a file written

    shared = load_config(
        IngestConfig, None, [f"storage.root={root}", f"source.path={source}", "storage.shared=true"]
    )
    assert run_ingest(shared).counts["pairs_written"] > 0
    nodes_of_a_cluster(monkeypatch, ALIVE, {**OTHER, "Alive": False})  # the second node died
    alone = load_config(IngestConfig, None, [f"storage.root={tmp_path / 'alone'}", f"source.path={source}"])
    assert run_ingest(alone).counts["pairs_written"] > 0
