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
                            DERIVED, at_most, equivalence, holm_adjusted, releveled, verdict)
from gattanet.analysis.sweeps import relative_sigma

from .across import AcrossGroup, across_groups
from .across import spread_text as across_spread_text
from .analysis_plan import load_plan
from .load import Outputs, stage_command

OVERALL_RULE = ("Per backbone family, over the rows in scope (rows not run or not applicable are out of "
                "scope): supported when every row is supported; contradicted when every row is contradicted; "
                "inconclusive otherwise (mixed or undecided rows). The two outcomes need the same unanimity.")
FULL_PROFILE_COMMAND = "gattanet-cli profile full && dvc repro"
# What "supported" means on a row (Evidence.test), in the words of the claims table.
GAIN_TEST, SIZE_TEST, BAR_TEST = "gain > 0", "gain > 0, not below the paper's", "above a bar"
DIFF_TEST = "difference > 0"  # a difference of gains or accuracies: GAttANet − a control, d = 64 − d = 16, σ* − 0
NOT_JUDGED = "shown, not judged"  # a row shown beside a claim, out of its scope


def equivalent_test(margin: float) -> str:
    """The test label of a TOST row: 'equivalent within ±0.50 pts'."""
    return f"equivalent within ±{pts(margin).lstrip('+')}"


def at_most_test(margin: float) -> str:
    """The test label of a one-sided bound: 'at most +0.50 pts'."""
    return f"at most {pts(margin)}"


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
    note: str = ""
    effect: Estimate | None = None
    p: tuple[float, float] | None = None  # one-sided p of its two outcomes (supported, contradicted): Holm's input
    test: str = ""  # what "supported" means on this row, a few words (GAIN_TEST, equivalent_test(m), ...)
    paper_size: float | None = None  # the paper's effect on the row's scale, for the forest plot
    margin: float | None = None  # the row's margin m on the row's scale (±m or +m, by `test`), for the forest plot
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
    """OVERALL_RULE for one family's row verdicts."""
    scope = [v for v in verdicts if v not in (NOT_RUN, NOT_APPLICABLE)]
    if not scope:
        return NOT_APPLICABLE if NOT_APPLICABLE in verdicts else NOT_RUN
    if all(v == SUPPORTED for v in scope):
        return SUPPORTED
    if all(v == CONTRADICTED for v in scope):
        return CONTRADICTED
    return INCONCLUSIVE


def decided(row: str, family: str, est: Estimate, numbers: dict[str, str], direction: int = 1,
            paper_size: float | None = None, fmt=pts, note: str = "", test: str | None = None) -> Evidence:
    """A row decided by `est`'s CI; an inconclusive row says what effect the run would detect with 80 % power."""
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
                                     "interval from": spread_text(est)}, "; ".join(notes), est, p,
                    test or (GAIN_TEST if paper_size is None else SIZE_TEST), paper_size)


def _paper_gain(paper: dict, arch: str, dataset: str) -> float | None:
    """The gain the paper states for this backbone on this dataset (its lower end), if any."""
    for r in paper["table1"]:
        if r["arch"] == arch and r["dataset"] == dataset:
            if r["gattanet_acc"] is not None:
                return r["gattanet_acc"] - r["base_acc"]
            return r["gain"]["low"]
    return None


def clean_gain(out: Outputs, paper: dict, params: dict) -> Claim:
    claim = Claim("clean_gain", "GAttANet improves clean test accuracy over its frozen backbone",
                  paper["claims"]["clean_gain"],
                  "Effect: GAttANet − baseline accuracy on the whole test set (paired per image, mean over "
                  "training seeds). Supported when its CI lies above 0; contradicted when it lies below 0, or, "
                  "on the paper's own dataset, below the gain the paper states. Where ≥ 3 backbones of one arch "
                  "and dataset each carry a run at the same d, a first row decides the gain across them: every "
                  "backbone's clean per-image gains (its noise arrays at σ = 0) in a random-effects interval with "
                  "backbones the top level (gattanet.analysis.stats.across_backbones), about the recipe that "
                  "trains a backbone; each backbone's own interval, about one trained network, follows.")
    use_size = load_plan().get("claims", "clean_gain", "paper_size")
    for group in across_groups(out):
        claim.evidence.append(_across_row(group, paper, use_size))
    for key, m in out.train_attn.items():
        size = _paper_gain(paper, m["arch"], m["dataset"])
        claim.evidence.append(decided(key, m["arch"], estimate(m["gain"]), {
            "baseline": pct(m["baseline_acc"]), "GAttANet (mean over seeds)": pct(m["gattanet_acc"]),
            "paper's gain here": pts(size) if size is not None else "none stated for this dataset"},
            paper_size=size if use_size else None))
    return claim


