"""The paper's claims, each decided per row by a confidence interval computed in the stages.

Every row tests one effect with its 95 % CI over training seeds and test images (gattanet.analysis.stats):
*supported* when the CI excludes zero on the paper's side, *contradicted* when it excludes that side
or the size the paper states, *inconclusive* otherwise, with the half-width the run could resolve.
A claim's overall verdict is formed per backbone family (OVERALL_RULE). Thresholds are read from the
paper's wording, never tuned to a result. "Well above chance" is read as *at least halfway from
chance to perfect*: a majority (the paper's "typically"), never met by a result near chance.
"""

from dataclasses import dataclass, field, replace

from gattanet.analysis.stats import (CONTRADICTED, INCONCLUSIVE, NOT_APPLICABLE, NOT_RUN, SUPPORTED, Estimate,
                            verdict)

from .load import Outputs, stage_command

OVERALL_RULE = ("Per backbone family, over the rows in scope (rows not run or not applicable are out of "
                "scope): supported when every row is supported; contradicted when every row is contradicted; "
                "inconclusive otherwise (mixed or undecided rows). The two outcomes need the same unanimity.")
FULL_PROFILE_COMMAND = "gattanet-cli profile full && dvc repro"
DIMENSIONS = (16, 64)  # the paper's comparison (§3.0.5)


def pct(x: float | None) -> str:
    """A fraction as a percentage: 0.8328 -> '83.28 %'."""
    return "—" if x is None else f"{100 * x:.2f} %"


def pts(x: float | None) -> str:
    """A difference of fractions in percentage points: 0.0206 -> '+2.06 pts'."""
    return "—" if x is None else f"{100 * x:+.2f} pts"


def halfway(chance: float) -> float:
    """The 'well above chance' bar: halfway from chance to perfect."""
    return chance + (1.0 - chance) / 2


def estimate(d: dict) -> Estimate:
    """An Estimate from its dict in a stage output."""
    return Estimate(**{k: tuple(map(tuple, v)) if k == "seed_means" else tuple(v) if k == "seeds" else v
                       for k, v in d.items() if k != "half_width"})


def shifted(est: Estimate, by: float) -> Estimate:
    """The same interval moved by `by` (e.g. a rate minus the bar it must clear)."""
    return replace(est, mean=est.mean + by, low=est.low + by, high=est.high + by)


def ci_text(est: Estimate, fmt=pts) -> str:
    """'+0.45 pts [+0.12, +0.78]' (95 % CI), the way every effect is printed."""
    return f"{fmt(est.mean)} [{fmt(est.low)}, {fmt(est.high)}]"


def spread_text(est: Estimate) -> str:
    """What the CI was made of: seeds, images, and the two parts of its width."""
    seeds = "/".join(map(str, est.seeds))
    return (f"{seeds} seed{'s' if est.seeds != (1,) else ''} × {est.images:,} test images; "
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


@dataclass
class Claim:
    """A claim of the paper, the rule that decides each row, and the rows."""

    id: str
    title: str
    paper: str
    rule: str
    evidence: list[Evidence] = field(default_factory=list)
    how_to_run: str = ""

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
            paper_size: float | None = None, fmt=pts, note: str = "") -> Evidence:
    """A row decided by `est`'s CI; an inconclusive row says what effect size the run could resolve."""
    v = verdict(est, direction, paper_size)
    notes = [note] if note else []
    if v == INCONCLUSIVE:
        notes.append(f"the CI spans zero: this run resolves effects beyond ±{fmt(est.half_width).lstrip('+')} "
                     "(its half-width); more seeds or test images would narrow it")
    return Evidence(row, family, v, {"effect (95 % CI)": ci_text(est, fmt), **numbers,
                                     "interval from": spread_text(est)}, "; ".join(notes), est)


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
                  "on the paper's own dataset, below the gain the paper states.")
    for key, m in out.train_attn.items():
        size = _paper_gain(paper, m["arch"], m["dataset"])
        claim.evidence.append(decided(key, m["arch"], estimate(m["gain"]), {
            "baseline": pct(m["baseline_acc"]), "GAttANet (mean over seeds)": pct(m["gattanet_acc"]),
            "paper's gain here": pts(size) if size is not None else "none stated for this dataset"},
            paper_size=size))
    return claim


