"""The Reproducibility Summary, the report's first screen: scope, headline, easy and hard, compute spent.

Everything is read from the judged claims (claims.Evidence rows), the params and the stage outputs, so a new
claim or row shows here without a change to the template.
"""

import re
from collections import Counter

from gattanet.analysis.stats import CONTRADICTED, INCONCLUSIVE, NOT_RUN, SUPPORTED
from pipeline.config import Params

from .claims import Claim, Evidence, ci_text, pts
from .tables import dataset_label

TESTED = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
HARD_TOPICS = ("Dataset", "Epoch budgets", "When training stops", "ResNet18 backbone", "Numeric precision")


def tested_rows(claim: Claim) -> list[Evidence]:
    """The rows of a claim that carry an effect and were judged (the forest plot's and the headline's rows)."""
    return [e for e in claim.evidence if e.effect is not None and e.verdict in TESTED]


def scope(claims: list[Claim], params: Params, out, deviations: list[dict]) -> list[dict]:
    """What was tested: claims, data (and what it stands in for), profile, backbones, seeds."""
    runs, backbones = params.attention, params.backbones
    datasets = sorted({b.dataset for b in backbones.values()})
    subst = [d["here"] for d in deviations if d["topic"] == "Dataset"]
    seeds = sorted({len(r.seeds) for r in runs.values()})
    archs = Counter(b.arch for k, b in backbones.items() if any(r.backbone == k for r in runs.values()))
    ran = [c for c in claims if tested_rows(c)]
    return [
        {"what": "claims tested", "value": f"{len(ran)} of the paper's {len(claims)} (the table below)"},
        {"what": "data", "value": subst[0] if subst else ", ".join(dataset_label(d) for d in datasets)},
        {"what": "profile", "value": params.profile},
        {"what": "backbones", "value": ", ".join(f"{n} × {a}" for a, n in sorted(archs.items())) or "none"},
        {"what": "attention runs", "value": ", ".join(f"{k} (d = {r.attn_dim})" for k, r in runs.items())},
        {"what": "seeds per attention run", "value": " or ".join(map(str, seeds)) or "—"},
    ]


def _example(e: Evidence) -> str:
    """A row with its effect: 'toy-fmnist-d16: +0.25 pts [+0.00 pts, +0.49 pts] (gain > 0)'."""
    return f"{e.row}: {ci_text(e.effect)} ({e.test})"


def _by_claim(claims: list[Claim], verdict: str) -> list[str]:
    """Per claim with rows of this verdict: its title, how many of its rows, and the first of them."""
    parts = []
    for c in claims:
        rows = tested_rows(c)
        hits = [e for e in rows if e.verdict == verdict]
        if hits:
            parts.append(f"{c.title} ({len(hits)} of {len(rows)} rows; e.g. {_example(hits[0])})")
    return parts


def headline(claims: list[Claim], sections: dict[str, list[str]]) -> list[str]:
    """A few plain sentences: the tally, what holds, what does not, and what this run cannot decide."""
    judged = [c for c in claims if tested_rows(c)]
    if not judged:
        return ["No claim was tested in this run: every claim's row is not run or not applicable."]
    tally = Counter(c.verdict for c in judged)
    out = [f"Of {len(judged)} claims tested, {tally[SUPPORTED]} {'is' if tally[SUPPORTED] == 1 else 'are'} supported, "
           f"{tally[CONTRADICTED]} contradicted and {len(judged) - tally[SUPPORTED] - tally[CONTRADICTED]} undecided "
           "(a claim is supported when every row of a backbone family is, contradicted when one row is after Holm's "
           "correction over the claim's rows)."]
    for verdict, words in ((SUPPORTED, "What holds"), (CONTRADICTED, "What does not hold")):
        parts = _by_claim(judged, verdict)
        if parts:
            out.append(f"{words}: " + "; ".join(parts) + ".")
    undecided = [e for c in judged for e in tested_rows(c) if e.verdict == INCONCLUSIVE]
    if undecided:
        first = next((e for e in undecided for c in judged if c.id == "clean_gain" and e in c.evidence), undecided[0])
        reach = sorted(e.effect.detectable_80 for e in undecided)
        out.append(f"What this run cannot decide: {len(undecided)} rows, among them {_example(first)}, which would "
                   f"need an effect of ±{_size(first.effect.detectable_80)} to be detected with 80 % power "
                   f"(±{_size(reach[0])} to ±{_size(reach[-1])} over the undecided rows).")
    out += [f"{name[0].upper()}{name[1:]}: {_words(words)}." for name, words in sections.items() if words]
    return out