def _across_row(group: AcrossGroup, paper: dict, use_size: bool) -> Evidence:
    """The clean-gain row of one across-backbone group, decided by the same rule as a run's own row."""
    runs = ", ".join(group.runs.values())
    if group.effect is None:
        if group.missing:
            return Evidence(group.label, group.arch, NOT_RUN, {"runs": runs},
                            " && ".join(f"dvc repro noise@{k}" for k in group.missing))
        return Evidence(group.label, group.arch, NOT_APPLICABLE, {"runs": runs}, group.problem)
    size = _paper_gain(paper, group.arch, group.dataset)
    est = group.effect
    row = decided(group.label, group.arch, est, {
        "each backbone's gain": ", ".join(f"{b} {pts(g)}" for b, g in zip(group.runs, est.seed_means[0])),
        "runs": runs, "paper's gain here": pts(size) if size is not None else "none stated for this dataset"},
        paper_size=size if use_size else None,
        note="about the recipe: its CI spans backbones (a random factor), their attention seeds and the test images")
    row.numbers["interval from"] = across_spread_text(group)
    return row


def noise(out: Outputs, paper: dict, params: dict) -> Claim:
    sigma = (params.get("noise") or {}).get("peak_sigma")
    loss = load_plan().get("claims", "noise", "relative_loss")
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
            claim.evidence.append(Evidence(key, m["arch"], NOT_RUN, {}, stage_command(params, "attention", "noise", key)))
            continue
        k = sweep["sigmas"].index(sweep["peak_sigma"])
        claim.evidence.append(decided(f"{key}: paper's σ* = {sweep['peak_sigma']:g}", m["arch"],
                                      estimate(sweep["growth"]), {
            "gain at σ = 0": ci_text(estimate(sweep["gain"][0])),
            f"gain at σ* = {sweep['peak_sigma']:g}": ci_text(estimate(sweep["gain"][k])),
            "baseline at σ*": pct(sweep["baseline"][k]),
            "baseline's loss of its margin over chance": _lost_text(sweep, k)}, test=DIFF_TEST))
        claim.evidence.append(_relative_row(key, m["arch"], sweep, loss))
    return claim


def relative_index(sweep: dict, loss: float) -> int | None:
    """The index of the dataset-relative σ* in a sweep.json (None when its baseline never loses `loss`)."""
    return relative_sigma(sweep["sigmas"], sweep["baseline"], sweep["chance"], loss)


def _lost_text(sweep: dict, i: int) -> str:
    base, chance = sweep["baseline"], sweep["chance"]
    return f"{(base[0] - base[i]) / (base[0] - chance):.0%} (chance {pct(chance)})"


def _relative_row(key: str, family: str, sweep: dict, loss: float) -> Evidence:
    if "chance" not in sweep or "growth_by_sigma" not in sweep:
        return Evidence(f"{key}: relative σ*", family, NOT_RUN, {},
                        f"the sweep predates the relative σ*: dvc repro noise@{key}")
    i = relative_index(sweep, loss)
    if i is None:
        return Evidence(f"{key}: relative σ*", family, NOT_RUN, {
            f"baseline's loss at σ = {sweep['sigmas'][-1]:g}": _lost_text(sweep, len(sweep["sigmas"]) - 1)},
            f"the baseline never lost {loss:g} of its margin over chance on this sweep: add larger σ to "
            "noise.sigmas in params.yaml, then `dvc repro`")
    s = sweep["sigmas"][i]
    return decided(f"{key}: relative σ* = {s:g}", family, estimate(sweep["growth_by_sigma"][i]), {
        "gain at σ = 0": ci_text(estimate(sweep["gain"][0])),
        f"gain at σ* = {s:g}": ci_text(estimate(sweep["gain"][i])), "baseline at σ*": pct(sweep["baseline"][i]),
        "baseline's loss of its margin over chance": _lost_text(sweep, i)}, test=DIFF_TEST)