def noise(out: Outputs, paper: dict, params: dict) -> Claim:
    sigma = (params.get("noise") or {}).get("peak_sigma")
    claim = Claim("noise", "The gain grows at moderate input noise",
                  paper["claims"]["noise"],
                  f"Effect: gain(σ*) − gain(0), with σ* = {sigma} fixed in params before the run (the paper's "
                  "peak, σ 0.03-0.04), paired per image and seed; no maximum over σ is taken. Supported when "
                  "its CI lies above 0, contradicted when below.")
    for key, m in out.train_attn.items():
        sweep = out.noise.get(key)
        if sweep is None:
            claim.evidence.append(Evidence(key, m["arch"], NOT_RUN, {}, stage_command(params, "attention", "noise", key)))
            continue
        k = sweep["sigmas"].index(sweep["peak_sigma"])
        claim.evidence.append(decided(key, m["arch"], estimate(sweep["growth"]), {
            "gain at σ = 0": ci_text(estimate(sweep["gain"][0])),
            f"gain at σ* = {sweep['peak_sigma']:g}": ci_text(estimate(sweep["gain"][k])),
            "baseline at σ*": pct(sweep["baseline"][k])}))
    return claim


def query_space(out: Outputs, paper: dict, params: dict) -> Claim:
    claim = Claim("query_space", "The global query separates the classes (and their groups)",
                  paper["claims"]["query_space"],
                  "Effect: k-NN accuracy on the global query q of every test image (5-fold, per seed) minus "
                  "the bar halfway from chance to 100 %; for datasets with class groups (animals/vehicles, "
                  "clothing/footwear/bags) a second row does the same for the group label, chance being the "
                  "largest group's share. Supported when the CI lies above the bar, contradicted when below.")
    for key, m in out.train_attn.items():
        emb = out.embedding.get(key)
        if emb is None:
            claim.evidence.append(Evidence(key, m["arch"], NOT_RUN, {},
                                           stage_command(params, "attention", "embed", key)))
            continue
        s = emb["stats"]
        bar = halfway(s["chance"])
        knn = estimate(s["knn_query"])
        claim.evidence.append(decided(f"{key}: classes", m["arch"], shifted(knn, -bar), {
            "k-NN accuracy on q": ci_text(knn, pct), "bar": pct(bar), "chance": pct(s["chance"])}))
        groups = s.get("groups")
        if groups:
            gbar = halfway(groups["largest_share"])
            gknn = estimate(groups["knn_query"])
            claim.evidence.append(decided(f"{key}: groups ({', '.join(groups['names'])})", m["arch"],
                                          shifted(gknn, -gbar), {
                "group k-NN accuracy on q": ci_text(gknn, pct), "bar": pct(gbar),
                "largest group": pct(groups["largest_share"]),
                "group silhouette in 2-D (figure, first seed)": f"{groups['in_2d']['silhouette']:.3f}"}))
    return claim


