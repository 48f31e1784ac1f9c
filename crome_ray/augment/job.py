"""The augmentation job (Ray composition): preference pairs → the Crome training set.

Driver, step by step (``run_augment_job`` follows these in order):
1. plan the oracles (``oracle.choice``: the primary, the fallback, their keys; refused without
   a price, since the cap needs one);
2. find the input pairs (a committed ingest run, or a source file ingested first) and begin
   the step (a committed run of the same config and inputs: nothing to do);
3. one streaming pass over the input (``augment.scan``, constant memory): the dry run's
   projection, the examples that carry the verifier's control probes, the pool of requests
   for IQN and RRM;
4. refuse a run whose projection exceeds the cap, unless ``allow_partial``; check the
   primary's model id with one free call (unavailable under ``on_error``: the fallback
   serves every call);
5. start the governor actors (the primary's and the fallback's: quota, cap, cache index and
   a ledger each, beside the run folder, so a resumed run pays only for what it lacks) and
   the table sinks (``augment.sink``);
6. stream the pairs through the Ray Data graph (``augment.graph``); the sinks write each
   block's records and send the driver the block's tally (``augment.tally``);
7. close the sinks and the governors (exact spend into the ledgers), check that the files
   hold what the tallies counted, and pass each oracle-written kind through the quality gate
   (``augment.gate``): a kind under a floor is left out (its files move from ``pairs`` to
   ``left_out``) or, with ``gate.on_fail: stop``, the run stops uncommitted;
8. commit: tables ``pairs`` (what training reads, ties included), ``rejected``, ``filtered``,
   ``controls``, ``left_out`` and ``quarantine``; the manifest holds the counts per kind, the
   gate's report per kind, the ratio to the source, spend, calls and cache hits, the
   backends, the leakage summary and each verifier's control false-pass rate.

The driver never reads the stream's records: it holds fixed-size summaries (counters, a
reservoir of leakage values) and gives its freed heap back as it goes (``crome_ray.heap``),
so its memory does not grow with the data (``bench/augment_memory.py``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from crome_ray.augment.config import AugmentConfig
from crome_ray.augment.errors import AugmentError
from crome_ray.augment.gate import KindReport, reports
from crome_ray.augment.graph import build_stream, cache_root
from crome_ray.augment.kinds import GATED, KINDS, is_on, ratio_note
from crome_ray.augment.scan import InputScan, project_input
from crome_ray.augment.sink import start_sinks
from crome_ray.augment.tally import Tally
from crome_ray.heap import Trimmer
from crome_ray.oracle.choice import OraclePlan, plan_oracle
from crome_ray.oracle.config import OracleConfig
from crome_ray.progress import eta_seconds
from crome_ray.records import AUGMENTED_PAIR_SCHEMA, CONTROL_SCHEMA, QUARANTINE_SCHEMA, REJECTED_SCHEMA
from crome_ray.runs import QUARANTINE, Step, StepResult
from crome_ray.storage import RunFolder, is_bucket_uri, join

JOB = "augment"
TABLES = {
    "pairs": AUGMENTED_PAIR_SCHEMA,
    "rejected": REJECTED_SCHEMA,
    "filtered": AUGMENTED_PAIR_SCHEMA,
    "controls": CONTROL_SCHEMA,
    "left_out": AUGMENTED_PAIR_SCHEMA,
    QUARANTINE: QUARANTINE_SCHEMA,
}
SINKS = 1  # table sink actors (augment.sink)
Progress = Callable[[dict[str, Any]], None]


def run_name(cfg: AugmentConfig) -> str:
    return cfg.run_name or f"augment-{cfg.fingerprint()[:8]}"


def ledger_uri(cfg: AugmentConfig, pass_: str = "") -> str:
    return join(cfg.storage.root, JOB, f"{run_name(cfg)}{'.' + pass_ if pass_ else ''}.ledger.json")


def input_files(cfg: AugmentConfig, log: Callable[[str], None]) -> tuple[RunFolder, list[str]]:
    from crome_ray.data.inputs import pair_files, pairs_run

    run = pairs_run(cfg.input, cfg.storage, None, log)
    return run, pair_files(run)


def baseline_run(cfg: AugmentConfig) -> dict[str, RunFolder]:
    """The baseline filter's model as lineage, when it is a committed training run (a retrained
    baseline then makes the augmentation run again); an HF id or a plain folder is in the config."""
    uri = cfg.filter.model
    if not uri or not (is_bucket_uri(uri) or Path(uri).is_dir()):
        return {}
    run = RunFolder.from_uri(uri, cfg.storage)
    return {"baseline": run} if run.is_committed() else {}


def dry_run(cfg: AugmentConfig, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The projection alone: calls, tokens and dollars, without starting anything."""
    _, files = input_files(cfg, log)
    primary = cfg.fallback.oracle if cfg.fallback.policy == "local_only" else cfg.oracle
    return project_input(cfg, files, primary)[1]


