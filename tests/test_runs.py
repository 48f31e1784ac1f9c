"""The run lifecycle every step shares: skip, conflict, redo on changed inputs, lineage and
staleness, and forced runs that fail without losing the committed output."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crome_ray.cli import app
from crome_ray.config import load_config
from crome_ray.data import ingest as ingest_module
from crome_ray.data.config import IngestConfig
from crome_ray.data.ingest import run_ingest
from crome_ray.runs import Step, list_runs, run_status
from crome_ray.storage import RunConflictError, RunFolder

MANIFEST_KEYS = {
    "job",
    "run_name",
    "run_uri",
    "attempt",
    "fingerprint",
    "config",
    "inputs",
    "counts",
    "tables",
    "versions",
    "timings",
    "details",
}


def ingest_cfg(root: Path, samples: Path, *extra: str) -> IngestConfig:
    source = samples / "ultrafeedback" / "eval_200.jsonl"
    return load_config(
        IngestConfig, None, [f"source.path={source}", f"storage.root={root}", "run_name=uf", *extra]
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def downstream(root: Path, samples: Path, pairs: RunFolder, *, force: bool = False) -> Step:
    """A step reading the ingested pairs (its config: another ingest config, for a fingerprint)."""
    return Step("consumer", "c1", ingest_cfg(root, samples), inputs={"pairs": pairs}, force=force)


def test_every_step_writes_the_same_manifest_keys_and_counts_its_tables(tmp_path, samples):
    result = run_ingest(ingest_cfg(tmp_path, samples))
    m = result.manifest
    assert set(m) == MANIFEST_KEYS
    assert m["job"] == "ingest" and m["run_name"] == "uf" and m["inputs"] == {}
    assert (
        m["tables"]["pairs"]["rows"]
        == m["counts"]["pairs_written"]
        == result.run.read_table("pairs").num_rows
    )
    assert m["tables"]["quarantine"]["rows"] == m["counts"]["quarantined"]
    assert m["timings"]["seconds"] >= 0 and m["versions"]["pyarrow"]


def test_a_forced_ingest_that_dies_part_way_leaves_the_committed_run_byte_identical(
    tmp_path, samples, monkeypatch
):
    first = run_ingest(ingest_cfg(tmp_path, samples))
    before = snapshot(tmp_path / "ingest" / "uf")
    calls = {"n": 0}
    real = ingest_module._is_score_tie

    def dies_at_the_50th_pair(pair):
        calls["n"] += 1
        if calls["n"] == 50:
            raise OSError("disk went away")  # the injected failure
        return real(pair)

    monkeypatch.setattr(ingest_module, "_is_score_tie", dies_at_the_50th_pair)
    with pytest.raises(OSError, match="disk went away"):
        run_ingest(ingest_cfg(tmp_path, samples, "source.ties=keep"), force=True)
    after = snapshot(tmp_path / "ingest" / "uf")
    assert {k: v for k, v in after.items() if k in before} == before  # every old byte as it was
    run = RunFolder.from_uri(first.run.uri)
    assert (
        run.manifest() == first.manifest and run.read_table("pairs").num_rows == first.counts["pairs_written"]
    )
    assert len(run.attempt_ids()) == 2  # the dead attempt is still there, apart, uncommitted
    assert run_status(run).uncommitted_attempts == 1

    monkeypatch.setattr(ingest_module, "_is_score_tie", real)
    again = run_ingest(ingest_cfg(tmp_path, samples, "source.ties=keep"), force=True)
    assert RunFolder.from_uri(first.run.uri).attempt_ids() == [again.manifest["attempt"]]  # the rest cleared
    assert again.counts["ties_kept"] > 0


def test_a_committed_run_is_skipped_and_one_from_another_config_is_refused_unless_forced(tmp_path, samples):
    first = run_ingest(ingest_cfg(tmp_path, samples))
    assert run_ingest(ingest_cfg(tmp_path, samples)).skipped
    with pytest.raises(RunConflictError, match=r"different config .*committed run stays"):
        run_ingest(ingest_cfg(tmp_path, samples, "source.ties=keep"))
    assert RunFolder.from_uri(first.run.uri).manifest() == first.manifest  # the refusal wrote nothing
    forced = run_ingest(ingest_cfg(tmp_path, samples, "source.ties=keep"), force=True)
    assert forced.manifest["attempt"] != first.manifest["attempt"]
    assert RunFolder.from_uri(first.run.uri).manifest()["fingerprint"] == forced.manifest["fingerprint"]


def test_a_run_whose_input_was_remade_is_stale_and_a_rerun_redoes_it(tmp_path, samples):
    pairs = run_ingest(ingest_cfg(tmp_path, samples)).run
    step = downstream(tmp_path, samples, pairs)
    assert step.begin()
    made = step.commit({"n": 1})
    assert made.manifest["inputs"]["pairs"]["fingerprint"] == pairs.marker()["fingerprint"]
    assert run_status(made.run).state == "committed"
    again = downstream(tmp_path, samples, pairs)
    assert not again.begin() and again.result.skipped

    run_ingest(ingest_cfg(tmp_path, samples, "source.ties=keep"), force=True)  # the input re-made
    status = run_status(made.run)
    assert status.state == "stale"
    assert "input pairs" in status.reasons[0] and "another config" in status.reasons[0]

    redo = downstream(tmp_path, samples, pairs)
    assert redo.begin() and "input pairs" in redo.note  # same config, new inputs: redone, not refused
    redo.commit({"n": 2})
    assert run_status(made.run).state == "committed"


def test_runs_list_shows_every_run_with_its_status_rows_and_age(tmp_path, samples):
    pairs = run_ingest(ingest_cfg(tmp_path, samples)).run
    step = downstream(tmp_path, samples, pairs)
    step.begin()
    step.commit({})
    run_ingest(ingest_cfg(tmp_path, samples, "source.ties=keep"), force=True)
    (tmp_path / "ingest" / "crashed" / "attempts" / "20260101T000000000000-abc123").mkdir(parents=True)

    statuses = {(s.job, s.name): s for s in list_runs(str(tmp_path))}
    assert {k: s.state for k, s in statuses.items()} == {
        ("consumer", "c1"): "stale",
        ("ingest", "crashed"): "incomplete",
        ("ingest", "uf"): "committed",
    }
    assert (
        statuses[("ingest", "uf")].rows["pairs"] == RunFolder.from_uri(pairs.uri).read_table("pairs").num_rows
    )

    res = CliRunner().invoke(app, ["runs", "list", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for text in ("consumer", "stale", "crashed", "incomplete", "uf", "committed", "pairs"):
        assert text in res.output
    assert "re-made with another config" in res.output
    shown = CliRunner().invoke(app, ["runs", "show", f"{tmp_path}/consumer/c1"])
    assert shown.exit_code == 0 and "stale:" in shown.output


def test_a_forced_oracle_run_with_a_wrong_model_id_spends_nothing_writes_nothing_and_keeps_the_run(
    tmp_path,
):
    """Through the job (batch mode: no Ray), not only ``check_model``."""
    import json

    from pydantic import SecretStr

    from crome_ray.oracle.config import OracleJobConfig
    from crome_ray.oracle.job import ledger_uri, run_oracle_job
    from crome_ray.oracle.simulator import RunningSimulator, SimConfig

    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": i, "prompt": f"Score {i}", "schema": json.dumps(schema)}) + "\n"
            for i in range(6)
        )
    )
    with RunningSimulator(SimConfig(batch_delay_s=0.1, models=("gemini-2.5-flash",))) as sim:

        def cfg(*extra):
            base = [f"input={prompts}", f"storage.root={tmp_path / 'runs'}", f"oracle.base_url={sim.url}"]
            base += ["oracle.mode=batch", "oracle.batch_poll_s=0.05", "run_name=o1", *extra]
            return load_config(OracleJobConfig, None, base)

        first = run_oracle_job(cfg(), SecretStr("k"))
        assert first.counts["answered"] == 6
        before = snapshot(tmp_path / "runs")
        calls_before = (sim.stats.requests, sim.stats.batch_jobs)
        with pytest.raises(Exception, match=r"'gemini-2\.0-flash' is not available"):  # priced, not served
            run_oracle_job(cfg("oracle.model=gemini-2.0-flash"), SecretStr("k"), force=True)
        assert (sim.stats.requests, sim.stats.batch_jobs) == calls_before  # nothing sent that is billed
    assert snapshot(tmp_path / "runs") == before  # no new attempt, ledger untouched, old run byte-identical
    run = RunFolder.from_uri(first.run.uri)
    assert run.manifest() == first.manifest and run.read_table("responses").num_rows == 6
    assert Path(ledger_uri(cfg())).exists()
