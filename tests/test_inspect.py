"""`crome-ray inspect RUN`: a user reads sample pairs of a committed augmentation, and the
rewrites it refused with why, before paying for training; from local disk and from an S3 bucket
(moto's server). The run is written by the augmentation's own sink and commit path, from the
flow's records on real sample pairs (the simulator as oracle, one junk-writing task among them)."""

import asyncio
import json

import pytest
from typer.testing import CliRunner

from crome_ray.augment.browse import samples as browse
from crome_ray.augment.config import AugmentConfig, AugmentTasks
from crome_ray.augment.flow import Answer, Settings, augment_example
from crome_ray.augment.job import TABLES, _adopt_tables
from crome_ray.augment.prompts import Example
from crome_ray.augment.sink import TableSink, block_key
from crome_ray.augment.stages import records_table
from crome_ray.augment.tally import Tally
from crome_ray.cli import app
from crome_ray.config import load_config
from crome_ray.data.config import IngestConfig
from crome_ray.data.ingest import run_ingest
from crome_ray.runs import Step
from crome_ray.storage import RunFolder, StorageConfig
from tests.test_augment_flow import Oracle

runner = CliRunner()
EXAMPLES = 4


def junk_para(task):
    """The oracle answers every PARA task with a word of its instruction, as SmolLM2 did."""
    if task.kind == "para":
        return Answer({"rewrite": "paraphrase"}, backend="vllm", model="smollm2")
    return None


def committed_augmentation(root: str, samples, storage: StorageConfig) -> str:
    source = samples / "ultrafeedback" / "eval_200.jsonl"
    overrides = [f"storage.root={root}", "run_name=uf", "source.limit=20", f"source.path={source}"]
    if storage.endpoint_url:
        overrides.append(f"storage.endpoint_url={storage.endpoint_url}")
    ingest = run_ingest(load_config(IngestConfig, None, overrides))
    pairs = [r for r in ingest.run.read_table("pairs").to_pylist() if r["label"] == "chosen"][:EXAMPLES]
    cfg = AugmentConfig(storage=storage.model_copy(update={"root": root}), run_name="aug")
    step = Step("augment", "aug", cfg, inputs={"pairs": ingest.run})
    assert step.begin()
    sink = TableSink(step.folder.uri, cfg.storage.model_dump_json(), TABLES, 1000, "s0")
    tally, settings = Tally(), Settings(AugmentTasks(attributes=1))
    for r in pairs:
        ex = Example(r["source_id"], r["prompt"], r["chosen"], r["rejected"])
        out = asyncio.run(augment_example(ex, Oracle(override=junk_para), settings))
        records = [(t, ex.id, row) for t, row in out.rows] + [("stats", ex.id, dict(out.stats))]
        batch = records_table(records)
        tally.merge(json.loads(sink.write(block_key(batch), batch)))
    moved = _adopt_tables(step, [sink.close()], tally)
    return step.commit(tally.counts(len(pairs), len(pairs), moved)).run.uri


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, samples):
    return committed_augmentation(str(tmp_path_factory.mktemp("inspect") / "runs"), samples, StorageConfig())


def test_inspect_shows_the_requested_kind_side_by_side_with_what_decided_it(local_run):
    res = runner.invoke(app, ["inspect", local_run, "--kind", "causal_degrade", "-n", "2", "--width", "80"])
    assert res.exit_code == 0, res.output
    total = browse(RunFolder.from_uri(local_run), "pairs", "causal_degrade")[1]
    assert total >= 2 and f"2 of {total} rows in pairs of kind causal_degrade" in res.output
    assert res.output.count("causal_degrade | label chosen") == 2
    assert "A (" in res.output and "B (" in res.output and "request:" in res.output
    assert res.output.count("decided: passed the code checks and the verifier; attribute:") == 2
    assert "neutral_can |" not in res.output


def test_inspect_rejected_gives_each_refused_rewrite_its_check_and_the_answer_it_rewrote(local_run, samples):
    res = runner.invoke(app, ["inspect", local_run, "--rejected", "--kind", "neutral_para", "-n", "3"])
    assert res.exit_code == 0, res.output
    assert f"3 of {EXAMPLES} rows in rejected of kind neutral_para" in res.output
    assert res.output.count("refused at checks (") == 3 and "written by vllm smollm2" in res.output
    rows, total = browse(RunFolder.from_uri(local_run), "rejected", "para", n=10)
    assert total == EXAMPLES and {r.b for r in rows} == {"paraphrase"}
    first = json.loads((samples / "ultrafeedback" / "eval_200.jsonl").read_text().splitlines()[0])
    chosen = {r.source_id: r.a for r in rows}
    assert all(a and a != "(the input pair is not readable)" for a in chosen.values())  # A from the input run
    assert first["chosen"] in chosen.values() or len(chosen) == EXAMPLES


def test_the_same_seed_shows_the_same_rows_and_another_seed_may_not(local_run):
    one = browse(RunFolder.from_uri(local_run), "pairs", None, n=3, seed=1)[0]
    assert one == browse(RunFolder.from_uri(local_run), "pairs", None, n=3, seed=1)[0]
    assert len({r.kind for r in browse(RunFolder.from_uri(local_run), "pairs", None, n=50)[0]}) >= 4


def test_inspect_refuses_what_it_cannot_read_with_a_clear_line(local_run, tmp_path):
    res = runner.invoke(app, ["inspect", local_run, "--kind", "neutral_xyz"])
    assert res.exit_code != 0 and "no kind 'neutral_xyz': one of original, causal_degrade" in res.output
    ingest = local_run.replace("/augment/aug", "/ingest/uf")
    res = runner.invoke(app, ["inspect", ingest])
    assert res.exit_code != 0 and "is a ingest run: inspect reads augmentation runs" in res.output
    res = runner.invoke(app, ["inspect", str(tmp_path / "nothing")])
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_inspect_reads_a_run_in_an_s3_bucket(s3, samples, monkeypatch):
    bucket = s3.new_bucket()
    uri = committed_augmentation(f"s3://{bucket}/crome", samples, StorageConfig(endpoint_url=s3.endpoint))
    monkeypatch.setenv(*s3.endpoint_variable())  # how a user points the CLI at the endpoint
    res = runner.invoke(app, ["inspect", uri, "--rejected", "-n", "2"])
    assert res.exit_code == 0, res.output
    assert f"rows in rejected of {uri}" in res.output and res.output.count("refused at checks (") == 2
    res = runner.invoke(app, ["inspect", uri, "--kind", "neutral_can", "-n", "1"])
    assert res.exit_code == 0 and "neutral_can | label tie" in res.output