def query_space(out: Outputs, paper: dict, params: dict) -> Claim:
    frac = load_plan().get("claims", "query_space", "bar_fraction")
    claim = Claim("query_space", "The global query separates the classes (and their groups)",
                  paper["claims"]["query_space"],
                  "Effect: k-NN accuracy on the global query q of every test image (5-fold, per seed) minus "
                  f"the bar {bar_words(frac)} from chance to 100 % (the plan's bar_fraction); for datasets with class groups (animals/vehicles, "
                  "clothing/footwear/bags) a second row does the same for the group label, chance being the "
                  "largest group's share. Supported when the CI lies above the bar, contradicted when below. "
                  "Controls: the same k-NN on a random d-dimensional projection of the same tapped activations (an "
                  "untrained attention system, per seed) and on the penultimate features reduced to d by PCA fit on "
                  "training images; a row per control, effect q's k-NN accuracy − the control's on the same test "
                  "images, supported when its CI lies above 0 (q beats it), contradicted when below.")
    for key, m in out.train_attn.items():
        emb = out.embedding.get(key)
        if emb is None:
            claim.evidence.append(Evidence(key, m["arch"], NOT_RUN, {},
                                           stage_command(params, "attention", "embed", key)))
            continue
        s = emb["stats"]
        bar = halfway(s["chance"], frac)
        knn = estimate(s["knn_query"])
        claim.evidence.append(decided(f"{key}: classes", m["arch"], shifted(knn, -bar), {
            "k-NN accuracy on q": ci_text(knn, pct), "bar": pct(bar), "chance": pct(s["chance"])}, test=BAR_TEST))
        claim.evidence += _control_rows(f"{key}: classes", m["arch"], knn, s.get("controls"), key)
        groups = s.get("groups")
        if groups:
            gbar = halfway(groups["largest_share"], frac)
            gknn = estimate(groups["knn_query"])
            claim.evidence.append(decided(f"{key}: groups ({', '.join(groups['names'])})", m["arch"],
                                          shifted(gknn, -gbar), {
                "group k-NN accuracy on q": ci_text(gknn, pct), "bar": pct(gbar),
                "largest group": pct(groups["largest_share"]),
                "group silhouette in 2-D (figure, first seed)": f"{groups['in_2d']['silhouette']:.3f}"},
                test=BAR_TEST))
            claim.evidence += _control_rows(f"{key}: groups", m["arch"], gknn, groups.get("controls"), key)
    return claim


def _control_rows(row: str, family: str, knn: Estimate, controls: dict | None, key: str) -> list[Evidence]:
    """q against each control of the embed stage (random projection, PCA of the penultimate features)."""
    if controls is None:
        return [Evidence(f"{row}: q vs controls", family, NOT_RUN, {},
                         f"the embedding predates its controls: dvc repro embed@{key}")]
    return [decided(f"{row}: q vs {name}", family, estimate(c["query_minus"]), {
        "control": c["what"], "k-NN accuracy on the control": ci_text(estimate(c["knn"]), pct),
        "k-NN accuracy on q": ci_text(knn, pct)}, test=DIFF_TEST) for name, c in controls.items()]


