"""The evaluation's report as one HTML page: ``report.md`` rendered, its plots inline.

A file next to ``report.md`` and the PNGs it names (relative links, so the folder opens as it is,
local or copied from a bucket); no server. Rendered with markdown-it-py (CommonMark with
tables: the parser rich already brings), wrapped in a page with a little CSS so the wide tables
scroll instead of breaking the layout.

``local_report`` is what ``crome-ray report`` runs: it finds the evaluation behind a run (an
evaluate run, or a pipeline or self-check run, through its evaluate step) and returns a local
path to the page, copying the page and its plots out of a bucket first.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from crome_ray.errors import CromeError
from crome_ray.storage import RunFolder, is_bucket_uri

PAGE = "report.html"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem;
       color: #1b1b1b; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f3f3f3; }
img { max-width: 100%; margin: 0.5rem 0; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 0.2rem; }
"""
_IMAGE = re.compile(r'<img src="([^"]+)"')


def render(markdown_text: str, title: str) -> str:
    """The page: ``markdown_text`` rendered, under ``title``."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def title_for(folder_uri: str) -> str:
    """The page's title: the run's name, from the URI of the run or of one of its attempts."""
    return f"crome-ray report: {folder_uri.split('/attempts/')[0].rstrip('/').rsplit('/', 1)[-1]}"


def images(page: str) -> list[str]:
    """The image files a page refers to, in order."""
    return _IMAGE.findall(page)


class NoReport(CromeError):
    """The run has no evaluation report to show."""


def evaluation_of(run: RunFolder) -> RunFolder:
    """The evaluate run behind ``run``: itself, or a pipeline's (or self-check's) evaluate step."""
    manifest = run.manifest()
    job = manifest.get("job")
    if job == "evaluate":
        return run
    if job == "pipeline":
        steps = {s.get("name"): s for s in manifest.get("details", {}).get("steps", [])}
        step = steps.get("evaluate")
        if step and step.get("uri"):
            return RunFolder.from_uri(step["uri"])
        raise NoReport(f"pipeline run {run.uri} has no evaluate step yet: re-run the pipeline to finish it")
    raise NoReport(f"{run.uri} is a {job} run: give an evaluate, pipeline or self-check run")


def local_report(uri: str, cache: Path) -> Path:
    """A local path to the HTML report of the run at ``uri``. A local run's page is used where it
    is; otherwise (a bucket's run, or a report written before the page existed, rendered from its
    ``report.md``) the page and its plots go to ``cache/<evaluation run name>/``."""
    evaluation = evaluation_of(RunFolder.from_uri(uri))
    folder = evaluation.committed()
    fs = folder.fs
    if fs.exists(folder.file(PAGE)):
        if not is_bucket_uri(folder.uri):
            return Path(folder.path) / PAGE
        page = fs.cat_file(folder.file(PAGE)).decode()
    elif fs.exists(folder.file("report.md")):
        page = render(fs.cat_file(folder.file("report.md")).decode(), title_for(evaluation.uri))
    else:
        raise NoReport(f"evaluation {evaluation.uri} has no report.md")
    out = cache / evaluation.name
    out.mkdir(parents=True, exist_ok=True)
    (out / PAGE).write_text(page)
    for name in images(page):
        if "/" not in name and fs.exists(folder.file(name)):
            (out / name).write_bytes(fs.cat_file(folder.file(name)))
    return out / PAGE
