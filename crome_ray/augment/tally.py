"""What the augmentation's manifest counts, kept as its records stream past (pure).

A ``Tally`` counts one stream of records (``table``, ``row``): rows per table, pairs per kind,
the backends, quarantine reasons, rejections by stage and check, control verdicts, spend, and
the leakage values of the kept rewrites. The table sinks (``augment.sink``) tally each block
they write and send the tally, not the rows, to the driver, which merges them (``merge``):
what crosses to the driver is counters and the block's leakage values (five numbers a kept
rewrite), never a text.

The driver's tally keeps a fixed-size uniform sample of the leakage values (a reservoir, for
the manifest's percentiles); a block's tally keeps them all (``sample=None``), so that merging
block after block into the driver's reservoir samples the whole stream uniformly.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict
from typing import Any

from crome_ray.augment.leakage import Leakage, summarise

LEAKAGE_SAMPLE = 20_000  # leakage values the driver keeps for the manifest's percentiles
COUNTERS = ("kinds", "accepted", "tables", "stats", "backends", "quarantine", "rejected", "rejected_tasks",
            "controls")  # fmt: skip


class Tally:
    def __init__(self, sample: int | None = LEAKAGE_SAMPLE) -> None:
        self.kinds: Counter = Counter()  # pairs per kind
        self.accepted: Counter = Counter()  # pairs and filtered rows per kind: what the gate counts
        self.rejected_tasks: Counter = Counter()  # <task>:<stage>[:<check>]
        self.tables: Counter = Counter()
        self.stats: Counter = Counter()
        self.backends: Counter = Counter()
        self.quarantine: Counter = Counter()
        self.rejected: Counter = Counter()
        self.controls: Counter = Counter()
        self.examples = 0
        self.cost_usd = 0.0
        self.leaks: list[Leakage] = []
        self.sample = sample
        self._leaks_seen = 0
        self._rng = random.Random(0)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables[table] += 1
        if table == "stats":
            self.examples += 1
            self.stats.update(row)
        elif table in ("pairs", "filtered"):
            self.accepted[row["kind"]] += 1
            if table == "pairs":
                self.kinds[row["kind"]] += 1
                self.cost_usd += row.get("cost_usd") or 0.0
            if row.get("backend"):
                self.backends[f"{row['backend']} {row['model']}"] += 1
            if row.get("leakage") and table == "pairs":
                self._leak(Leakage(**json.loads(row["leakage"])))
        elif table == "quarantine":
            self.quarantine[row["reason"]] += 1
        elif table == "rejected":
            self.rejected[f"{row['stage']}:{row['check'] or row['kind']}"] += 1
            check = f":{row['check']}" if row["check"] else ""
            self.rejected_tasks[f"{row['kind']}:{row['stage']}{check}"] += 1
        elif table == "controls":
            passed, verifier = row["passed"], row.get("verifier") or "causal"
            self.controls[
                f"{verifier}:{'no_verdict' if passed is None else ('passed' if passed else 'failed')}"
            ] += 1

    def _leak(self, leak: Leakage) -> None:
        """Reservoir sampling (algorithm R) when ``sample`` is set; every value otherwise."""
        self._leaks_seen += 1
        if self.sample is None or len(self.leaks) < self.sample:
            self.leaks.append(leak)
        elif (j := self._rng.randrange(self._leaks_seen)) < self.sample:
            self.leaks[j] = leak

    def as_doc(self) -> dict[str, Any]:
        """JSON-able; ``merge`` takes it back."""
        return {
            **{name: dict(getattr(self, name)) for name in COUNTERS},
            "examples": self.examples,
            "cost_usd": self.cost_usd,
            "leaks": [asdict(leak) for leak in self.leaks],
        }

    def merge(self, doc: dict[str, Any]) -> None:
        for name in COUNTERS:
            getattr(self, name).update(doc[name])
        self.examples += doc["examples"]
        self.cost_usd += doc["cost_usd"]
        for leak in doc["leaks"]:
            self._leak(Leakage(**leak))

    def counts(
        self, source_rows: int, examples: int, left_out: dict[str, int] | None = None
    ) -> dict[str, Any]:
        """The manifest's counts: rows per table, pairs per kind (the kinds the quality gate left
        out counted in ``left_out``, not in ``pairs``), the ratio to the source."""
        left_out = left_out or {}
        pairs = self.tables["pairs"] - sum(left_out.values())
        return {
            "source_rows": source_rows,
            "examples": examples,
            "pairs": pairs,
            "ratio_to_source": round(pairs / max(source_rows, 1), 3),
            **{f"pairs_{k}": v for k, v in sorted(self.kinds.items()) if k not in left_out},
            "left_out": sum(left_out.values()),
            **{f"left_out_{k}": v for k, v in sorted(left_out.items())},
            "rejected": self.tables["rejected"],
            "filtered": self.tables["filtered"],
            "quarantine": self.tables["quarantine"],
            "controls": self.tables["controls"],
        }

    def details(self, max_false_pass_rate: float | None) -> dict[str, Any]:
        """The manifest's details that the stream's records tell: what the pairs cost, who wrote
        them, each example's counters, why rewrites and rows were set aside, the control probes'
        verdicts per verifier, the leakage of the kept rewrites."""
        return {
            "pairs_cost_usd": round(self.cost_usd, 6),
            "backends": dict(self.backends),
            "example_stats": dict(sorted(self.stats.items())),
            "rejected_by": dict(sorted(self.rejected.items())),
            "quarantine_by": dict(sorted(self.quarantine.items())),
            "controls": {
                **{v: self.control_counts(v) for v in self.verifiers()},
                "max_false_pass_rate": max_false_pass_rate,
            },
            "leakage": summarise(self.leaks),
        }

    def verifiers(self) -> list[str]:
        """The verifiers that got control probes (causal first)."""
        return sorted({k.split(":", 1)[0] for k in self.controls}, key=lambda v: (v != "causal", v))

    def control_counts(self, verifier: str) -> dict[str, Any]:
        counts = {s: self.controls[f"{verifier}:{s}"] for s in ("passed", "failed", "no_verdict")}
        return {**counts, "false_pass_rate": self.false_pass_rate(verifier)}

    def false_pass_rate(self, verifier: str = "causal") -> float | None:
        passed, failed = self.controls[f"{verifier}:passed"], self.controls[f"{verifier}:failed"]
        return round(passed / (passed + failed), 4) if passed + failed else None