def true_class(out: Outputs, paper: dict, params: dict) -> Claim:
    frac = load_plan().get("claims", "true_class", "bar_fraction")
    claim = Claim("true_class", "The true class is typically among the top last-layer agreement scores",
                  paper["claims"]["true_class"],
                  "Effect: the rate at which the true class is among the 3 last-layer units that agreement "
                  f"enhances most (every test image, per seed) minus the bar {bar_words(frac)} from chance (3/C) "
                  "to 100 % (the plan's bar_fraction; at 0.5 always ≥ 50 %, the paper's 'typically'). Units rank by their modulation α·a: the "
                  "model is the same under (α, W_k) → (−α, −W_k), so a seed may learn the scores with either "
                  "sign, and with α > 0 this is the paper's 'highest agreement score'. Supported above the "
                  "bar, contradicted below.")
    for key, m in out.train_attn.items():
        maps = out.maps.get(key)
        if maps is None:
            claim.evidence.append(Evidence(key, m["arch"], NOT_RUN, {},
                                           stage_command(params, "attention", "maps", key)))
            continue
        s = maps["stats"]
        bar = halfway(s["chance_top3"], frac)
        top3 = estimate(s["top3_rate"])
        claim.evidence.append(decided(key, m["arch"], shifted(top3, -bar), {
            "top-3 rate": ci_text(top3, pct), "bar": pct(bar), "chance": pct(s["chance_top3"]),
            "top-1 rate": ci_text(estimate(s["top1_rate"]), pct)}, test=BAR_TEST))
    return claim


def lesions(out: Outputs, paper: dict, params: dict) -> Claim:
    plan = load_plan()
    margin, alpha = plan.get("claims", "lesions", "margin"), plan.alpha_one_sided
    claim = Claim("lesions", "Lesions: the first layer's modulation is vital, the last one's dispensable, "
                  "no single layer suffices", paper["claims"]["lesions"],
                  f"The paper's own contrasts, with an equivalence margin m = {pts(margin).lstrip('+')} fixed in the "
                  "analysis plan (the smallest gain the paper calls an improvement), each one-sided test at "
                  f"{alpha:g}: (1) the first layer ablated ('.ccdd') against the baseline: supported ('catastrophic': "
                  "the gain lost, or worse) when the CI lies below +m, contradicted when it lies above +m; (2) the "
                  "last layer ablated ('cccd.') against the full model: supported ('inexistant' effect) when the CI "
                  "lies inside ±m (two one-sided tests, TOST), contradicted when it lies wholly beyond one side; "
                  "(3) each layer alone against the baseline ('no performance improvements'), as (2). Every "
                  "attention run under `lesions:`, whatever its own gain G, which each row prints.")
    for key in params.get("lesions") or {}:
        les = out.lesions.get(key)
        family = out.train_attn.get(key, {}).get("arch", "?")
        if les is None:
            claim.evidence.append(Evidence(key, family, NOT_RUN, {}, stage_command(params, "lesions", "lesions", key)))
            continue
        claim.evidence.extend(_lesion_rows(key, family, les, margin, alpha))
    if not claim.evidence:
        claim.how_to_run = "add an attention run under `lesions:` in params.yaml, then `dvc repro`"
    return claim


def bounded(row: str, family: str, est: Estimate, test, margin: float, alpha: float, numbers: dict[str, str],
            note: str = "") -> Evidence:
    """A row decided against a margin by `test` (gattanet.analysis.stats.equivalence or at_most); an inconclusive
    row says which margin this run's interval could have met."""
    v = test(est, margin, alpha)
    notes = [note] if note else []
    if v == INCONCLUSIVE:
        tested = releveled(est, 1 - 2 * alpha)
        reach = tested.high if test is at_most else max(abs(tested.low), abs(tested.high))
        notes.append(f"the CI reaches beyond the margin ±{pts(margin).lstrip('+')}: this run could only have shown "
                     f"{'a bound' if test is at_most else 'equivalence'} within {pts(reach).lstrip('+')}; more seeds "
                     "or test images would narrow it")
    p = ((est.p_below(margin), est.p_above(margin)) if test is at_most else
         (max(est.p_above(-margin), est.p_below(margin)), min(est.p_below(-margin), est.p_above(margin))))
    return Evidence(row, family, v, {"effect (95 % CI)": ci_text(est), "margin": f"±{pts(margin).lstrip('+')}",
                                     **numbers, "interval from": spread_text(est)}, "; ".join(notes), est, p,
                    at_most_test(margin) if test is at_most else equivalent_test(margin), margin=margin)