def true_class(out: Outputs, paper: dict, params: dict) -> Claim:
    claim = Claim("true_class", "The true class is typically among the top last-layer agreement scores",
                  paper["claims"]["true_class"],
                  "Effect: the rate at which the true class is among the 3 last-layer units that agreement "
                  "enhances most (every test image, per seed) minus the bar halfway from chance (3/C) to "
                  "100 % (always ≥ 50 %, the paper's 'typically'). Units rank by their modulation α·a: the "
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
        bar = halfway(s["chance_top3"])
        top3 = estimate(s["top3_rate"])
        claim.evidence.append(decided(key, m["arch"], shifted(top3, -bar), {
            "top-3 rate": ci_text(top3, pct), "bar": pct(bar), "chance": pct(s["chance_top3"]),
            "top-1 rate": ci_text(estimate(s["top1_rate"]), pct)}))
    return claim


def lesions(out: Outputs, paper: dict, params: dict) -> Claim:
    claim = Claim("lesions", "Lesions: the first layer's modulation is vital, the last one's dispensable, "
                  "no single layer suffices", paper["claims"]["lesions"],
                  "With G the full model's gain over the baseline (it must itself be supported, else the rows "
                  "are not applicable): (1) the first layer ablated ('.ccdd') against the full model: supported "
                  "when it loses accuracy (CI below 0), contradicted when it surely loses less than G "
                  "('catastrophic' = the whole gain; G taken at its CI's lower end, so G's own uncertainty "
                  "cannot make a loss look partial); (2) the last layer ablated ('cccd.') against the baseline: "
                  "supported when it keeps a gain (CI above 0, 'inexistant' effect), contradicted when below; "
                  "(3) each layer alone against the full model, as (1) ('no performance improvements').")
    for key in params.get("lesions") or {}:
        les = out.lesions.get(key)
        family = out.train_attn.get(key, {}).get("arch", "?")
        if les is None:
            claim.evidence.append(Evidence(key, family, NOT_RUN, {}, stage_command(params, "lesions", "lesions", key)))
            continue
        claim.evidence.extend(_lesion_rows(key, family, les))
    if not claim.evidence:
        claim.how_to_run = "add an attention run under `lesions:` in params.yaml, then `dvc repro`"
    return claim


def _lesion_rows(key: str, family: str, les: dict) -> list[Evidence]:
    by_pattern = {p["pattern"]: p for p in les["patterns"]}
    full = next(p for p in les["patterns"] if p["kind"] == "full")
    g = estimate(full["vs_baseline"])
    head = {"mode": les["mode"], "baseline": pct(les["baseline_acc"]), "full": pct(les["full_acc"]),
            "full gain G": ci_text(g)}
    if verdict(g) != SUPPORTED:
        return [Evidence(f"{key}: lesions", family, NOT_APPLICABLE, head,
                         "the full model's gain over its baseline is not supported: there is no gain to dissect")]
    ablate = [p for p in les["patterns"] if p["kind"] == "ablate"]
    alone = [p for p in les["patterns"] if p["kind"] == "alone"]
    rows = [decided(f"{key}: {ablate[0]['pattern']} (first layer ablated) vs full", family,
                    estimate(ablate[0]["vs_full"]), {**head, "accuracy": pct(ablate[0]["accuracy"])},
                    direction=-1, paper_size=-g.low),
            decided(f"{key}: {ablate[-1]['pattern']} (last layer ablated) vs baseline", family,
                    estimate(ablate[-1]["vs_baseline"]), {"accuracy": pct(ablate[-1]["accuracy"])})]
    rows += [decided(f"{key}: {p['pattern']} ({p['layer']} alone) vs full", family, estimate(p["vs_full"]),
                     {"accuracy": pct(by_pattern[p["pattern"]]["accuracy"])}, direction=-1, paper_size=-g.low)
             for p in alone]
    return rows


def dimension(out: Outputs, paper: dict, params: dict) -> Claim:
    small, large = DIMENSIONS
    claim = Claim("dimension", f"A larger attention dimension helps the toy model (d = {large} vs d = {small})",
                  paper["claims"]["dimension"],
                  f"Effect: gain(d = {large}) − gain(d = {small}) on the same backbone and the same (noisy) test "
                  "images, CI over both runs' seeds and the images; one row on clean images, one at σ*. "
                  "Supported when the CI lies above 0, contradicted when below.")
    if out.dims is None:
        claim.how_to_run = "dvc repro dims"
        return claim
    for c in out.dims.get("comparisons", []):
        if (c["d_small"], c["d_large"]) != DIMENSIONS:
            continue
        label = "clean" if c["at"] == "clean" else f"σ* = {c['sigma']:g}"
        claim.evidence.append(decided(f"{c['dataset']}: {c['large']} − {c['small']}, {label}", c["arch"],
                                      estimate(c["difference"]), {}))
    if not claim.evidence:
        claim.how_to_run = (f"add toy attention runs with attn_dim {small} and {large} on one backbone, "
                            "then `dvc repro`")
    return claim


def evaluate_claims(out: Outputs, paper: dict, params: dict) -> list[Claim]:
    """All claims, in the order the report lists them."""
    return [clean_gain(out, paper, params), noise(out, paper, params), query_space(out, paper, params),
            true_class(out, paper, params), lesions(out, paper, params), dimension(out, paper, params)]
