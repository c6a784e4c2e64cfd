"""The answer a search gives, as a person reads it: one text, the same in ``kdtune search``'s
summary, ``kdtune compare``, ``kdtune export`` and the MLflow parent run.

With a confirmation, the answer is the statistics core's block (:func:`kdtune.verdict.render`
of ``search.json``'s ``verdict`` record): distillation's worth against α = 1, the
recommendation against the seed default, the equivalence set or the seeds still needed, the
family-wise statement. Without one (confirmation off in the space, an older ``search.json``, or
a confirmation that gave no block), the answer says so and names the single-seed best, marked
unconfirmed. Weightings are written in words (:func:`kdtune.schedules.words`, α and β spelled
out) with the spec, the machine key, in brackets after them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdtune.results import SearchResult, TrialRecord
from kdtune.schedules import parse_schedule, words

UNCONFIRMED = "unconfirmed"
CONFIRM_HINT = "add `confirm: {top_k: 3, seeds: 3}` to the space for a confirmed answer"


def block_of(result: SearchResult) -> dict[str, Any] | None:
    """The confirmation's block record of ``result``, or None: read defensively, so that a
    ``search.json`` from an older kdtune (no block, or a block of another layout) still reads."""
    block = getattr(result, "verdict", None)
    if not isinstance(block, Mapping):
        return None
    needed = ("recommended", "ranking", "comparisons", "margin", "family", "equivalent")
    if not all(key in block for key in needed) or not block["ranking"]:
        return None
    return dict(block)


def label(spec: str) -> str:
    """A weighting as a reader names it, the spec after it: ``α 0.1 / β 0.9 [fixed:0.9]``."""
    spoken = words(spec)
    return spoken if spoken == spec else f"{spoken} [{spec}]"


def trial_weighting(config: Mapping[str, Any]) -> str:
    """A trial's weighting in words: its schedule, or both levels' for a chain."""
    first = words(str(config.get("schedule", "?")))
    if config.get("level") == "chain":
        return f"first level {first}, second level {words(str(config.get('schedule_second', '?')))}"
    return first


def answer_text(result: SearchResult) -> str:
    """The answer, one statement a line: the block (withheld, where the teacher is no better
    than its students), else the single-seed best marked unconfirmed."""
    block = block_of(result)
    if block is not None:
        from kdtune.verdict import render

        text = render(block)
        if result.withheld:
            first, _, rest = text.partition("\n")
            text = "\n".join(
                [
                    f"no recommendation: {result.withheld}",
                    first.replace("recommendation:", "confirmed best:", 1),
                    rest,
                ]
            ).rstrip("\n")
        return text
    return unconfirmed_text(result)


def unconfirmed_text(result: SearchResult) -> str:
    """Why the search has no block, and its single-seed best marked unconfirmed."""
    why = _why_no_block(result)
    best = result.best
    if best is None:
        return f"no answer: {why}, and no trial completed with a {result.metric} value"
    value = best.value(result.metric)
    figure = "" if value is None else f", {result.metric} {value:.4f}"
    lines = [
        f"{UNCONFIRMED}: {why}",
        f"single-seed best ({UNCONFIRMED}): {_best_label(best)}{figure} "
        f"(trial {best.trial_id}, one training seed, chosen on the same images it is scored on)",
    ]
    if result.withheld:
        lines.insert(0, f"no recommendation: {result.withheld}")
    lines.append(CONFIRM_HINT)
    return "\n".join(lines)


def answer_line(result: SearchResult) -> str:
    """The answer's first statement alone (an MLflow tag, a table's footer)."""
    block = block_of(result)
    if result.withheld:
        return f"no recommendation: {result.withheld}"
    if block is not None:
        return answer_text(result).splitlines()[0]
    best = result.best
    if best is None:
        return f"no answer: {_why_no_block(result)}, and no trial completed"
    return f"single-seed best ({UNCONFIRMED}): {_best_label(best)}"


def answer_record(result: SearchResult) -> dict[str, Any]:
    """What the answer says as plain values (export's YAML, MLflow params): whether it is
    confirmed, the recommended weighting (spec and words), and the text."""
    block = block_of(result)
    best = result.best
    if block is not None:
        spec: str | None = str(block["recommended"])
    else:
        spec = best.reported_schedule if best is not None else None
    if result.withheld:
        spec = None
    return {
        "confirmed": block is not None,
        "recommended": spec,
        "recommended_words": None if spec is None else words(spec),
        "text": answer_text(result),
    }


def supported(result: SearchResult) -> list[str] | None:
    """The weightings the confirmation supports (the recommendation and those equivalent to it
    within the margin), or None without a block."""
    block = block_of(result)
    if block is None:
        return None
    return list(dict.fromkeys([str(block["recommended"]), *map(str, block["equivalent"])]))


def grid_point(spec: str, *, alpha: bool) -> dict[str, Any]:
    """A grid point in the words the space's dimensions use: ``{alpha: 0.25}`` in a space whose
    weighting is α (a fixed ratio), else ``{schedule: spec}``."""
    sched = parse_schedule(spec)
    if alpha and sched.shape == "fixed":
        return {"alpha": round(1.0 - sched.beta_start, 6)}
    return {"schedule": sched.spec}


def _best_label(best: TrialRecord) -> str:
    if best.config.get("level") == "chain":
        return trial_weighting(best.config)
    return label(best.reported_schedule)


def _why_no_block(result: SearchResult) -> str:
    if getattr(result, "verdict", None) is not None:
        return "this search's confirmation record is of a layout this kdtune does not read"
    if result.confirmations:
        return "the confirmation ran but gave no verdict (too few of its runs finished)"
    return "this search has no confirmation (its space has none, or it predates confirmation)"
