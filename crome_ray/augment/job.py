"""The augmentation job (Ray composition): preference pairs → the Crome training set.

Driver:
1. find the input pairs (a committed ingest run, or a source file ingested first);
2. one streaming pass over them (constant memory): the dry run's projection, the first
   ``controls.examples`` example ids (they carry the verifier's control probes) and a
   reservoir sample of ``iqn.pool`` requests for IQN/RRM;
3. refuse a run whose projection exceeds the cap, unless ``allow_partial``; check the oracle's
   model id with one free call;
4. start the governor actors (the primary's and the fallback's: quota, cap, cache index
   and a ledger each, beside the run folder, so a resumed run pays only for what it lacks);
5. stream the pairs through the stages (``augment.stages``): other request → oracle work →
   baseline filter → the table sinks (``augment.sink``), which write each block's records to
   their tables and send the driver the block's tally;
6. close the sinks and the governors (exact spend into the ledgers), check that the files hold
   what the tallies counted, and commit the run: tables ``pairs``
   (what training reads, ties included), ``rejected``, ``filtered``, ``controls`` and
   ``quarantine``; the manifest holds the counts per kind, the ratio to the source, spend,
   calls and cache hits, the backends, the leakage summary and the control false-pass rate.

The driver never reads the stream's records: it holds fixed-size summaries (counters, a
reservoir of leakage values; ``augment.tally``) and gives its freed heap back as it goes
(``crome_ray.heap``), so its memory does not grow with the data (``bench/augment_memory.py``).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from crome_ray.augment import prompts as P
from crome_ray.augment.flow import CONTROL_SCHEMA, REJECTED_SCHEMA, control_tasks
from crome_ray.augment.leakage import summarise
from crome_ray.augment.plan import PlannedTask, Projection, expected_output_tokens, project
from crome_ray.augment.sink import forward, start_sinks
from crome_ray.augment.stages import BaselineFilterStage, OracleWorkStage, OtherRequestStage
from crome_ray.augment.tally import Tally
from crome_ray.config import AugmentConfig, OracleConfig
from crome_ray.heap import Trimmer
from crome_ray.oracle.job import FALLBACK_KINDS, check_model, stage_resources
from crome_ray.oracle.protocol import ErrorKind, OracleError
from crome_ray.oracle.stage import OracleServer
from crome_ray.records import AUGMENTED_PAIR_SCHEMA, QUARANTINE_SCHEMA
from crome_ray.runs import QUARANTINE, Step, StepResult
from crome_ray.storage import RunFolder, is_bucket_uri, join, path_in_filesystem, pyarrow_filesystem

JOB = "augment"
INPUT_COLUMNS = [
    "pair_id",
    "prompt",
    "chosen",
    "rejected",
    "label",
    "kind",
    "source",
    "source_id",
    "subset",
    "score_chosen",
    "score_rejected",
    "metadata",
    "schema_version",
]
TABLES = {
    "pairs": AUGMENTED_PAIR_SCHEMA,
    "rejected": REJECTED_SCHEMA,
    "filtered": AUGMENTED_PAIR_SCHEMA,
    "controls": CONTROL_SCHEMA,
    QUARANTINE: QUARANTINE_SCHEMA,
}
SINKS = 1  # table sink actors (augment.sink)
SINK_TASK_CPUS = 0.05  # the tasks that hand blocks to the sinks wait on them; they must not take a slot
SCAN_COLUMNS = ["source_id", "prompt", "chosen", "rejected", "label"]
MAX_BLOCK_ROWS = 256  # rows per block of the stream at most (block_rows)
Progress = Callable[[dict[str, Any]], None]


class AugmentError(RuntimeError):
    """An augmentation run that must not start or go on; the message says why and what to do."""


def run_name(cfg: AugmentConfig) -> str:
    return cfg.run_name or f"augment-{cfg.fingerprint()[:8]}"


def ledger_uri(cfg: AugmentConfig, pass_: str = "") -> str:
    return join(cfg.storage.root, JOB, f"{run_name(cfg)}{'.' + pass_ if pass_ else ''}.ledger.json")


def cache_root(o: OracleConfig, cfg: AugmentConfig) -> str:
    return o.cache or join(cfg.storage.root, "oracle-cache")


def token_counter(o: OracleConfig) -> tuple[Callable[[str], int], str]:
    """The dry run's token count: the local model's own tokenizer, or ~4 characters a token
    (Gemini's documented rule of thumb; its tokenizer is a remote call)."""
    if o.local:
        try:
            from transformers import AutoTokenizer

            from crome_ray.models import resolve_model

            tok = AutoTokenizer.from_pretrained(str(resolve_model(o.model)))
            return (lambda text: len(tok.encode(text, add_special_tokens=False))), f"{o.model} tokenizer"
        except Exception:  # a model not on this machine: the estimate below
            pass
    return (lambda text: max(1, (len(text) + 3) // 4)), "4 characters a token"


class InputScan:
    """What one pass over the input gives the driver, in constant memory."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self.rows = 0
        self.examples = 0
        self.control_ids: list[str] = []
        self.oracle_ids: list[str] = []  # with oracle_examples: the examples the oracle works on
        self.control_examples = (  # the probes ride on examples the oracle works on
            cfg.controls.examples
            if cfg.oracle_examples is None
            else min(cfg.controls.examples, cfg.oracle_examples)
        )
        self.controls: list[PlannedTask] = []  # the control probes' tasks (a fixed number at most)
        self.pool: list[tuple[str, str]] = []  # (request, chosen answer)
        self._rng = random.Random(cfg.iqn.seed)
        self._seen_requests = 0

    def examples_of(self, files: list[str], fs) -> Iterator[P.Example]:
        import pyarrow.parquet as pq

        cfg = self.cfg
        for f in files:
            pf = pq.ParquetFile(path_in_filesystem(f), filesystem=fs)
            for batch in pf.iter_batches(batch_size=1024, columns=SCAN_COLUMNS):
                for row in batch.to_pylist():
                    if cfg.limit is not None and self.rows >= cfg.limit:
                        return
                    self.rows += 1
                    self._sample(row["prompt"], row["chosen"])
                    if row["label"] != "chosen":
                        continue
                    self.examples += 1
                    ex = P.Example(row["source_id"], row["prompt"], row["chosen"], row["rejected"])
                    if cfg.oracle_examples is not None and len(self.oracle_ids) < cfg.oracle_examples:
                        self.oracle_ids.append(row["source_id"])
                    if (
                        len(self.control_ids) < self.control_examples
                        and cfg.tasks.verify
                        and not cfg.tasks.rrm
                    ):
                        self.control_ids.append(row["source_id"])
                        self.controls += control_tasks(
                            ex, ex.rejected, cfg.tasks
                        )  # same size as the real probes
                    yield ex

    def _sample(self, request: str, chosen: str) -> None:
        """Reservoir sampling (algorithm R): every request equally likely to be in the pool."""
        self._seen_requests += 1
        if len(self.pool) < self.cfg.iqn.pool:
            self.pool.append((request, chosen))
        else:
            j = self._rng.randrange(self._seen_requests)
            if j < self.cfg.iqn.pool:
                self.pool[j] = (request, chosen)


def input_files(cfg: AugmentConfig, log: Callable[[str], None]):
    from crome_ray.train.dataset import pair_files, pairs_run

    run = pairs_run(cfg.input, cfg, None, log)
    return run, pair_files(run)


def baseline_run(cfg: AugmentConfig) -> dict[str, RunFolder]:
    """The baseline filter's model as lineage, when it is a committed training run (a retrained
    baseline then makes the augmentation run again); an HF id or a plain folder is in the config."""
    uri = cfg.filter.model
    if not uri or not (is_bucket_uri(uri) or Path(uri).is_dir()):
        return {}
    run = RunFolder.from_uri(uri, cfg.storage)
    return {"baseline": run} if run.is_committed() else {}


def plan(cfg: AugmentConfig, files: list[str], oracle: OracleConfig) -> tuple[InputScan, dict[str, Any]]:
    """The dry run: one pass over the input; the calls, tokens and dollars a run would take."""
    scan = InputScan(cfg)
    count, how = token_counter(oracle)
    started = time.monotonic()
    proj: Projection = project(
        scan.examples_of(files, pyarrow_filesystem(files[0], cfg.storage)),
        cfg.tasks,
        count,
        oracle.price(),
        oracle_examples=cfg.oracle_examples,
    )
    for t in scan.controls:  # the verifier's control probes are calls too
        proj.calls["control"] = proj.calls.get("control", 0) + 1
        proj.input_tokens += count(t.task.system) + count(t.task.prompt)
        proj.output_tokens += expected_output_tokens(t, count)
    if proj.usd is not None:
        price = oracle.price()
        proj.usd = (proj.input_tokens * price.input_per_m + proj.output_tokens * price.output_per_m) / 1e6
    doc = {
        **proj.as_dict(),
        "source_rows": scan.rows,
        "oracle": f"{oracle.backend} {oracle.model}",
        "tokens_counted_by": how,
        "cap_usd": float(oracle.budget.cap_usd),
        "within_cap": proj.usd is None or proj.usd <= float(oracle.budget.cap_usd),
        "seconds": round(time.monotonic() - started, 2),
        "note": "an upper bound on calls (every rewrite assumed to pass its checks; retries aside); "
        "tokens are estimates; the cap, not this, bounds the spend",
    }
    return scan, doc


def dry_run(cfg: AugmentConfig, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    _, files = input_files(cfg, log)
    return plan(cfg, files, _primary(cfg)[0])[1]


def block_rows(rows: int, batch_size: int, slots: int, most: int = MAX_BLOCK_ROWS) -> int:
    """Rows per block of the stream: a whole number of oracle batches, at least four blocks per
    slot (oracle actors x batches each works on at once) so that the work spreads, and no more
    than ``most`` rows so that a block's results reach the driver soon. Not one batch a block:
    Ray Data's driver keeps bookkeeping for every block queued between stages (20 to 40 KiB
    each, measured: 6,250 blocks of 16 rows made the driver's own memory grow by 145 MiB
    from 10k to 100k rows, 391 blocks of 256 by 25 MiB; ``bench/augment_memory.py``)."""
    per_slot = math.ceil(rows / max(1, slots * 4))
    batches = max(1, min(per_slot, max(most, batch_size)) // batch_size)
    return batches * batch_size


def check_cpu_headroom(actors: dict[str, float], log: Callable[[str], None]) -> None:
    """The stages' actors live for the whole run; Ray Data's own tasks (file listing, read,
    repartition) each ask for a whole CPU beside them. On a fixed cluster with less than one
    CPU left over, the stream never starts and the run waits forever: say so instead. On a
    cluster that can grow (``RAY_ADDRESS`` set), warn: the autoscaler may add the CPU."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    reserved = sum(actors.values())
    if total - reserved >= 1.0:
        return
    parts = ", ".join(f"{k} {v:g}" for k, v in actors.items() if v)
    message = (
        f"the stages' actors reserve {reserved:g} of the cluster's {total:g} CPUs ({parts}); Ray Data's "
        "read and repartition tasks need 1 CPU beside them. Lower those settings (a local engine's "
        "threads do not depend on its Ray CPUs: oracle.engine.cpus_per_engine=0.5 serves as well) "
        "or add CPUs"
    )
    if os.environ.get("RAY_ADDRESS"):
        log(f"warning: {message}; the run waits until the cluster has them")
        return
    raise AugmentError(message)


def _primary(cfg: AugmentConfig) -> tuple[OracleConfig, str]:
    if cfg.fallback.policy == "local_only":
        return cfg.fallback.oracle, "off"
    return cfg.oracle, cfg.fallback.policy


def _governor(name: str, o: OracleConfig, ledger: str, cfg: AugmentConfig):
    import ray

    from crome_ray.oracle.governor import governor_actor

    g = governor_actor(name).remote(
        o.model_dump_json(), ledger, cache_root(o, cfg), cfg.storage.model_dump_json()
    )
    ray.get(g.ping.remote())
    return g


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
    import ray

    primary, policy = _primary(cfg)
    if cfg.fallback.policy == "local_only":
        api_key = fallback_key or SecretStr("")
    if primary.mode == "batch":
        raise AugmentError(
            "oracle.mode=batch is not supported by the augmentation yet (its three phases each wait for "
            "the one before); use oracle.mode=online, or run each phase's prompts with `crome-ray oracle`"
        )
    primary.price()  # no price, no cap: refuse before anything else
    if policy != "off":
        cfg.fallback.oracle.price()
    input_run, files = input_files(cfg, log)
    step = Step(JOB, run_name(cfg), cfg, inputs={"pairs": input_run, **baseline_run(cfg)}, force=force)
    if not step.begin():
        return step.result
    scan, projection = plan(cfg, files, primary)
    log(
        f"dry run: {projection['examples']} examples, {projection['total_calls']} calls at most, "
        f"~${projection['usd'] or 0:.4f} (cap ${primary.budget.cap_usd:g})"
    )
    if not projection["within_cap"] and not cfg.allow_partial:
        raise AugmentError(
            f"the dry run projects ${projection['usd']:.4f} for {projection['total_calls']} calls, more than "
            f"the cap of ${primary.budget.cap_usd:g}: raise oracle.budget.cap_usd, augment fewer rows "
            "(limit=N), or pass --allow-partial to spend up to the cap and mark the rest"
        )
    unavailable = None
    needs_oracle = projection["total_calls"] > 0  # IQN-only and RRM runs call no oracle at all
    try:
        if needs_oracle:
            check_model(primary, api_key)
    except OracleError as e:
        if not (e.kind == ErrorKind.FATAL and ErrorKind.FATAL in FALLBACK_KINDS[policy]):
            raise
        unavailable = e  # every call goes to the fallback
        primary, api_key, policy = cfg.fallback.oracle, fallback_key or SecretStr(""), "off"
        log(f"the primary oracle is unavailable ({e}); the local oracle serves every call")

    summary = Tally()
    tag = uuid.uuid4().hex[:6]
    names = {"primary": f"aug-{run_name(cfg)}-{tag}", "fallback": f"aug-{run_name(cfg)}-{tag}-fb"}
    governors = (
        {"primary": _governor(names["primary"], primary, ledger_uri(cfg), cfg)} if needs_oracle else {}
    )
    fb = cfg.fallback.oracle if policy != "off" and needs_oracle else None
    if fb is not None:
        governors["fallback"] = _governor(names["fallback"], fb, ledger_uri(cfg, "fallback"), cfg)
    storage_json = cfg.storage.model_dump_json()

    def caller_args(o: OracleConfig, key: SecretStr, name: str) -> dict[str, Any]:
        return {
            "config_json": o.model_dump_json(),
            "cache_root": cache_root(o, cfg),
            "storage_json": storage_json,
            "api_key": key,
            "governor_name": name,
        }

    stats: dict[str, Any] = {}
    servers: list = []
    sinks: list = []
    written: list[dict[str, Any]] = []
    try:
        sinks = start_sinks(SINKS, step.folder, storage_json, TABLES, cfg.rows_per_file)
        ds = ray.data.read_parquet(
            [path_in_filesystem(f) for f in files],
            filesystem=pyarrow_filesystem(files[0], cfg.storage),
        ).select_columns(INPUT_COLUMNS)
        if cfg.limit is not None:
            ds = ds.limit(cfg.limit)
        res = stage_resources(cfg, primary if needs_oracle else cfg.oracle)
        # blocks small enough that every oracle actor gets work and the stream starts at once,
        # few enough that Ray Data's bookkeeping per block stays small (see block_rows)
        # scan.rows: the rows the stream reads (the scan stops at cfg.limit too)
        per_block = block_rows(scan.rows, cfg.batch_size, res["size"] * cfg.batches_per_worker)
        ds = ds.repartition(target_num_rows_per_block=per_block)
        needs_other = cfg.tasks.iqn or cfg.tasks.rrm or (cfg.controls.examples and cfg.tasks.verify)
        if needs_other and len(scan.pool) >= 2:
            pool_ref = _embedded_pool(cfg, scan.pool)
            ds = ds.map_batches(
                OtherRequestStage,
                fn_constructor_kwargs={
                    "embedder": cfg.iqn.embedder,
                    "storage_json": storage_json,
                    "pool": [pool_ref],
                    "candidates": cfg.iqn.candidates,
                    "seed": cfg.iqn.seed,
                    "max_tokens": cfg.iqn.max_tokens,
                    "threads": max(1, round(cfg.iqn.cpus)),
                },
                compute=ray.data.ActorPoolStrategy(size=1),
                num_cpus=cfg.iqn.cpus,
                batch_size=cfg.batch_size,
                batch_format="pyarrow",
            )
        f = cfg.filter
        # a local fallback engine: engine.engines actors of its own, shared by the oracle actors
        fb_res = stage_resources(cfg, fb) if fb is not None and fb.backend == "vllm" else None
        check_cpu_headroom(
            {
                "iqn.cpus": cfg.iqn.cpus if needs_other and len(scan.pool) >= 2 else 0.0,
                "the oracle stage": res["num_cpus"] * res["size"],
                "the fallback engines": fb_res["num_cpus"] * fb_res["size"] if fb_res else 0.0,
                "filter.cpus x filter.workers": f.cpus * f.workers if f.model else 0.0,
            },
            log,
        )
        if fb_res is not None:
            server = ray.remote(OracleServer).options(
                num_cpus=fb_res["num_cpus"], num_gpus=fb_res["num_gpus"], max_restarts=0
            )
            servers = [
                server.remote(caller_args(fb, fallback_key or SecretStr(""), names["fallback"]))
                for _ in range(fb_res["size"])
            ]
        ds = ds.map_batches(
            OracleWorkStage,
            fn_constructor_kwargs={
                "config_json": cfg.model_dump_json(),
                "primary": caller_args(primary, api_key, names["primary"]) if needs_oracle else None,
                "fallback": caller_args(fb, fallback_key or SecretStr(""), names["fallback"]) if fb else None,
                "fallback_kinds": sorted(FALLBACK_KINDS[policy]),
                "control_ids": scan.control_ids if cfg.tasks.verify else [],
                "oracle_ids": scan.oracle_ids if cfg.oracle_examples is not None else None,
                "embedder": cfg.iqn.embedder if cfg.leakage_embeddings and not cfg.tasks.rrm else None,
                "fallback_servers": servers,
            },
            compute=ray.data.ActorPoolStrategy(
                size=res["size"],
                max_concurrent_calls_per_actor=cfg.batches_per_worker,
                enable_true_multi_threading=cfg.batches_per_worker > 1,
            ),
            num_cpus=res["num_cpus"],
            num_gpus=res["num_gpus"],
            batch_size=cfg.batch_size,
            batch_format="pyarrow",
        )
        if f.model:
            ds = ds.map_batches(
                BaselineFilterStage,
                fn_constructor_kwargs={
                    "model": f.model,
                    "storage_json": storage_json,
                    "tau": f.tau,
                    "max_length": f.max_length,
                    "batch_size": f.batch_size,
                    "threads": max(1, round(f.cpus)),
                },
                compute=ray.data.ActorPoolStrategy(size=f.workers),
                num_cpus=f.cpus,
                num_gpus=f.gpus,
                batch_size=64,
                batch_format="pyarrow",
            )
        # the records go to the sinks, which write them; the driver reads each block's tally
        ds = ds.map_batches(
            forward,
            fn_kwargs={"sinks": sinks},
            batch_size=None,
            batch_format="pyarrow",
            num_cpus=SINK_TASK_CPUS,
            compute=ray.data.TaskPoolStrategy(size=2 * len(sinks)),
        )
        started, last = time.monotonic(), 0.0
        trimmer = Trimmer()
        checked_controls = False
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for doc in batch.column("tally").to_pylist():
                summary.merge(json.loads(doc))
            if not checked_controls:
                checked_controls = _check_controls(cfg, summary, len(scan.control_ids))
            trimmer.tick()  # the driver's freed heap back to the OS: its memory stays flat
            if progress and time.monotonic() - last > 2.0:
                last = time.monotonic()
                progress(_progress(summary, scan, governors, started))
        written = ray.get([s.close.remote() for s in sinks])
        # the engines settle their last calls with the governor before it closes
        ray.get([s.close.remote() for s in servers], timeout=60)
        for name, g in governors.items():
            stats[name] = ray.get(g.close.remote())
    finally:
        for a in [*sinks, *servers, *governors.values()]:
            ray.kill(a)
    _adopt_tables(step, written, summary)
    if progress:
        progress(_progress(summary, scan, None, started, stats))
    counts = {
        "source_rows": scan.rows,
        "examples": scan.examples,
        "pairs": summary.tables["pairs"],
        "ratio_to_source": round(summary.tables["pairs"] / max(scan.rows, 1), 3),
        **{f"pairs_{k}": v for k, v in sorted(summary.kinds.items())},
        "rejected": summary.tables["rejected"],
        "filtered": summary.tables["filtered"],
        "quarantine": summary.tables["quarantine"],
        "controls": summary.tables["controls"],
    }
    details = {
        "projection": projection,
        "oracle": stats.get("primary", {}),
        "fallback": stats.get("fallback"),
        "ledger": ledger_uri(cfg),
        "spend_usd": round(sum(s.get("spent_usd", 0.0) for s in stats.values()), 6),
        "pairs_cost_usd": round(summary.cost_usd, 6),
        "backends": dict(summary.backends),
        "example_stats": dict(sorted(summary.stats.items())),
        "rejected_by": dict(sorted(summary.rejected.items())),
        "quarantine_by": dict(sorted(summary.quarantine.items())),
        "controls": {
            **dict(summary.controls),
            "false_pass_rate": summary.false_pass_rate(),
            "max_false_pass_rate": cfg.controls.max_false_pass_rate,
        },
        "leakage": summarise(summary.leaks),
        "ratio_note": _ratio_note(counts, cfg),
    }
    if unavailable is not None:
        details["primary_unavailable"] = str(unavailable)
    return step.commit(counts, **details)


def _adopt_tables(step: Step, written: list[dict[str, Any]], summary: Tally) -> None:
    """The sinks' files into the step's manifest, once their rows are what the tallies counted
    and the attempt's table folders hold exactly those files (readers list the folder)."""
    folder = step.folder
    for name, schema in TABLES.items():
        entries = [w["tables"][name] for w in written if name in w["tables"]]
        rows = sum(e["rows"] for e in entries)
        files = sorted(f for e in entries for f in e["files"])
        if rows != summary.tables[name]:
            raise AugmentError(
                f"the sinks wrote {rows} rows of {name} but the stream counted {summary.tables[name]}: "
                "the run is not committed (a block was lost or written twice); run it again"
            )
        found = sorted(f"{name}/{p.rsplit('/', 1)[-1]}" for p in folder.table_files(name))
        if found != files:
            raise AugmentError(
                f"the sinks reported the files {files} of {name} but {folder.uri_of(name)} holds {found}: "
                "the run is not committed; run it again"
            )
        step.written_table(name, schema, files, rows)


def _check_controls(cfg: AugmentConfig, summary: Tally, probes_expected: int) -> bool:
    """True once every control example has been seen; raises when the verifier fails calibration."""
    if summary.controls.total() < 2 * probes_expected and summary.examples < max(probes_expected * 4, 64):
        return False
    rate, limit = summary.false_pass_rate(), cfg.controls.max_false_pass_rate
    if rate is not None and limit is not None and rate > limit:
        judged = summary.controls["passed"] + summary.controls["failed"]
        raise AugmentError(
            f"the verifier passed {summary.controls['passed']} of {judged} control probes (false-pass rate "
            f"{rate:.0%} > controls.max_false_pass_rate {limit:.0%}): it cannot tell a rewrite from an "
            "unchanged or unrelated answer, so its verdicts would let bad counterfactuals through. The run "
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
    eta = (scan.examples - done) * elapsed / done if done else None
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


def _ratio_note(counts: dict[str, Any], cfg: AugmentConfig) -> str:
    t = cfg.tasks
    if t.rrm:
        return "RRM mode: the original pair plus up to 2 non-contextual pairs per example"
    most = 1 + t.iqn + t.can + t.para + (2 * t.attributes if t.causal else 0)
    return (
        f"at most {most} pairs per example with these tasks (original + {int(t.iqn)} IQN + "
        f"{int(t.can)} CAN + {int(t.para)} PARA + {2 * t.attributes if t.causal else 0} causal); "
        "the paper's ~3.5× is after its verifier and baseline filter; the difference is in rejected "
        "(by stage and check), filtered and quarantine"
    )


def _embedded_pool(cfg: AugmentConfig, pool: list[tuple[str, str]]):
    """The pool's embeddings, made once in a Ray task, in the object store for the stage."""
    import ray

    @ray.remote
    def embed(embedder: str, storage_json: str, questions: list[str], max_tokens: int, threads: int):
        import torch

        from crome_ray.augment.embed import Embedder
        from crome_ray.config import StorageConfig
        from crome_ray.models import resolve_model

        torch.set_num_threads(threads)
        storage = StorageConfig.model_validate_json(storage_json)
        return Embedder(resolve_model(embedder, storage=storage), max_length=max_tokens)(questions)

    questions = [q for q, _ in pool]
    i = cfg.iqn
    task = embed.options(num_cpus=i.cpus).remote(
        i.embedder, cfg.storage.model_dump_json(), questions, i.max_tokens, max(1, round(i.cpus))
    )
    emb = ray.get(task)
    return ray.put({"questions": questions, "chosen": [c for _, c in pool], "embeddings": emb})
