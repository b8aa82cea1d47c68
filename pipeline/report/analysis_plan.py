"""The analysis plan (analysis_plan.yaml in the project's root, read from the working directory like params.yaml): the levels, thresholds, margins, bars and
overall rules the claims use, fixed before the run, with the sha256 the report prints.

Every key the claims read is checked here (CHECKS), so a bad plan fails the report in one line naming the key and
what is allowed, before anything is written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from gattanet.errors import InputError
from pipeline.errors import SettingsError
from pipeline.config import CONTROL_METHODS, UniqueKeyLoader, read_text_file, shown, yaml_problem

PLAN_FILE = "analysis_plan.yaml"
DEFAULT_PATH = Path(PLAN_FILE)  # relative: the project the command runs in, also for a wheel install


class PlanError(SettingsError, InputError):
    """A missing or malformed analysis plan: a settings file like params.yaml, so the CLI prints it as one line
    and exits 2, as it does for bad params."""


def _in_open_unit(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1


# dotted key -> (what is allowed, in words; a predicate). Add a row for every key a claim reads.
CHECKS = {
    "level": ("a number in (0, 1)", _in_open_unit),
    "power": ("a number in (0, 1)", _in_open_unit),
    "multiplicity": ("holm or none", lambda v: v in ("holm", "none")),
    "overall.supported": ("every", lambda v: v == "every"),
    "overall.contradicted": ("any", lambda v: v == "any"),
    "version": ("2", lambda v: v == 2),
    "primary.claim": ("clean_gain", lambda v: v == "clean_gain"),
    "primary.attn_dim": ("a positive integer attention dimension, e.g. 16",
                         lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
    "related_work.family": ("track", lambda v: v == "track"),
    "claims.size.relative": ("true or false", lambda v: isinstance(v, bool)),
    "claims.noise.visible_up_to": ("relative", lambda v: v == "relative"),
    "claims.true_class.typical_rate": ("a number in (0, 1)", _in_open_unit),
    "claims.true_class.interval": ("clopper-pearson-effective-n", lambda v: v == "clopper-pearson-effective-n"),
    "claims.lesions.share": ("a number in (0, 1) (a share of the full gain G)", _in_open_unit),
    "claims.controls.share": ("a number in (0, 1) (a share of GAttANet's gain)", _in_open_unit),
    "claims.across_backbones.df": ("b-1", lambda v: v == "b-1"),
    "claims.clean_gain.paper_size": ("true or false", lambda v: isinstance(v, bool)),
    "claims.noise.sigma_star": ("params", lambda v: v == "params"),
    "claims.query_space.bar_fraction": ("a number in (0, 1)", _in_open_unit),
    "claims.noise.relative_loss": ("a number in (0, 1)", _in_open_unit),
    "claims.controls.judged": (f"a non-empty list of control names from {', '.join(CONTROL_METHODS)}",
                               lambda v: isinstance(v, list) and bool(v) and all(x in CONTROL_METHODS for x in v)),
    "claims.dimension.dims": ("two attention dimensions, smaller first, e.g. [16, 64]",
                              lambda v: isinstance(v, list) and len(v) == 2
                              and all(isinstance(d, int) and d > 0 for d in v) and v[0] < v[1]),
}


@dataclass(frozen=True)
class AnalysisPlan:
    """The parsed plan, its text as committed, and that text's sha256."""

    data: dict
    text: str
    sha256: str
    path: str

    def get(self, *keys: str):
        """The value at keys (e.g. get("claims", "lesions", "catastrophic_at")); a missing key fails in one line."""
        node = self.data
        for i, k in enumerate(keys):
            if not isinstance(node, dict) or k not in node:
                raise PlanError(f"{self.path}: {'.'.join(keys[:i + 1])} is missing (see the comments at its top "
                                "for how to add a key)")
            node = node[k]
        return node

    @property
    def alpha_one_sided(self) -> float:
        """Each side's test level, (1 − level)/2: a row is supported when its one-sided p lies below it."""
        return (1 - self.get("level")) / 2


def parse_plan(text: str, path: str = PLAN_FILE) -> AnalysisPlan:
    """A plan from its YAML text, every key in CHECKS present and allowed."""
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a repeated key is refused, not silently the last
    except yaml.YAMLError as e:
        raise PlanError(f"{path}: not valid YAML ({yaml_problem(e)})") from None
    if not isinstance(data, dict):
        raise PlanError(f"{path}: must be a mapping of plan keys (level, power, multiplicity, overall, claims)")
    plan = AnalysisPlan(data, text, hashlib.sha256(text.encode()).hexdigest(), path)
    for dotted, (allowed, ok) in CHECKS.items():
        value = plan.get(*dotted.split("."))
        if not ok(value):
            raise PlanError(f"{path}: {dotted} is {shown(value)}; allowed: {allowed}")
    deviations = data.get("deviations") or []
    fields = ("rule", "commit", "before", "after", "reason")
    if not isinstance(deviations, list) or not all(
            isinstance(d, dict) and all(isinstance(d.get(f), str) and d[f].strip() for f in fields) for d in deviations):
        raise PlanError(f"{path}: deviations must be a list of {{{', '.join(fields)}}}, each a non-empty text")
    return plan


def load_plan(path: Path | str | None = None) -> AnalysisPlan:
    """The plan at `path` (default: DEFAULT_PATH, the working directory's analysis_plan.yaml, looked up at each call)."""
    path = Path(DEFAULT_PATH if path is None else path)
    if not path.exists() and not path.is_symlink():
        raise PlanError(f"{path}: the analysis plan is missing; restore {PLAN_FILE} at the repository root "
                        "(git checkout -- analysis_plan.yaml)")
    text = read_text_file(path, PlanError, f"restore {PLAN_FILE}: git checkout -- analysis_plan.yaml")  # bytes as
    # they are (no newline translation): the hash is the file's
    return parse_plan(text, str(path.name if path == DEFAULT_PATH else path))
