"""The paper's claims, each decided per row by a confidence interval computed in the stages.

Every row tests one effect with its 95 % CI over training seeds and test images (gattanet.analysis.stats):
*supported* when the CI excludes zero on the paper's side, *contradicted* when it excludes that side
or the size the paper states, *inconclusive* otherwise, with the effect the run would detect with 80 % power.
A claim's overall verdict is formed per backbone family (OVERALL_RULE). Thresholds are read from the
paper's wording, never tuned to a result. "Well above chance" is read as *at least halfway from
chance to perfect*: a majority (the paper's "typically"), never met by a result near chance.
"""

from dataclasses import dataclass, field, replace

from gattanet.analysis.stats import (CONTRADICTED, INCONCLUSIVE, NOT_APPLICABLE, NOT_RUN, SUPPORTED, Estimate,
                            DERIVED, holm_adjusted, rate_interval, releveled, verdict)
from gattanet.data.specs import get_spec
from gattanet.analysis.sweeps import relative_sigma
from pipeline.config import Params

from .across import AcrossGroup, across_groups
from .across import across_spread_text
from .analysis_plan import AnalysisPlan
from .load import Outputs, stage_command

OVERALL_RULE = ("A claim is the conjunction of its rows. Per backbone family, over the rows in scope (rows not run "
                "or not applicable are out of scope): supported when every row is supported (an intersection-union "
                "test, no correction); contradicted when at least one row is contradicted after Holm's step-down over "
                "the claim's rows (a union, corrected once); inconclusive otherwise.")
NESTED = "each backbone, nested in the across-backbone row"  # the family suffix of rows that re-estimate one effect
SIZE_ASSUMPTION = ("carrying the paper's size to this dataset as a relative error reduction is an assumption, "
                   "not the paper's statement")
FULL_PROFILE_COMMAND = "gattanet-cli profile full && dvc repro"


def pct(x: float | None) -> str:
    """A fraction as a percentage: 0.8328 -> '83.28 %'."""
    return "—" if x is None else f"{100 * x:.2f} %"


def pts(x: float | None) -> str:
    """A difference of fractions in percentage points: 0.0206 -> '+2.06 pts'."""
    return "—" if x is None else f"{100 * x:+.2f} pts"


def halfway(chance: float, fraction: float = 0.5) -> float:
    """The 'well above chance' bar: `fraction` of the way from chance to perfect (the plan's bar_fraction)."""
    return chance + (1.0 - chance) * fraction


def bar_words(fraction: float) -> str:
    """How the rules name the bar: 'halfway' for 0.5, else the share of the way."""
    return "halfway" if fraction == 0.5 else f"{fraction:g} of the way"


def estimate(d: dict) -> Estimate:
    """An Estimate from its dict in a stage output."""
    return Estimate(**{k: tuple(map(tuple, v)) if k == "seed_means" else tuple(v) if k == "seeds" else v
                       for k, v in d.items() if k not in DERIVED})


def shifted(est: Estimate, by: float) -> Estimate:
    """The same interval moved by `by` (e.g. a rate minus the bar it must clear)."""
    return replace(est, mean=est.mean + by, low=est.low + by, high=est.high + by)


def ci_text(est: Estimate, fmt=pts) -> str:
    """'+0.45 pts [+0.12, +0.78]' (95 % CI), the way every effect is printed."""
    return f"{fmt(est.mean)} [{fmt(est.low)}, {fmt(est.high)}]"


def spread_text(est: Estimate) -> str:
    """What the CI was made of: seeds, images, and the two parts of its width."""
    seeds = "/".join(map(str, est.seeds))
    paired = "paired per seed; " if est.paired else ""
    return (f"{paired}{seeds} seed{'s' if est.seeds != (1,) else ''} × {est.images:,} test images; "
            f"sd from images {100 * est.sd_images:.2f} pts, from seeds {100 * est.sd_seeds:.2f} pts, "
            f"df {est.df:.3g}")


@dataclass
class Evidence:
    """One row of a claim: the effect it tests, its verdict, and the numbers behind it."""

    row: str
    family: str
    verdict: str
    numbers: dict[str, str]
    test: str = ""         # what the row tests, in a few words: "gain > 0", "as large as the paper's", "non-inferior"
    note: str = ""
    effect: Estimate | None = None
    p: tuple[float, float] | None = None  # one-sided p of its two outcomes (supported, contradicted): Holm's input
    primary: bool = False  # the analysis plan's primary endpoint
    paper_size: float | None = None  # the paper's effect on the row's scale, drawn in the forest plot
    margin: float | None = None  # a margin m on the row's scale, drawn in the forest plot as a ±m band
    unit: str = "pts"  # the effect's scale: a difference of accuracies in points, or another named scale


