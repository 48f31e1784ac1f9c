"""The report one command away: the evaluation writes report.html next to report.md (the same
report, its plots inline by relative links), and `crome-ray report RUN` prints a local path to it
for an evaluate run or a pipeline run, copying a bucket's page and plots out first."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from crome_ray.cli import app
from crome_ray.config import load_config
from crome_ray.data.config import IngestConfig
from crome_ray.evaluate.html import images, local_report, render
from crome_ray.evaluate.report import PLOTS, write_report
from crome_ray.runs import Step
from tests.test_evaluate_report import doc, metrics, scored


def committed_evaluation(root: str, samples: Path, name: str = "eval-x") -> Step:
    """A committed run of the job 'evaluate' holding a real report (its config borrowed from
    ingest: only the run's identity matters here)."""
    source = samples / "ultrafeedback" / "eval_200.jsonl"
    cfg = load_config(
        IngestConfig, None, [f"source.path={source}", f"storage.root={root}", f"run_name={name}"]
    )
    step = Step("evaluate", name, cfg)
    assert step.begin()
    report = write_report(step.folder, doc({"baseline": metrics(scored(24)), "crome": metrics(scored(30))}))
    step.commit({"pairs": 40}, report=report)
    return step


def test_the_page_is_the_reports_markdown_with_its_tables_and_every_plot(tmp_path, samples):
    step = committed_evaluation(str(tmp_path), samples)
    folder = step.run.committed()
    page = Path(folder.file("report.html")).read_text()
    md = Path(folder.file("report.md")).read_text()
    assert page.startswith("<!doctype html>") and "<title>crome-ray report: eval-x</title>" in page
    assert page.count("<table>") == md.count("\n|---") > 2  # every markdown table became a table
    assert sorted(images(page)) == sorted(PLOTS)  # every plot, by a link relative to the page
    assert all((Path(folder.path) / name).is_file() for name in images(page))
    for cell in re.findall(r"\| (0\.\d{3} \[0\.\d\d, 0\.\d\d\]) \|", md)[:5]:  # the numbers themselves
        assert cell in page


def test_text_from_the_data_is_escaped_not_run():
    page = render("| a |\n|---|\n| <script>alert(1)</script> |\n", "t")
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_crome_ray_report_prints_the_pages_path_for_an_evaluate_or_a_pipeline_run(tmp_path, samples):
    step = committed_evaluation(str(tmp_path), samples)
    page = Path(step.run.committed().file("report.html"))
    res = CliRunner().invoke(app, ["report", step.run.uri])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(page)
    # a pipeline run names its evaluate step
    cfg = load_config(IngestConfig, None, [f"source.path={samples}/ultrafeedback/eval_200.jsonl",
                                           f"storage.root={tmp_path}", "run_name=p"])  # fmt: skip
    pipeline = Step("pipeline", "p", cfg)
    assert pipeline.begin()
    pipeline.commit({}, steps=[{"name": "evaluate", "uri": step.run.uri, "done": True}])
    res = CliRunner().invoke(app, ["report", pipeline.run.uri])
    assert res.exit_code == 0 and res.output.strip() == str(page), res.output


def test_a_run_without_a_report_is_named_in_a_clear_error(tmp_path, samples):
    cfg = load_config(IngestConfig, None, [f"source.path={samples}/ultrafeedback/eval_200.jsonl",
                                           f"storage.root={tmp_path}", "run_name=uf"])  # fmt: skip
    step = Step("ingest", "uf", cfg)
    assert step.begin()
    step.commit({})
    res = CliRunner().invoke(app, ["report", step.run.uri])
    assert (
        res.exit_code == 1 and "is a ingest run: give an evaluate, pipeline or self-check run" in res.output
    )
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_a_buckets_report_is_copied_out_with_its_plots(s3, samples, tmp_path, monkeypatch):
    monkeypatch.setenv(*s3.endpoint_variable())  # as a user points the tools at their store
    bucket = s3.new_bucket()
    root = f"s3://{bucket}/runs"
    step = committed_evaluation(root, samples, "eval-s3")
    page = local_report(step.run.uri, tmp_path / "cache")
    assert page == tmp_path / "cache" / "eval-s3" / "report.html"
    assert sorted(p.name for p in page.parent.iterdir()) == sorted([*PLOTS, "report.html"])
    stored = s3.objects(bucket, "runs/evaluate/eval-s3/")
    (key,) = [k for k in stored if k.endswith("/report.html")]
    assert page.read_bytes() == stored[key]  # the page as the evaluation wrote it, read from the server
    for name in PLOTS:
        (plot,) = [k for k in stored if k.endswith("/" + name)]
        assert (page.parent / name).read_bytes() == stored[plot]


def test_a_report_written_before_the_page_existed_is_rendered_from_its_markdown(tmp_path, samples):
    step = committed_evaluation(str(tmp_path), samples)
    Path(step.run.committed().file("report.html")).unlink()
    page = local_report(step.run.uri, tmp_path / "cache")
    assert page.parent == tmp_path / "cache" / "eval-x" and "<table>" in page.read_text()
    assert all((page.parent / name).is_file() for name in images(page.read_text()))