def _lesion_rows(key: str, family: str, les: dict, margin: float, alpha: float) -> list[Evidence]:
    g = estimate(next(p for p in les["patterns"] if p["kind"] == "full")["vs_baseline"])
    g_note = "" if verdict(g) == SUPPORTED else "G itself is not supported here: read the row beside G"
    ablate = [p for p in les["patterns"] if p["kind"] == "ablate"]
    alone = [p for p in les["patterns"] if p["kind"] == "alone"]

    def numbers(p: dict) -> dict[str, str]:
        return {"full gain G": ci_text(g), "accuracy": pct(p["accuracy"]), "baseline": pct(les["baseline_acc"]),
                "full": pct(les["full_acc"]), "mode": les["mode"]}

    first, last = ablate[0], ablate[-1]
    rows = [bounded(f"{key}: {first['pattern']} (first layer ablated) vs baseline", family,
                    estimate(first["vs_baseline"]), at_most, margin, alpha, numbers(first), g_note),
            bounded(f"{key}: {last['pattern']} (last layer ablated) vs full", family, estimate(last["vs_full"]),
                    equivalence, margin, alpha, numbers(last), g_note)]
    rows += [bounded(f"{key}: {p['pattern']} ({p['layer']} alone) vs baseline", family, estimate(p["vs_baseline"]),
                     equivalence, margin, alpha, numbers(p), g_note) for p in alone]
    return rows


def dimension(out: Outputs, paper: dict, params: dict) -> Claim:
    small, large = load_plan().get("claims", "dimension", "dims")
    claim = Claim("dimension", f"A larger attention dimension helps the toy model (d = {large} vs d = {small})",
                  paper["claims"]["dimension"],
                  f"Effect: gain(d = {large}) − gain(d = {small}) on the same backbone and the same (noisy) test "
                  "images, CI over both runs' seeds and the images; one row on clean images, one at the paper's σ*, "
                  "one at the dataset-relative σ* (the noise claim's). Supported when the CI lies above 0, "
                  "contradicted when below.")
    if out.dims is None:
        claim.how_to_run = "dvc repro dims"
        return claim
    loss = load_plan().get("claims", "noise", "relative_loss")
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
                                          estimate(c["difference"]), {}, test=DIFF_TEST))
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


def controls(out: Outputs, paper: dict, params: dict) -> Claim:
    claim = Claim("controls", "The gain is attention's, not extra training's",
                  "Not a claim of the paper, but the test an add-on trained on a frozen network owes: would the "
                  "same extra training, or a head recalibrated at the same parameter count, buy the gain too?",
                  "Effect: GAttANet − control accuracy, paired on the same test images and training seeds "
                  "(GAttANet seed s vs control seed s); every control has GAttANet's frozen backbone, epochs cap, "
                  "patience, training images and seeds, and a head no more trainable parameters than GAttANet. "
                  "Supported when the CI lies above 0, contradicted when below. The capacity control (a wider "
                  "toy CNN of the toy's + GAttANet's parameters) runs in the full profile.")
    judged = load_plan().get("claims", "controls", "judged")
    for key in params.get("controls") or {}:
        res = out.controls.get(key)
        family = out.train_attn.get(key, {}).get("arch", "?")
        if res is None:
            claim.evidence.append(Evidence(key, family, NOT_RUN, {}, stage_command(params, "controls", "controls", key)))
            continue
        own = ci_text(estimate(res["gattanet_gain"]))
        for row in res["controls"]:
            numbers = {"control": CONTROL_LABELS.get(row["method"], row["method"]),
                       "control's gain over the baseline": ci_text(estimate(row["gain"])),
                       "GAttANet's gain over the baseline": own,
                       "trainable params": f"{row['trainable_params']:,} (GAttANet {res['gattanet_params']:,})",
                       "epochs run per seed": ", ".join(map(str, row["epochs_run"]))}
            name, effect = f"{key}: vs {row['method']}", estimate(row["vs_gattanet"])
            if row["method"] not in judged:
                claim.evidence.append(Evidence(name, family, NOT_APPLICABLE, {"effect (95 % CI)": ci_text(effect),
                                                                             **numbers},
                                               "not among the analysis plan's judged controls: shown, out of scope",
                                               effect, test=NOT_JUDGED))
                continue
            claim.evidence.append(decided(name, family, effect, numbers, test=DIFF_TEST))
    wider = out.baselines.get("wider-toy")
    if claim.evidence:  # the capacity row belongs beside controls that ran or are due
        if wider is None:
            claim.evidence.append(Evidence("capacity: wider toy CNN", "toy", NOT_RUN, {}, CAPACITY_COMMAND))
        else:
            claim.evidence.append(Evidence("capacity: wider toy CNN", wider["arch"], NOT_APPLICABLE, {
                "its clean gain over the backbone": ci_text(estimate(wider["clean_gain"])),
                "trainable params": f"{wider['trainable_params']:,}"},
                "trained from scratch, not on GAttANet's seeds: compared in the related-modules section, "
                "not paired here"))
    if not claim.evidence:
        claim.how_to_run = "add an attention run under `controls:` in params.yaml, then `dvc repro`"
    return claim