@dataclass
class Claim:
    """A claim of the paper, the rule that decides each row, and the rows."""

    id: str
    title: str
    paper: str
    rule: str
    evidence: list[Evidence] = field(default_factory=list)
    how_to_run: str = ""
    multiplicity: str = ""  # how its rows' tests were corrected for their number (set by `corrected`)

    @property
    def overall(self) -> dict[str, str]:
        """{backbone family: verdict} by OVERALL_RULE."""
        families: dict[str, list[str]] = {}
        for e in self.evidence:
            families.setdefault(e.family, []).append(e.verdict)
        return {family: overall_verdict(v) for family, v in families.items()}

    @property
    def verdict(self) -> str:
        """One word for the whole claim: the family verdicts if they agree, else 'mixed'."""
        found = set(self.overall.values())
        if not found:
            return NOT_RUN
        return found.pop() if len(found) == 1 else "mixed"


def overall_verdict(verdicts: list[str]) -> str:
    """OVERALL_RULE for one family's row verdicts (already corrected by `corrected`)."""
    scope = [v for v in verdicts if v not in (NOT_RUN, NOT_APPLICABLE)]
    if not scope:
        return NOT_APPLICABLE if NOT_APPLICABLE in verdicts else NOT_RUN
    if all(v == SUPPORTED for v in scope):
        return SUPPORTED
    if CONTRADICTED in scope:
        return CONTRADICTED
    return INCONCLUSIVE


def decided(row: str, family: str, est: Estimate, numbers: dict[str, str], direction: int = 1,
            paper_size: float | None = None, fmt=pts, note: str = "", test: str = "gain > 0", *,
            level: float) -> Evidence:
    """A row decided by `est`'s CI at `level` (the plan's); an inconclusive row says what effect the run would detect
    with 80 % power."""
    est = est if est.level == level else releveled(est, level)
    v = verdict(est, direction, paper_size)
    notes = [note] if note else []
    if v == INCONCLUSIVE:
        notes.append(f"the CI spans zero: this run would detect an effect of ±{fmt(est.detectable_80).lstrip('+')} "
                     "with 80 % power; more seeds or test images would narrow it")
    if not est.spans_seeds:
        notes.append("one seed: test images only (the CI does not span training seeds)")
    size = 0.0 if paper_size is None else paper_size  # contradicted beyond 0 or the paper's size, the nearer
    p = ((est.p_above(0.0), est.p_below(max(0.0, size))) if direction == 1
         else (est.p_below(0.0), est.p_above(min(0.0, size))))
    return Evidence(row, family, v, {"effect (95 % CI)": ci_text(est, fmt), **numbers,
                                     "interval from": spread_text(est)}, test, "; ".join(notes), est, p,
                    paper_size=paper_size)


def _paper_gain(paper: dict, arch: str, dataset: str) -> float | None:
    """The gain the paper states for this backbone on this dataset (its lower end), if any."""
    for r in paper["table1"]:
        if r["arch"] == arch and r["dataset"] == dataset:
            if r["gattanet_acc"] is not None:
                return r["gattanet_acc"] - r["base_acc"]
            return r["gain"]["low"]
    return None


def paper_relative_gain(row: dict) -> float | None:
    """The paper's gain on a Table 1 row as a relative error reduction: (acc_att − acc_base) / (1 − acc_base);
    the stated gain's lower end, else its upper ('up to +3.5 points')."""
    gain = (row["gattanet_acc"] - row["base_acc"] if row["gattanet_acc"] is not None
            else row["gain"]["low"] if row["gain"]["low"] is not None else row["gain"]["high"])
    return None if gain is None else gain / (1.0 - row["base_acc"])


def paper_size_for(paper: dict, arch: str, dataset: str) -> tuple[str, float, dict] | None:
    """How the paper's size applies here: ("absolute", gain, row) on its own dataset; ("relative", r, row) on a
    substitute with the same arch and number of classes; None where the paper has no such row."""
    rows = [r for r in paper["table1"] if r["arch"] == arch]
    own = next((r for r in rows if r["dataset"] == dataset), None)
    if own is not None:
        gain = _paper_gain(paper, arch, dataset)
        gain = own["gain"]["high"] if gain is None else gain
        return None if gain is None else ("absolute", gain, own)
    try:
        classes = get_spec(dataset).num_classes
    except ValueError:
        return None
    for r in rows:
        if get_spec(r["dataset"]).num_classes == classes and paper_relative_gain(r) is not None:
            return "relative", paper_relative_gain(r), r
    return None


def primary_key(out: Outputs, attn_dim: int) -> str | None:
    """The attention run whose clean gain is the plan's primary endpoint: the first run at `attn_dim`."""
    return next((k for k, m in out.train_attn.items() if m["attn_dim"] == attn_dim), None)