def run_augment_job(
    cfg: AugmentConfig,
    api_key: SecretStr,
    *,
    force: bool = False,
    progress: Progress | None = None,
    fallback_key: SecretStr | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> StepResult:
    """``api_key``: the primary oracle's; ``fallback_key``: the fallback's, if it needs one."""
    plan = plan_oracle(cfg, api_key, fallback_key)
    if plan.primary.mode == "batch":
        raise AugmentError(
            "oracle.mode=batch is not supported by the augmentation yet (its three phases each wait for "
            "the one before); use oracle.mode=online, or run each phase's prompts with `crome-ray oracle`"
        )
    input_run, files = input_files(cfg, log)
    step = Step(JOB, run_name(cfg), cfg, inputs={"pairs": input_run, **baseline_run(cfg)}, force=force)
    if not step.begin():
        return step.result
    scan, projection = project_input(cfg, files, plan.primary)
    cap = plan.primary.budget.cap_usd
    log(
        f"dry run: {projection['examples']} examples, {projection['total_calls']} calls at most, "
        f"~${projection['usd'] or 0:.4f} (cap ${cap:g})"
    )
    if not projection["within_cap"] and not cfg.allow_partial:
        raise AugmentError(
            f"the dry run projects ${projection['usd']:.4f} for {projection['total_calls']} calls, more than "
            f"the cap of ${cap:g}: raise oracle.budget.cap_usd, augment fewer rows (limit=N), or pass "
            "--allow-partial to spend up to the cap and mark the rest"
        )
    needs_oracle = projection["total_calls"] > 0  # IQN-only and RRM runs call no oracle at all
    if needs_oracle:
        plan = plan.checked()
        if plan.unavailable:
            log(f"the primary oracle is unavailable ({plan.unavailable}); the local oracle serves every call")
    summary, stats, written = _stream(cfg, files, scan, plan if needs_oracle else None, step, progress, log)
    gate = _gate(cfg, summary, log)
    left_out = _adopt_tables(step, written, summary, [k for k, r in gate.items() if r.left_out])
    details = {
        "projection": projection,
        "oracle": stats.get("primary", {}),
        "fallback": stats.get("fallback"),
        "ledger": ledger_uri(cfg),
        "spend_usd": round(sum(s.get("spent_usd", 0.0) for s in stats.values()), 6),
        **summary.details(cfg.controls.max_false_pass_rate),
        "gate": {k: r.as_dict() for k, r in gate.items()},
        "verify_neutrals": cfg.run_tasks().verify_neutrals,
        "ratio_note": ratio_note(cfg.tasks),
    }
    if plan.unavailable is not None:
        details["primary_unavailable"] = plan.unavailable
    return step.commit(summary.counts(scan.rows, scan.examples, left_out), **details)


def _stream(
    cfg: AugmentConfig,
    files: list[str],
    scan: InputScan,
    plan: OraclePlan | None,
    step: Step,
    progress: Progress | None,
    log: Callable[[str], None],
) -> tuple[Tally, dict[str, Any], list[dict[str, Any]]]:
    """Steps 5 to 7: the governors and sinks up, the stream through, all closed. Returns the
    merged tally, the governors' final stats and what each sink wrote."""
    import ray

    summary, stats, written = Tally(), {}, []
    tag = f"aug-{run_name(cfg)}-{uuid.uuid4().hex[:6]}"
    names = {"primary": tag, "fallback": f"{tag}-fb"}
    governors: dict[str, Any] = {}
    actors: list = []  # whatever lives for the run: killed whatever happens
    servers: list = []  # a local fallback engine's actors (build_stream starts them)
    try:
        if plan is not None:
            governors["primary"] = _governor(names["primary"], plan.primary, ledger_uri(cfg), cfg)
            if plan.fallback is not None:
                governors["fallback"] = _governor(
                    names["fallback"], plan.fallback, ledger_uri(cfg, "fallback"), cfg
                )
        actors += governors.values()
        sinks = start_sinks(SINKS, step.folder, cfg.storage.model_dump_json(), TABLES, cfg.rows_per_file)
        actors += sinks
        ds = build_stream(cfg, files, scan, plan, names, sinks, servers, log)
        started, last, trimmer, controls_checked = time.monotonic(), 0.0, Trimmer(), False
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for doc in batch.column("tally").to_pylist():
                summary.merge(json.loads(doc))
            controls_checked = controls_checked or _check_controls(cfg, summary, len(scan.control_ids))
            trimmer.tick()  # the driver's freed heap back to the OS: its memory stays flat
            if progress and time.monotonic() - last > 2.0:
                last = time.monotonic()
                progress(_progress(summary, scan, governors, started))
        written = ray.get([s.close.remote() for s in sinks])
        # the engines settle their last calls with the governor before it closes
        ray.get([s.close.remote() for s in servers], timeout=60)
        stats = {name: ray.get(g.close.remote()) for name, g in governors.items()}
    finally:
        for a in [*actors, *servers]:
            ray.kill(a)
    if progress:
        progress(_progress(summary, scan, None, started, stats))
    return summary, stats, written


def _governor(name: str, o: OracleConfig, ledger: str, cfg: AugmentConfig):
    import ray

    from crome_ray.oracle.governor import governor_actor

    g = governor_actor(name).remote(
        o.model_dump_json(), ledger, cache_root(o, cfg), cfg.storage.model_dump_json()
    )
    ray.get(g.ping.remote())
    return g


def _gate(cfg: AugmentConfig, summary: Tally, log: Callable[[str], None]) -> dict[str, KindReport]:
    """The quality gate's report per kind; a kind under a floor is logged, or stops the run."""
    on = [k.name for k in KINDS if k.name in GATED and is_on(k, cfg.tasks) and not cfg.tasks.rrm]
    gate = reports(summary.stats, summary.accepted, summary.rejected_tasks, summary.controls, cfg.gate, on)
    failed = {k: r.left_out for k, r in gate.items() if r.left_out}
    if failed and cfg.gate.on_fail == "stop":
        lines = "; ".join(f"{k}: {why}" for k, why in failed.items())
        raise AugmentError(
            f"the quality gate stopped the run before it committed ({lines}). Read the rejected table of "
            "the attempt, use a stronger oracle, or set gate.on_fail=leave_out to commit without them"
        )
    for kind, why in failed.items():
        log(f"{kind} left out of pairs: {why}")
    return gate


def _adopt_tables(
    step: Step, written: list[dict[str, Any]], summary: Tally, left_out: list[str] = ()
) -> dict[str, int]:
    """The sinks' files into the step's manifest, once their rows are what the tallies counted
    and the attempt's table folders hold exactly those files (readers list the folder). The
    ``left_out`` kinds' files move from ``pairs`` to the ``left_out`` table first. Returns the
    rows left out per kind."""
    folder = step.folder
    entries: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    moved: dict[str, int] = {}
    for w in written:
        for table, entry in w["tables"].items():
            files, rows = list(entry["files"]), entry["rows"]
            for kind, part in entry.get("kinds", {}).items():
                if kind in left_out:
                    entries["left_out"].append(_move(folder, part, "left_out"))
                    moved[kind] = moved.get(kind, 0) + part["rows"]
                    files = [f for f in files if f not in part["files"]]
                    rows -= part["rows"]
            entries[table].append({"files": files, "rows": rows})
    expected = Counter(summary.tables)
    expected["pairs"] -= sum(moved.values())
    expected["left_out"] = sum(moved.values())
    for name, schema in TABLES.items():
        rows = sum(e["rows"] for e in entries[name])
        files = sorted(f for e in entries[name] for f in e["files"])
        if rows != expected[name]:
            raise AugmentError(
                f"the sinks wrote {rows} rows of {name} but the stream counted {expected[name]}: "
                "the run is not committed (a block was lost or written twice); run it again"
            )
        found = sorted(f"{name}/{p.rsplit('/', 1)[-1]}" for p in folder.table_files(name))
        if found != files:
            raise AugmentError(
                f"the sinks reported the files {files} of {name} but {folder.uri_of(name)} holds {found}: "
                "the run is not committed; run it again"
            )
        step.written_table(name, schema, files, rows)
    return moved


def _move(folder, entry: dict[str, Any], table: str) -> dict[str, Any]:
    """A writer's files into another table folder of the attempt (nothing reads an attempt
    before its commit)."""
    folder.fs.makedirs(folder.file(table), exist_ok=True)
    files = []
    for f in entry["files"]:
        to = f"{table}/{f.rsplit('/', 1)[-1]}"
        folder.fs.mv(folder.file(f), folder.file(to))
        files.append(to)
    return {"files": files, "rows": entry["rows"]}


def _check_controls(cfg: AugmentConfig, summary: Tally, probes_expected: int) -> bool:
    """True once every control example has been seen; raises when a verifier fails calibration."""
    if summary.controls.total() < 2 * probes_expected and summary.examples < max(probes_expected * 4, 64):
        return False
    limit = cfg.controls.max_false_pass_rate
    for verifier in summary.verifiers():
        rate = summary.false_pass_rate(verifier)
        if rate is None or limit is None or rate <= limit:
            continue
        counts = summary.control_counts(verifier)
        judged = counts["passed"] + counts["failed"]
        what = "the verifier" if verifier == "causal" else f"the {verifier} verifier"
        raise AugmentError(
            f"{what} passed {counts['passed']} of {judged} control probes (false-pass rate "
            f"{rate:.0%} > controls.max_false_pass_rate {limit:.0%}): it cannot tell a rewrite from an "
            "unchanged or unrelated answer, so its verdicts would let bad rewrites through. The run "
            "stopped and committed nothing; use a stronger oracle, or raise the limit knowingly"
        )
    return True


def _progress(summary: Tally, scan: InputScan, governors, started: float, final=None) -> dict[str, Any]:
    import ray

    gs = final if final is not None else {k: ray.get(g.stats.remote()) for k, g in governors.items()}
    calls = sum(s.get("grants", 0) for s in gs.values())
    spent = sum(s.get("spent_usd", 0.0) for s in gs.values())
    elapsed = max(time.monotonic() - started, 1e-6)
    done = summary.examples
    eta = eta_seconds(done, scan.examples, elapsed)
    return {
        "examples": done,
        "of": scan.examples,
        "calls": calls,
        "calls_per_s": round(calls / elapsed, 2),
        "spent_usd": round(spent, 6),
        "cap_usd": gs.get("primary", {}).get("cap_usd"),
        "hits": sum(s.get("hits", 0) for s in gs.values()),
        "throttled": sum(s.get("throttled", 0) for s in gs.values()),
        "pairs": summary.tables["pairs"],
        "eta_s": None if eta is None else round(eta, 1),
        "final": final is not None,
    }
