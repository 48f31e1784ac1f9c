"""From an oracle's parsed JSON to typed augmentation values, with a reason for every rejection. Pure.

The oracle layer already checked each answer against its schema (``oracle.answers``).
What a schema cannot say is checked here: a rubric's weights are normalised to sum to 1
(refused when they cannot be: all zero, or not finite) and its attribute names must be
distinct; causal elements must name an attribute of the rubric; a rewrite must not be
empty; a verdict must agree with its own fields (a "Pass" that says the target did not
change is a Fail). A refused value raises ``Rejected`` with a reason a person can act
on; the stage turns it into a quarantine row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from crome_ray.augment.prompts import Attribute

# a rubric whose weights sum this far from 1 is still usable, but the note says it was rescaled
WEIGHT_TOLERANCE = 0.05


class Rejected(ValueError):
    """An oracle answer that parsed as JSON but cannot be used; the message says why."""


@dataclass(frozen=True)
class Rubric:
    attributes: tuple[Attribute, ...]
    note: str | None = None  # what was changed to make it usable (rescaled weights)


@dataclass(frozen=True)
class Element:
    attribute: str
    answer: str  # A | B
    element: str
    effect: str  # increases | decreases


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


def _field(value: Any, name: str, kind: type) -> Any:
    if not isinstance(value, dict) or name not in value:
        raise Rejected(f"no {name!r} in the answer")
    v = value[name]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or (kind is float and isinstance(v, bool)):
        raise Rejected(f"{name!r} is {type(v).__name__}, not {kind.__name__}")
    return v


def parse_rubric(value: Any, attributes: int) -> Rubric:
    items = _field(value, "attributes", list)
    if not 1 <= len(items) <= attributes:
        raise Rejected(f"{len(items)} attributes, asked for {attributes}")
    parsed, seen = [], set()
    for i, item in enumerate(items):
        name = _field(item, "name", str).strip()
        if not name:
            raise Rejected(f"attribute {i + 1} has no name")
        if name.casefold() in seen:
            raise Rejected(f"attribute {name!r} appears twice")
        seen.add(name.casefold())
        weight = _field(item, "weight", float)
        if not math.isfinite(weight) or weight < 0:
            raise Rejected(f"attribute {name!r} has weight {weight}")
        parsed.append((name, _field(item, "description", str).strip(), weight))
    total = sum(w for _, _, w in parsed)
    if total <= 0:
        raise Rejected("every weight is 0")
    note = f"weights summed to {total:.3f}, rescaled to 1" if abs(total - 1) > WEIGHT_TOLERANCE else None
    return Rubric(tuple(Attribute(n, d, w / total) for n, d, w in parsed), note)


def parse_elements(value: Any, rubric: Rubric) -> tuple[list[Element], int]:
    """The elements that name one of the rubric's attributes, and how many did not."""
    names = {a.name.casefold(): a.name for a in rubric.attributes}
    kept, unknown = [], 0
    for item in _field(value, "elements", list):
        attribute = names.get(_field(item, "attribute", str).strip().casefold())
        if attribute is None:
            unknown += 1
            continue
        answer, effect = _field(item, "answer", str), _field(item, "effect", str)
        if answer not in ("A", "B") or effect not in ("increases", "decreases"):
            raise Rejected(f"element with answer {answer!r} and effect {effect!r}")
        kept.append(Element(attribute, answer, _field(item, "element", str).strip(), effect))
    if not kept:
        raise Rejected(
            f"no element names an attribute of the rubric ({unknown} named others)"
            if unknown
            else "no elements"
        )
    return kept, unknown


def parse_rewrite(value: Any) -> str:
    text = _field(value, "rewrite", str)
    if not text.strip():
        raise Rejected("the rewrite is empty")
    return text.strip()


def parse_verdict(value: Any) -> Verdict:
    """A causal verdict (``target_changed``, ``others_preserved``) or a neutral one
    (``same_content``, ``same_quality``): a Pass whose own fields deny it counts as Fail."""
    verdict = _field(value, "verdict", str)
    if verdict not in ("Pass", "Fail"):
        raise Rejected(f"verdict {verdict!r} is neither Pass nor Fail")
    reason = _field(value, "reason", str).strip()
    if isinstance(value, dict) and "same_content" in value:
        content, quality = _field(value, "same_content", bool), _field(value, "same_quality", bool)
        if verdict == "Pass" and not (content and quality):
            what = "content" if not content else "quality"
            return Verdict(False, f"a Pass that says the {what} differs: counted as Fail ({reason})")
        return Verdict(verdict == "Pass", reason)
    changed, preserved = _field(value, "target_changed", bool), _field(value, "others_preserved", bool)
    if verdict == "Pass" and not (changed and preserved):
        what = "did not change" if not changed else "did not preserve the rest"
        return Verdict(False, f"a Pass that says the rewrite {what}: counted as Fail ({reason})")
    return Verdict(verdict == "Pass", reason)
