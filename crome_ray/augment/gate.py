"""The augmentation's quality gate: per oracle-written kind, what was asked, what became pairs and
what refused the rest, and whether the kind goes into ``pairs``. Pure.

For each kind the oracle writes (``kinds.GATED``: the causal degradations and upgrades, CAN
and PARA) the manifest and the closing table show:

- ``asked``: the rewrite calls made; ``answered``: those the oracle served (the rest are in
  quarantine: out of budget, quota, invalid output);
- ``rejected``: the answered rewrites refused, by stage and check (``parse``,
  ``checks:<check>``, ``verify``, ``leakage``);
- ``verified``: the verifier's verdicts on the rewrites that passed the checks (pass, fail);
- ``accepted``: the rewrites that became pairs (the baseline filter's drops included: the
  filter judges the pair, not the rewrite); ``accepted_share``: accepted / answered;
- ``controls``: the false-pass rate of the verifier that judged the kind (its control probes).

A kind is left out when its accepted share is under ``gate.min_accepted_share`` (once
``gate.min_answered`` rewrites were answered), or when its verifier passed more than
``gate.max_false_pass_rate`` of its control probes: a kind that is mostly junk by the checks,
or judged by a verifier that cannot tell a rewrite from an unrelated answer, is not evidence
that its survivors are good. Leaving out moves its pairs to the ``left_out`` table
(``augment.job``), and the decision carries one line saying why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from crome_ray.augment.config import QualityGate
from crome_ray.augment.kinds import BY_NAME, GATED


@dataclass
class KindReport:
    kind: str
    asked: int = 0
    answered: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    verified: dict[str, int] = field(default_factory=dict)
    false_pass_rate: float | None = None  # the kind's verifier's, on its control probes
    probes_judged: int = 0
    left_out: str | None = None  # why the kind is left out of pairs; None: kept
    note: str | None = None  # why it was not judged

    @property
    def accepted_share(self) -> float | None:
        return round(self.accepted / self.answered, 4) if self.answered else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "asked": self.asked,
            "answered": self.answered,
            "rejected": dict(sorted(self.rejected.items())),
            "verified": dict(self.verified),
            "accepted": self.accepted,
            "accepted_share": self.accepted_share,
            "controls_false_pass_rate": self.false_pass_rate,
            "left_out": self.left_out,
            "note": self.note,
        }


def verifier_of(kind: str) -> str:
    """The control probes that calibrate a kind's verifier: ``causal`` or the neutral kind's own."""
    return "causal" if BY_NAME[kind].label == "chosen" else kind


def reports(
    stats: Counter,
    accepted: Counter,
    rejected: Counter,
    controls: Counter,
    gate: QualityGate,
    kinds_on: list[str],
) -> dict[str, KindReport]:
    """``stats``: the flow's per-example counters, summed (``calls_<task>``, ``served_<task>``,
    ``verdict_pass_<task>``, ``verdict_fail_<task>``); ``accepted``: pairs and filtered rows per
    kind; ``rejected``: ``<task>:<stage>[:<check>]`` counts; ``controls``:
    ``<verifier>:<passed|failed|no_verdict>`` counts. ``kinds_on``: the gated kinds the run asked for."""
    out = {}
    for name in GATED:
        if name not in kinds_on:
            continue
        task = BY_NAME[name].task
        r = KindReport(name, asked=stats[f"calls_{task}"], answered=stats[f"served_{task}"])
        r.accepted = accepted[name]
        r.rejected = {k.split(":", 1)[1]: v for k, v in rejected.items() if k.split(":", 1)[0] == task and v}
        passed, failed = stats[f"verdict_pass_{task}"], stats[f"verdict_fail_{task}"]
        if passed or failed:
            r.verified = {"pass": passed, "fail": failed}
        verifier = verifier_of(name)
        judged_pass, judged_fail = controls[f"{verifier}:passed"], controls[f"{verifier}:failed"]
        r.probes_judged = judged_pass + judged_fail
        if r.probes_judged:
            r.false_pass_rate = round(judged_pass / r.probes_judged, 4)
        _judge(r, gate)
        out[name] = r
    return out


def _judge(r: KindReport, gate: QualityGate) -> None:
    limit = gate.max_false_pass_rate
    if limit is not None and r.probes_judged >= 2 and r.false_pass_rate > limit and sum(r.verified.values()):
        r.left_out = (
            f"its verifier passed {r.false_pass_rate:.0%} of its {r.probes_judged} control probes "
            f"(> gate.max_false_pass_rate {limit:.0%}): its verdicts cannot be trusted"
        )
        return
    floor = gate.min_accepted_share
    if floor is None:
        return
    if r.answered < gate.min_answered:
        r.note = f"{r.answered} answered, under gate.min_answered {gate.min_answered}: not judged"
        return
    if r.accepted_share < floor:
        top = max(r.rejected.items(), key=lambda kv: kv[1], default=None)
        why = f"; most refused by {top[0]} ({top[1]})" if top else ""
        r.left_out = (
            f"{r.accepted} of {r.answered} rewrites accepted ({r.accepted_share:.0%} < "
            f"gate.min_accepted_share {floor:.0%}){why}"
        )