def _size(x: float) -> str:
    """An unsigned effect size in points: '0.35 pts'."""
    return pts(x).lstrip("+")


def _words(words: list[str]) -> str:
    """'2 better, 1 inconclusive' from a list of verdict words."""
    return ", ".join(f"{n} {w}" for w, n in Counter(words).most_common())


def headline_line(claims: list[Claim], sections: dict[str, list[str]]) -> str:
    """The run in one line: claim verdicts, and the other sections' comparisons where the profile has them."""
    judged = [c for c in claims if tested_rows(c)]
    tally = Counter(c.verdict if c.verdict in (SUPPORTED, CONTRADICTED) else "undecided" for c in judged)
    parts = [f"claims: {tally[SUPPORTED]} supported, {tally[CONTRADICTED]} contradicted, {tally['undecided']} "
             f"undecided of {len(judged)} tested"]
    gain = next((c for c in judged if c.id == "clean_gain"), None)
    if gain is not None:
        e = tested_rows(gain)[0]
        parts.append(f"clean gain ({e.row}) {ci_text(e.effect)}")
    parts += [f"{name}: {_words(words)}" for name, words in sections.items() if words]
    return "; ".join(parts)


def easy_and_hard(claims: list[Claim], deviations: list[dict], left_out: list[dict], out) -> dict[str, list[str]]:
    """What was easy (what ran as the paper says) and what was difficult (deviations, what did not run)."""
    easy, hard = [], []
    for key, m in out.train_attn.items():
        easy.append(f"{key}: GAttANet (Eqs. 1-5) on the frozen {m['arch']} backbone, {m['attention_params']:,} "
                    f"trainable parameters, {len(m['seeds'])} seed{'s' * (len(m['seeds']) > 1)}, "
                    f"{m['seconds'] / 60:.1f} min of training")
    solid = [e for c in claims for e in tested_rows(c) if e.verdict != INCONCLUSIVE]
    if solid:
        easy.append(f"{len(solid)} of {sum(len(tested_rows(c)) for c in claims)} tested rows reach a decision at "
                    "this run's seeds and test images")
    hard += [f"{d['topic']}: {_first_clause(d['here'])} (deviations)" for d in deviations if d["topic"] in HARD_TOPICS]
    undecided = [e for c in claims for e in tested_rows(c) if e.verdict == INCONCLUSIVE]
    if undecided:
        hard.append(f"{len(undecided)} tested rows stay inconclusive: their intervals are wider than the effects")
    not_run = [e.row for c in claims for e in c.evidence if e.verdict == NOT_RUN]
    hard += [f"not run here: {row}" for row in not_run]
    hard += [f"not in this profile: {x['what']} ({x['command']})" for x in left_out]
    return {"easy": easy, "hard": hard}


def _first_clause(text: str) -> str:
    """A deviation's text up to its first colon, semicolon or full stop: the gist, for a list item."""
    return re.split(r"[:;.](?:\s|$)", text)[0]


def compute(stages: list[dict], provenance: dict) -> dict:
    """Stage wall time in all, the devices and precisions the stages record, and the CPU of the machine."""
    seconds = sum(s["seconds"] for s in stages)
    return {"seconds": seconds, "hours": seconds / 3600, "stages": len(stages),
            "devices": sorted({s["device"] for s in stages if s["device"]}) or ["unrecorded"],
            "precisions": sorted({s["precision"] for s in stages if s["precision"]}) or ["unrecorded"],
            "slowest": sorted(stages, key=lambda s: -s["seconds"])[:3],
            "cpu": provenance.get("cpu", "not recorded")}


def reproducibility_summary(claims: list[Claim], params: Params, out, deviations: list[dict], left_out: list[dict],
                            stages: list[dict], provenance: dict, sections: dict[str, list[str]]) -> dict:
    """The first screen's content (the forest plot is drawn by build.py from the same rows)."""
    return {"scope": scope(claims, params, out, deviations), "headline": headline(claims, sections),
            "line": headline_line(claims, sections), **easy_and_hard(claims, deviations, left_out, out),
            "compute": compute(stages, provenance)}


def forest_rows(claims: list[Claim]) -> list[dict]:
    """Every tested row as figures.forest_plot draws it, grouped under its claim's title."""
    return [{"group": c.title, "label": e.row if e.unit == "pts" else f"{e.row} ({e.unit})", "mean": e.effect.mean,
             "low": e.effect.low, "high": e.effect.high, "verdict": e.verdict, "test": e.test,
             "paper_size": e.paper_size, "margin": e.margin} for c in claims for e in tested_rows(c)]