def clean_gain(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> Claim:
    level = plan.get("level")
    use_size, dim = plan.get("claims", "clean_gain", "paper_size"), plan.get("primary", "attn_dim")
    claim = Claim("clean_gain", "GAttANet improves clean test accuracy over its frozen backbone",
                  paper["claims"]["clean_gain"],
                  "Effect: GAttANet − baseline accuracy on the whole test set (paired per image, mean over "
                  "training seeds). Supported when its CI lies above 0; contradicted when it lies below 0, or, "
                  "on the paper's own dataset, below the gain the paper states. The primary endpoint (the analysis "
                  f"plan's) is the d = {dim} row; where ≥ 3 backbones of one arch and dataset each carry a run at the "
                  "same d, it is the across-backbone row: every backbone's clean per-image gains in a random-effects "
                  "interval with backbones the top level and t on at most B − 1 df "
                  "(gattanet.analysis.stats.across_backbones), about the recipe that trains a backbone. Each "
                  "backbone's own row then re-estimates that effect: they form a descriptive family of their own.")
    groups = across_groups(out)
    nested = {key for g in groups if g.effect is not None for key in g.runs.values()}
    for group in groups:
        claim.evidence.append(_across_row(group, paper, use_size, level, primary=group.attn_dim == dim))
    primary = None if any(e.primary for e in claim.evidence) else primary_key(out, dim)
    for key, m in out.train_attn.items():
        size = _paper_gain(paper, m["arch"], m["dataset"])
        family = f"{m['arch']}: {NESTED}" if key in nested else m["arch"]
        row = decided(key, family, estimate(out.clean_gain[key]), {
            "baseline": pct(m["baseline_acc"]), "GAttANet (mean over seeds)": pct(m["gattanet_acc"]),
            "paper's gain here": pts(size) if size is not None else "none stated for this dataset"},
            paper_size=size if use_size else None, test="gain > 0" + (" (primary endpoint)" * (key == primary)),
            level=level)
        row.primary = key == primary
        claim.evidence.append(row)
    return claim


def _across_row(group: AcrossGroup, paper: dict, use_size: bool, level: float, primary: bool = False) -> Evidence:
    """The clean-gain row of one across-backbone group, decided by the same rule as a run's own row."""
    runs = ", ".join(group.runs.values())
    test = "gain > 0, across backbones" + " (primary endpoint)" * primary
    if group.effect is None:
        if group.missing:
            return Evidence(group.label, group.arch, NOT_RUN, {"runs": runs}, test,
                            " && ".join(f"dvc repro noise@{k}" for k in group.missing), primary=primary)
        return Evidence(group.label, group.arch, NOT_APPLICABLE, {"runs": runs}, test, group.problem, primary=primary)
    size = _paper_gain(paper, group.arch, group.dataset)
    est = group.effect
    row = decided(group.label, group.arch, est, {
        "each backbone's gain": ", ".join(f"{b} {pts(g)}" for b, g in zip(group.runs, est.seed_means[0])),
        "runs": runs, "paper's gain here": pts(size) if size is not None else "none stated for this dataset"},
        paper_size=size if use_size else None, test=test,
        note="about the recipe: its CI spans backbones (a random factor), their attention seeds and the test images",
        level=level)
    row.numbers["interval from"] = across_spread_text(group)
    row.primary = primary
    return row


def gain_size(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> Claim:
    claim = Claim("gain_size", "The gain is as large as the paper's",
                  paper["claims"]["clean_gain"],
                  "Effect: the clean gain against the paper's own figure. On the paper's own dataset, gain − the stated "
                  "gain; on a substitute dataset, gain − r · (1 − baseline accuracy), r the paper's relative error "
                  "reduction on its row of the same arch and number of classes (toy, 10 classes: 12.3 %; toy, 100 "
                  "classes: 7.4 %; ResNets: +0.3 pts at their baselines), the baseline's error as measured on this test "
                  "set. 'As large' (supported) when the CI lies at or above 0, 'smaller than the paper's' "
                  "(contradicted) when it lies below. Carrying a size across datasets is an assumption, said beside "
                  "each such row.")
    if not plan.get("claims", "size", "relative"):
        claim.how_to_run = "the analysis plan turns the size rows off (claims.size.relative: false)"
        return claim
    level, nested = plan.get("level"), set()
    for group in across_groups(out):
        if group.effect is None:
            continue
        nested |= set(group.runs.values())
        claim.evidence.append(_size_row(group.label, group.arch, group.dataset, group.effect,
                                        group.baseline_acc, paper, level))
    for key, m in out.train_attn.items():
        family = f"{m['arch']}: {NESTED}" if key in nested else m["arch"]
        claim.evidence.append(_size_row(key, family, m["dataset"], estimate(out.clean_gain[key]), m["baseline_acc"],
                                        paper, level, arch=m["arch"]))
    return claim


def _size_row(row: str, family: str, dataset: str, gain: Estimate, base_acc: float, paper: dict, level: float,
              arch: str | None = None) -> Evidence:
    """One size row: the gain against the paper's (absolute on its dataset, relative error reduction elsewhere)."""
    arch = arch or family.split(":")[0]
    found = paper_size_for(paper, arch, dataset)
    if found is None:
        return Evidence(row, family, NOT_APPLICABLE, {}, "as large as the paper's",
                        f"the paper states no gain for {arch} on a dataset of this one's number of classes")
    kind, size, source = found
    error = 1.0 - base_acc
    if kind == "absolute":
        return decided(row, family, shifted(gain, -size), {
            "gain": ci_text(gain), "paper's gain": pts(size)}, test="as large as the paper's (points)", level=level)
    ratio = Estimate(gain.mean / error, gain.low / error, gain.high / error, gain.level, gain.df,
                     gain.sd_images / error, gain.sd_seeds / error, gain.seeds, gain.images, gain.seed_means,
                     gain.paired)
    return decided(row, family, shifted(gain, -size * error), {
        "gain": ci_text(gain), "relative error reduction": f"{ci_text(ratio, pct)} of the baseline's {pct(error)} "
        "error", f"paper's ({source['dataset_label']})": f"{100 * size:.1f} % of the error = {pts(size * error)} here"},
        test="as large as the paper's (relative error reduction)", note=SIZE_ASSUMPTION, level=level)


def noise(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> Claim:
    sigma, level = params.noise.peak_sigma, plan.get("level")
    loss = plan.get("claims", "noise", "relative_loss")
    claim = Claim("noise", "The gain grows at moderate input noise",
                  paper["claims"]["noise"],
                  f"Effect: gain(σ*) − gain(0), paired per image and seed, at two σ* fixed before the run (no "
                  f"maximum over σ is taken): the paper's σ* = {sigma} (its peak, σ 0.03-0.04 on CIFAR10), and a σ* "
                  f"relative to the dataset, the smallest σ of the sweep at which the baseline alone has lost "
                  f"{loss:g} of its clean margin over chance (GAttANet's curve never enters the choice). Supported "
                  "when the CI lies above 0, contradicted when below.")
    for key, m in out.train_attn.items():
        sweep = out.noise.get(key)
        if sweep is None:
            claim.evidence.append(Evidence(key, m["arch"], NOT_RUN, {},
                                           note=stage_command(params, "attention", "noise", key)))
            continue
        k = sweep["sigmas"].index(sweep["peak_sigma"])
        claim.evidence.append(decided(f"{key}: paper's σ* = {sweep['peak_sigma']:g}", m["arch"],
                                      estimate(sweep["growth"]), {
            "gain at σ = 0": ci_text(estimate(sweep["gain"][0])),
            f"gain at σ* = {sweep['peak_sigma']:g}": ci_text(estimate(sweep["gain"][k])),
            "baseline at σ*": pct(sweep["baseline"][k]),
            "baseline's loss of its margin over chance": _lost_text(sweep, k)}, test="gain grows: gain(σ*) − gain(0) > 0",
            level=level))
        claim.evidence.append(_relative_row(key, m["arch"], sweep, loss, level))
    return claim


def noise_visible(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> Claim:
    loss, level = plan.get("claims", "noise", "relative_loss"), plan.get("level")
    claim = Claim("noise_visible", "The gain stays visible across noise levels up to the baseline's collapse",
                  paper["claims"]["noise"],
                  "Effect: GAttANet − baseline accuracy at each σ of the sweep from 0 up to the relative σ* (the "
                  f"smallest σ at which the baseline alone has lost {loss:g} of its clean margin over chance: its "
                  "collapse), paired per image and seed. Supported when the gain's CI lies above 0 at every such σ; "
                  "contradicted when it lies below 0 at one of them (Holm's step-down over them).")
    for key, m in out.train_attn.items():
        sweep = out.noise.get(key)
        if sweep is None:
            claim.evidence.append(Evidence(key, m["arch"], NOT_RUN, {},
                                           note=stage_command(params, "attention", "noise", key)))
            continue
        last = relative_index(sweep, loss) if "chance" in sweep else None
        if last is None:
            claim.evidence.append(Evidence(f"{key}: up to the baseline's collapse", m["arch"], NOT_RUN, {},
                                           note=f"the baseline never lost {loss:g} of its margin over chance on this "
                                           "sweep: add larger σ to noise.sigmas in params.yaml, then `dvc repro`"))
            continue
        for i in range(last + 1):
            claim.evidence.append(decided(f"{key}: σ = {sweep['sigmas'][i]:g}", m["arch"],
                                          estimate(sweep["gain"][i]), {
                "baseline": pct(sweep["baseline"][i]),
                "baseline's loss of its margin over chance": _lost_text(sweep, i)}, test="gain > 0 at this σ",
                level=level))
    return claim


def relative_index(sweep: dict, loss: float) -> int | None:
    """The index of the dataset-relative σ* in a sweep.json (None when its baseline never loses `loss`)."""
    return relative_sigma(sweep["sigmas"], sweep["baseline"], sweep["chance"], loss)


def _lost_text(sweep: dict, i: int) -> str:
    base, chance = sweep["baseline"], sweep["chance"]
    return f"{(base[0] - base[i]) / (base[0] - chance):.0%} (chance {pct(chance)})"


def _relative_row(key: str, family: str, sweep: dict, loss: float, level: float) -> Evidence:
    test = "gain grows: gain(σ*) − gain(0) > 0"
    if "chance" not in sweep or "growth_by_sigma" not in sweep:
        return Evidence(f"{key}: relative σ*", family, NOT_RUN, {}, test,
                        f"the sweep predates the relative σ*: dvc repro noise@{key}")
    i = relative_index(sweep, loss)
    if i is None:
        return Evidence(f"{key}: relative σ*", family, NOT_RUN, {
            f"baseline's loss at σ = {sweep['sigmas'][-1]:g}": _lost_text(sweep, len(sweep["sigmas"]) - 1)}, test,
            f"the baseline never lost {loss:g} of its margin over chance on this sweep: add larger σ to "
            "noise.sigmas in params.yaml, then `dvc repro`")
    s = sweep["sigmas"][i]
    return decided(f"{key}: relative σ* = {s:g}", family, estimate(sweep["growth_by_sigma"][i]), {
        "gain at σ = 0": ci_text(estimate(sweep["gain"][0])),
        f"gain at σ* = {s:g}": ci_text(estimate(sweep["gain"][i])), "baseline at σ*": pct(sweep["baseline"][i]),
        "baseline's loss of its margin over chance": _lost_text(sweep, i)}, test=test, level=level)


def query_space(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> Claim:
    frac, level = plan.get("claims", "query_space", "bar_fraction"), plan.get("level")
    claim = Claim("query_space", "The global query separates the classes (and their groups)",
                  paper["claims"]["query_space"],
                  "Effect: k-NN accuracy on the global query q of every test image (5-fold, per seed) minus "
                  f"the bar {bar_words(frac)} from chance to 100 % (the plan's bar_fraction); for datasets with class "
                  "groups (animals/vehicles, clothing/footwear/bags) a second row does the same for the group label, "
                  "chance being the largest group's share. Supported when the CI lies above the bar, contradicted "
                  "when below. Whether q is learned beyond its inputs is the next claim.")
    for key, m, s in _embeddings(out, params, claim):
        bar = halfway(s["chance"], frac)
        knn = estimate(s["knn_query"])
        claim.evidence.append(decided(f"{key}: classes", m["arch"], shifted(knn, -bar), {
            "k-NN accuracy on q": ci_text(knn, pct), "bar": pct(bar), "chance": pct(s["chance"])},
            test="above a bar", level=level))
        groups = s.get("groups")
        if groups:
            gbar = halfway(groups["largest_share"], frac)
            gknn = estimate(groups["knn_query"])
            claim.evidence.append(decided(f"{key}: groups ({', '.join(groups['names'])})", m["arch"],
                                          shifted(gknn, -gbar), {
                "group k-NN accuracy on q": ci_text(gknn, pct), "bar": pct(gbar),
                "largest group": pct(groups["largest_share"]),
                "group silhouette in 2-D (figure, first seed)": f"{groups['in_2d']['silhouette']:.3f}"},
                test="above a bar", level=level))
    return claim


def query_learned(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> Claim:
    claim = Claim("query_learned", "The global query is learned beyond its inputs",
                  paper["claims"]["query_space"],
                  "Not the paper's sentence, but what its figure implies of a *learned* query: q's k-NN accuracy "
                  "against the same k-NN on a random d-dimensional projection of the same tapped activations (an "
                  "untrained attention system, per seed) and on the penultimate features reduced to d by PCA fit on "
                  "training images, on the same test images. Supported when q beats each (CI above 0), contradicted "
                  "when a control beats q (CI below 0).")
    level = plan.get("level")
    for key, m, s in _embeddings(out, params, claim):
        claim.evidence += _control_rows(f"{key}: classes", m["arch"], estimate(s["knn_query"]), s.get("controls"), key,
                                        level)
        groups = s.get("groups")
        if groups:
            claim.evidence += _control_rows(f"{key}: groups", m["arch"], estimate(groups["knn_query"]),
                                            groups.get("controls"), key, level)
    return claim


def _embeddings(out: Outputs, params: Params, claim: Claim):
    """(key, train-attn metrics, embed stats) per attention run with an embedding; a not-run row for the others."""
    for key, m in out.train_attn.items():
        emb = out.embedding.get(key)
        if emb is None:
            claim.evidence.append(Evidence(key, m["arch"], NOT_RUN, {},
                                           note=stage_command(params, "attention", "embed", key)))
            continue
        yield key, m, emb["stats"]


def _control_rows(row: str, family: str, knn: Estimate, controls: dict | None, key: str,
                  level: float) -> list[Evidence]:
    """q against each control of the embed stage (random projection, PCA of the penultimate features)."""
    if controls is None:
        return [Evidence(f"{row}: q vs controls", family, NOT_RUN, {},
                         note=f"the embedding predates its controls: dvc repro embed@{key}")]
    return [decided(f"{row}: q vs {name}", family, estimate(c["query_minus"]), {
        "control": c["what"], "k-NN accuracy on the control": ci_text(estimate(c["knn"]), pct),
        "k-NN accuracy on q": ci_text(knn, pct)}, test="q − control > 0", level=level) for name, c in controls.items()]


def rate_estimate(est: Estimate, level: float) -> Estimate:
    """A rate's Estimate with its interval replaced by the rate interval (Clopper–Pearson at the effective n), at
    `level` (the plan's)."""
    est = releveled(est, level)
    low, high = rate_interval(est)
    return replace(est, low=low, high=high)


def true_class(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> Claim:
    bar, level = plan.get("claims", "true_class", "typical_rate"), plan.get("level")
    claim = Claim("true_class", "The true class is typically among the top last-layer agreement scores",
                  paper["claims"]["true_class"],
                  "Effect: the rate at which the true class is among the 3 last-layer units that agreement "
                  f"enhances most (every test image, per seed) minus {pct(bar)}: 'typically' read as in most images "
                  "(the plan's typical_rate). Its interval is a rate's: Clopper–Pearson at the effective sample size "
                  "p(1 − p)/SE², SE from the seeds × images ANOVA (Korn & Graubard), so it stays inside [0, 1]. Units "
                  "rank by their modulation α·a: the model is the same under (α, W_k) → (−α, −W_k), so a seed may "
                  "learn the scores with either sign, and with α > 0 this is the paper's 'highest agreement score'. "
                  "Supported above the bar, contradicted below.")
    for key, m in out.train_attn.items():
        maps = out.maps.get(key)
        if maps is None:
            claim.evidence.append(Evidence(key, m["arch"], NOT_RUN, {},
                                           note=stage_command(params, "attention", "maps", key)))
            continue
        s = maps["stats"]
        top3, top1 = rate_estimate(estimate(s["top3_rate"]), level), rate_estimate(estimate(s["top1_rate"]), level)
        claim.evidence.append(decided(key, m["arch"], shifted(top3, -bar), {
            "top-3 rate": ci_text(top3, pct), "bar": pct(bar), "chance": pct(s["chance_top3"]),
            "top-1 rate": ci_text(top1, pct)}, test="above a bar (a rate)", level=level))
    return claim


def lesions(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> Claim:
    share = plan.get("claims", "lesions", "share")
    claim = Claim("lesions", "Lesions: the first layer's modulation is vital, the last one's dispensable, "
                  "no single layer suffices", paper["claims"]["lesions"],
                  f"The paper's sentences on the full gain's scale, G = full − baseline: each row's effect is kept = "
                  f"(lesioned − baseline) − {share:g} · G, paired per seed and image (the plan's share). (1) The first "
                  "layer ablated ('.ccdd', 'catastrophic'): supported when kept lies below 0 (more than half of G "
                  "lost), contradicted when above; (2) the last layer ablated ('cccd.', 'inexistant' effect): "
                  "supported when kept lies above 0, contradicted when below; (3) each layer alone ('no performance "
                  "improvements'), as (1). Not applicable where G's own CI does not lie above 0 (no gain to lose).")
    for key in params.lesions:
        les = out.lesions.get(key)
        family = out.train_attn.get(key, {}).get("arch", "?")
        if les is None:
            claim.evidence.append(Evidence(key, family, NOT_RUN, {},
                                           note=stage_command(params, "lesions", "lesions", key)))
            continue
        claim.evidence.extend(_lesion_rows(key, family, les, share, plan.get("level")))
    if not claim.evidence:
        claim.how_to_run = "add an attention run under `lesions:` in params.yaml, then `dvc repro`"
    return claim


def kept_row(row: str, family: str, kept: dict | None, share: float, direction: int, g: Estimate,
             numbers: dict[str, str], test: str, rerun: str, level: float) -> Evidence:
    """A row on G's scale: `kept` (recompute.kept_share at `share`) decided in `direction` at `level`; not applicable
    while G's CI does not lie above 0; not run where the stored contrast is missing or at another share."""
    if verdict(releveled(g, level)) != SUPPORTED:
        return Evidence(row, family, NOT_APPLICABLE, {"full gain G": ci_text(g), **numbers}, test,
                        "G's CI does not lie above 0: there is no gain to keep or lose")
    if kept is None or kept.get("share") != share:
        return Evidence(row, family, NOT_RUN, numbers, test, f"its contrast at share {share:g} is missing: {rerun}")
    est = estimate({k: v for k, v in kept.items() if k != "share"})
    return decided(row, family, est, {"full gain G": ci_text(g), **numbers}, direction=direction, test=test,
                   level=level)


def _lesion_rows(key: str, family: str, les: dict, share: float, level: float) -> list[Evidence]:
    g = estimate(next(p for p in les["patterns"] if p["kind"] == "full")["vs_baseline"])
    ablate = [p for p in les["patterns"] if p["kind"] == "ablate"]
    alone = [p for p in les["patterns"] if p["kind"] == "alone"]
    rerun = f"dvc repro lesions@{key}"

    def numbers(p: dict) -> dict[str, str]:
        kept = (p["accuracy"] - les["baseline_acc"]) / g.mean if g.mean else float("nan")
        return {"accuracy": pct(p["accuracy"]), "baseline": pct(les["baseline_acc"]), "full": pct(les["full_acc"]),
                "share of G kept (point estimate)": f"{kept:.0%}", "mode": les["mode"]}

    first, last = ablate[0], ablate[-1]
    rows = [kept_row(f"{key}: {first['pattern']} (first layer ablated) keeps < {share:g} G", family, first.get("kept"),
                     share, -1, g, numbers(first), f"loses more than {share:g} of G", rerun, level),
            kept_row(f"{key}: {last['pattern']} (last layer ablated) keeps > {share:g} G", family, last.get("kept"),
                     share, 1, g, numbers(last), f"keeps more than {share:g} of G", rerun, level)]
    rows += [kept_row(f"{key}: {p['pattern']} ({p['layer']} alone) keeps < {share:g} G", family, p.get("kept"), share,
                      -1, g, numbers(p), f"keeps less than {share:g} of G", rerun, level) for p in alone]
    return rows


def dimension(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> Claim:
    small, large = plan.get("claims", "dimension", "dims")
    claim = Claim("dimension", f"A larger attention dimension helps the toy model (d = {large} vs d = {small})",
                  paper["claims"]["dimension"],
                  f"Effect: gain(d = {large}) − gain(d = {small}) on the same backbone and the same (noisy) test "
                  "images, CI over both runs' seeds and the images; one row on clean images, one at the paper's σ*, "
                  "one at the dataset-relative σ* (the noise claim's). Supported when the CI lies above 0, "
                  "contradicted when below.")
    if out.dims is None:
        claim.how_to_run = "dvc repro dims"
        return claim
    loss, level = plan.get("claims", "noise", "relative_loss"), plan.get("level")
    for c in out.dims.get("comparisons", []):
        if (c["d_small"], c["d_large"]) != (small, large):
            continue
        sweep = out.noise.get(c["small"]) or {}
        rel = relative_index(sweep, loss) if "chance" in sweep else None
        rel_sigma = None if rel is None else sweep["sigmas"][rel]
        labels = (["clean"] if c["at"] == "clean" else [f"paper's σ* = {c['sigma']:g}"] if c["at"] == "peak" else [])
        if rel_sigma is not None and c["sigma"] == rel_sigma and c["at"] != "clean":
            labels.append(f"relative σ* = {c['sigma']:g}")
        for label in labels:
            claim.evidence.append(decided(f"{c['dataset']}: {c['large']} − {c['small']}, {label}", c["arch"],
                                          estimate(c["difference"]), {}, test=f"gain(d = {large}) − gain(d = {small}) > 0",
                                          level=level))
    if not claim.evidence:
        claim.how_to_run = (f"add toy attention runs with attn_dim {small} and {large} on one backbone, "
                            "then `dvc repro`")
    return claim


CONTROL_LABELS = {  # method -> what the control is, in the report's words
    "more-training": "the backbone trained on from its checkpoint (all weights, its own lr and augmentation)",
    "vector-scaling": "a per-class scale and bias on the logits",
    "logits": "the logits layer fine-tuned",
    "residual-head": "a residual bottleneck on the penultimate layer + the logits layer fine-tuned",
}
CAPACITY_COMMAND = "gattanet-cli profile full && dvc repro baselines@wider-toy"


def controls(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> Claim:
    level = plan.get("level")
    judged, share = plan.get("claims", "controls", "judged"), plan.get("claims", "controls", "share")
    claim = Claim("controls", "The gain is attention's, not extra training's",
                  "Not a claim of the paper, but the test an add-on trained on a frozen network owes: would the "
                  "same extra training, or a head recalibrated at the same parameter count, buy the gain too?",
                  "Per control, two rows paired on the same test images and training seeds (GAttANet seed s vs "
                  "control seed s); every control has GAttANet's frozen backbone, epochs cap, patience, training "
                  "images and seeds, and a head no more trainable parameters than GAttANet. (1) GAttANet − control: "
                  "supported when its CI lies above 0, contradicted when below. (2) Non-inferiority of the control, "
                  f"margin {share:g} of GAttANet's gain G fixed in the analysis plan: the contrast (control − baseline) "
                  f"− {share:g} · G; contradicted ('the control explains the gain') when its CI lies above 0, "
                  "supported when below; not applicable where G's CI does not lie above 0. The capacity control (a "
                  "wider toy CNN of the toy's + GAttANet's parameters) runs in the full profile.")
    for key in params.controls:
        res = out.controls.get(key)
        family = out.train_attn.get(key, {}).get("arch", "?")
        if res is None:
            claim.evidence.append(Evidence(key, family, NOT_RUN, {},
                                           note=stage_command(params, "controls", "controls", key)))
            continue
        g = estimate(res["gattanet_gain"])
        for row in res["controls"]:
            numbers = {"control": CONTROL_LABELS.get(row["method"], row["method"]),
                       "control's gain over the baseline": ci_text(estimate(row["gain"])),
                       "GAttANet's gain over the baseline": ci_text(g),
                       "trainable params": f"{row['trainable_params']:,} (GAttANet {res['gattanet_params']:,})",
                       "epochs run per seed": ", ".join(map(str, row["epochs_run"]))}
            name, effect = f"{key}: vs {row['method']}", estimate(row["vs_gattanet"])
            if row["method"] not in judged:
                claim.evidence.append(Evidence(name, family, NOT_APPLICABLE,
                                               {"effect (95 % CI)": ci_text(effect), **numbers}, "GAttANet − control > 0",
                                               "not among the analysis plan's judged controls: shown, out of scope",
                                               effect))
                continue
            claim.evidence.append(decided(name, family, effect, numbers, test="GAttANet − control > 0", level=level))
            claim.evidence.append(kept_row(f"{key}: {row['method']} keeps < {share:g} G", family, row.get("kept"),
                                           share, -1, g, {"control": numbers["control"]},
                                           f"non-inferior within {share:g} G (contradicts)", f"dvc repro controls@{key}",
                                           level))
    wider = out.baselines.get("wider-toy")
    if claim.evidence:  # the capacity row belongs beside controls that ran or are due
        if wider is None:
            claim.evidence.append(Evidence("capacity: wider toy CNN", "toy", NOT_RUN, {}, note=CAPACITY_COMMAND))
        else:
            claim.evidence.append(Evidence("capacity: wider toy CNN", wider["arch"], NOT_APPLICABLE, {
                "its clean gain over the backbone": ci_text(estimate(wider["clean_gain"])),
                "trainable params": f"{wider['trainable_params']:,}"},
                note="trained from scratch, not on GAttANet's seeds: compared in the related-modules section, "
                "not paired here"))
    if not claim.evidence:
        claim.how_to_run = "add an attention run under `controls:` in params.yaml, then `dvc repro`"
    return claim


def multiplicity_families(claim: Claim) -> list[list[Evidence]]:
    """The claim's Holm families: its tested rows outside the nested families, and each nested family on its own."""
    tested = [e for e in claim.evidence if e.p is not None and e.verdict in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)]
    families: dict[bool | str, list[Evidence]] = {}
    for e in tested:
        families.setdefault(e.family if NESTED in e.family else False, []).append(e)
    return list(families.values())


def corrected(claim: Claim, plan: AnalysisPlan) -> Claim:
    """The claim's rows corrected once, by the plan's `multiplicity`, its words in claim.multiplicity.

    holm: a claim is the conjunction of its rows. 'Supported' needs every row supported, an intersection-union test
    whose level is each row's: supported rows take no correction. 'Contradicted' needs one row contradicted, a
    union: Holm's step-down over the family's rows on each row's one-sided p of the contradicting outcome, at the
    plan's one-sided α; a contradicted row whose adjusted p misses α becomes inconclusive. Nested rows (each backbone
    beside the across-backbone row) form their own family."""
    alpha, rule = plan.alpha_one_sided, plan.get("multiplicity")
    families = multiplicity_families(claim)
    n = sum(map(len, families))
    iut = ("Supported needs every row supported (an intersection-union test), so supported rows take no correction.")
    if rule == "none" or not n:
        claim.multiplicity = (f"Multiplicity: none ({'the plan says none' if n else 'no tested rows'}); each row's "
                              f"one-sided test at α = {alpha:g} on its own. {iut}")
        return claim
    demoted = 0
    for family in families:
        raw = [e.p[1] for e in family]
        for e, p, adj in zip(family, raw, holm_adjusted(raw)):
            if e.verdict == CONTRADICTED and adj >= alpha:
                e.note = "; ".join(filter(None, [e.note, f"contradicted before Holm's correction (one-sided p = "
                                                 f"{p:.3g}), inconclusive after it: adjusted p = {adj:.3g} ≥ α = "
                                                 f"{alpha:g} over this family's {len(family)} rows"]))
                e.verdict = INCONCLUSIVE
                demoted += 1
    claim.multiplicity = (f"Multiplicity: {iut} Contradicted needs one row contradicted (a union): Holm's step-down "
                          f"over the claim's {n} tested row{'s' * (n > 1)} ({len(families)} famil"
                          f"{'ies' if len(families) > 1 else 'y'}: nested per-backbone rows apart), each row's one-sided "
                          f"p of the contradicting outcome against α = {alpha:g} (the printed CIs stay uncorrected 95 % "
                          f"intervals); {demoted} row{'s' * (demoted != 1)} made inconclusive by it.")
    return claim


CLAIMS = (clean_gain, gain_size, noise_visible, noise, query_space, query_learned, true_class, lesions, dimension,
          controls)  # in the order the report lists them


def evaluate_claims(out: Outputs, paper: dict, params: Params, plan: AnalysisPlan) -> list[Claim]:
    """All claims (CLAIMS) judged under the analysis plan, each corrected for its rows' number (`corrected`)."""
    return [corrected(claim(out, paper, params, plan), plan) for claim in CLAIMS]