def corrected(claim: Claim, plan) -> Claim:
    """The claim's rows corrected for their number by the plan's `multiplicity`, its words in claim.multiplicity.

    holm: Holm's step-down over the claim's tested rows (every family), each row's p the one-sided p of the outcome
    it reached (the smaller of its two when inconclusive), at the plan's one-sided α; a row whose adjusted p misses α
    becomes inconclusive. It only ever demotes a row. The overall verdict needs no correction of its own: supported
    (or contradicted) needs every row in scope to be, an intersection-union test, whose level is each row's."""
    alpha, rule = plan.alpha_one_sided, plan.get("multiplicity")
    tested = [e for e in claim.evidence if e.p is not None and e.verdict in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)]
    iut = ("The overall verdict needs every row in scope to agree (an intersection-union test), so it takes no "
           "further correction.")
    if rule == "none" or not tested:
        claim.multiplicity = (f"Multiplicity: none ({'the plan says none' if tested else 'no tested rows'}); each row's "
                              f"one-sided test at α = {alpha:g} on its own. {iut}")
        return claim
    raw = [e.p[0] if e.verdict == SUPPORTED else e.p[1] if e.verdict == CONTRADICTED else min(e.p) for e in tested]
    demoted = 0
    for e, p, adj in zip(tested, raw, holm_adjusted(raw)):
        if e.verdict != INCONCLUSIVE and adj >= alpha:
            e.note = "; ".join(filter(None, [e.note, f"{e.verdict} before Holm's correction (one-sided p = {p:.3g}), "
                                             f"inconclusive after it: adjusted p = {adj:.3g} ≥ α = {alpha:g} over "
                                             f"this claim's {len(tested)} tested rows"]))
            e.verdict = INCONCLUSIVE
            demoted += 1
    claim.multiplicity = (f"Multiplicity: Holm's step-down over this claim's {len(tested)} tested row"
                          f"{'s' * (len(tested) > 1)}, each row's one-sided p of the outcome it reached against "
                          f"α = {alpha:g} (the printed CIs stay uncorrected 95 % intervals, and the 80 %-power effects "
                          f"are per row, before the correction); {demoted} row{'s' * (demoted != 1)} made "
                          f"inconclusive by it. {iut}")
    return claim


def evaluate_claims(out: Outputs, paper: dict, params: dict) -> list[Claim]:
    """All claims, in the order the report lists them, each corrected for its rows' number (`corrected`)."""
    plan = load_plan()
    claims = (clean_gain(out, paper, params), noise(out, paper, params), query_space(out, paper, params),
              true_class(out, paper, params), lesions(out, paper, params), dimension(out, paper, params),
              controls(out, paper, params))
    return [corrected(c, plan) for c in claims]
