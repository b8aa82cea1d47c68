"""Render the HTML report (reports/index.html + reports/figures/) from the stage outputs.

The builder works on the validated params (pipeline.config.Params), the analysis plan (analysis_plan.py) and the
outputs loaded once (load.py): it judges the paper's claims (claims.py), lays out
tables (tables.py), sums the run up (summary.py: the first screen), draws figures (figures.py) and
renders one Jinja2 template with autoescape on. To add a section: a loader in load.py, one entry in
`build_context`, one `{% block %}` in templates/index.html.j2. A new claim or row needs none of these:
the summary, the forest plot and the claims table are drawn from the claims' rows.
"""

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from collections.abc import Callable
from pathlib import Path

import jinja2
import yaml
from markupsafe import Markup

from gattanet.io import write_text
from pipeline.config import Params

from . import figures as figs
from .analysis_plan import AnalysisPlan
from .extensions import extensions_section
from .claims import CAPACITY_COMMAND, OVERALL_RULE, Claim, ci_text, estimate, evaluate_claims, pct, pts
from .committed import committed_runs
from .summary import forest_rows, reproducibility_summary
from .load import Outputs, load_paper, stage_command
from .tables import (backbone_convergence, baselines_section, controls_tables, dataset_label, deviations,
                     dims_comparisons, dims_table, left_out, lesion_tables, method_label, stage_times, table1)

TEMPLATES = Path(__file__).with_name("templates")
VERSIONED = ("torch", "torchvision", "numpy", "dvc", "matplotlib", "umap-learn")


def collect_provenance(root: Path, params: Params, out: Outputs) -> dict:
    """Commit, date, devices, library versions, each stage's wall time (from the loaded outputs), and the params as
    the file wrote them."""
    stages = stage_times(out)
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {"commit": git_commit(Path(root)), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "devices": sorted({s["device"] for s in stages if s["device"]}), "versions": versions, "cpu": cpu(),
            "stages": stages, "params_yaml": yaml.safe_dump(params.raw, sort_keys=False, allow_unicode=True)}


def cpu() -> str:
    """This machine's CPU: model, cores, and the vector extensions the precision depends on (AVX512-BF16, AMX, AVX2)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    first = info.split("\n\n")[0]  # the first processor's block
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}
    flags, model = set(fields.get("flags", "").split()), fields.get("model name", platform.machine())
    ext = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX"), ("avx2", "AVX2"))
           if flag in flags]
    return f"{model}, {os.cpu_count()} cores, {' + '.join(ext) or 'no AVX2'}"


def git_commit(root: Path) -> str:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"
    return res.stdout.strip() if res.returncode == 0 else "unknown (not a git checkout, or no commit yet)"


def build_report(params: Params, plan: AnalysisPlan, out: Outputs, out_dir: Path, provenance: dict,
                 before_write: Callable[[], None] | None = None) -> Path:
    """Write out_dir/index.html and out_dir/figures/*.png|svg from the loaded outputs (load.load_outputs); return the
    index path. `before_write` runs before the first figure is drawn (the report stage empties reports/figures there,
    so a missing or bad input, refused while loading, leaves the last report whole).

    The page is rendered to a string first and written atomically, so a crash never leaves
    a half index.html."""
    out_dir = Path(out_dir)
    if before_write is not None:
        before_write()
    html = render(build_context(params, plan, out, out_dir, provenance))
    index = out_dir / "index.html"
    write_text(index, html)
    return index


def build_context(params: Params, plan: AnalysisPlan, out: Outputs, out_dir: Path, provenance: dict) -> dict:
    """Everything the template shows; draws the figures into out_dir/figures on the way."""
    paper = load_paper()
    claims = evaluate_claims(out, paper, params, plan)
    stages = stage_times(out)
    devs, omitted = deviations(paper, params), left_out(params)
    new_experiment = any(d["new_experiment"] for d in devs)
    baselines = draw_baselines(params, out, out_dir, plan)
    extensions = extensions_section(out, params, plan.alpha_one_sided, plan.get("multiplicity") == "holm")
    sections = {"related modules − GAttANet, clean and at σ*": [r[k] for r in baselines.get("rows", [])
                                                          for k in ("vs_verdict", "vs_verdict_peak") if r.get(k)],
                "extensions − GAttANet (or their control)": [c["word"] for r in extensions["rows"] + extensions["pairs"]
                                           for c in r["cells"]]}
    forest = forest_rows(claims)
    return {
        "title": params.report.title,
        "summary": reproducibility_summary(claims, params, out, devs, omitted, stages, provenance, sections),
        "forest": figs.save(figs.forest_plot(forest), out_dir, "forest") if forest else None,
        "committed_runs": committed_runs(out_dir),
        "profile": params.profile,
        "source": paper["source"],
        "new_experiment": new_experiment,
        "claims": claims,
        "table1": table1(out, paper, relative_only=new_experiment),
        "figures": draw_figures(params, out, paper, claims, out_dir),
        "dims": dims_table(out),
        "dims_comparisons": dims_comparisons(out),
        "overall_rule": OVERALL_RULE,
        "left_out": omitted,
        "dims_missing": None if out.dims is not None else "dvc repro dims",
        "lesions": lesion_tables(out),
        "baselines": baselines,
        "controls": draw_controls(params, out, out_dir),
        "extensions": extensions,
        "deviations": devs,
        "backbone_scope": backbone_scope(params),
        "arrays": {"used": out.from_arrays, "missing": out.arrays_missing},
        "plan": {"path": plan.path, "sha256": plan.sha256, "text": plan.text,
                 "multiplicity": plan.get("multiplicity"), "alpha": plan.alpha_one_sided,
                 "changed_after_results": plan.data.get("deviations") or []},
        "provenance": provenance,
    }


BACKBONES_COMMAND = "gattanet-cli profile backbones && dvc repro"


def backbone_scope(params: Params) -> str:
    """What the verdicts are about: one trained backbone (the default), or several of one recipe."""
    used = {a.backbone for a in params.attention.values()}
    if len(used) >= 3:
        return (f"The attention runs sit on {len(used)} backbones, each pretrained from its own seed. Where three or "
                "more of one architecture and dataset carry a run at the same d, the clean-gain claim and Table 1 "
                "lead with the across-backbone interval (random effects, backbones the top level), about the "
                "recipe; the per-backbone intervals that follow are each about one trained network.")
    return (f"These verdicts hold for the one pretrained backbone{'s' * (len(used) > 1)} of this run "
            f"({', '.join(sorted(used))}): every interval spans attention seeds and test images, not backbones, so "
            "it says what GAttANet does on this network, not on the recipe that trained it. A profile with three "
            f"backbones × the attention seeds lifts that: {BACKBONES_COMMAND}.")


def draw_figures(params: Params, out: Outputs, paper: dict, claims: list[Claim], out_dir: Path) -> list[dict]:
    """Figures 2a, 2b, 3, 4a, 4b, 4c: each drawn from its run's output, or 'not run' with the command."""
    runs = params.report.figures
    by_id = {c.id: c for c in claims}
    items = []

    def add(fig_id: str, title: str, run: str | None, claim_id: str, draw, missing) -> None:
        item = {"id": fig_id, "title": title, "run": run, "paper": paper["figures"][fig_id],
                "links": None, "measured": [], "claim": None, "not_run": None, "where": None}
        if run is None:
            key = "fig2" if fig_id in ("fig2a", "fig2b", "fig3") else fig_id
            item["not_run"] = f"set `report.figures.{key}` in params.yaml to an attention run"
        elif run not in out.train_attn:
            item["not_run"] = f"`{run}` is not an attention run in params.yaml (`attention:`)"
        else:
            fig = draw(run)
            if fig is None:
                item["not_run"] = missing(run)
            else:
                item["links"] = figs.save(fig, out_dir, fig_id)
                item["measured"] = [e for e in by_id[claim_id].evidence
                                    if e.row == run or e.row.startswith(f"{run}:")]
                item["claim"] = by_id[claim_id]
                if fig_id == "fig3":
                    item["where"] = where_gain_lies(out.maps[run]["stats"])
        items.append(item)

    def noise_title(run: str) -> str:
        s = out.noise[run]
        clip = "noisy images clipped to [0, 1]" if s["clip"] else "noisy images not clipped"
        return f"{run}: {dataset_label(s['dataset'])}, d = {s['attn_dim']}, {clip}"

    def noise_fig(run: str):
        return figs.noise_curve(out.noise[run], noise_title(run)) if run in out.noise else None

    def noise_missing(run: str) -> str:
        return stage_command(params, "attention", "noise", run)

    def embed_fig(run: str):
        emb = out.embedding.get(run)
        if emb is None:
            return None
        title = f"{run}: UMAP of the {emb['stats']['attn_dim']}-D global query ({emb['stats']['n_points']} images)"
        return figs.embedding_scatter(emb["points"], emb["stats"]["classes"], title)

    def maps_fig(run: str):
        return figs.agreement_maps_figure(out.maps[run]["maps"]) if run in out.maps else None

    def lesion_fig(run: str):
        return figs.lesion_bars(out.lesions[run]) if run in out.lesions else None

    add("fig2a", "Figure 2a — accuracy under additive Gaussian noise", runs.get("fig2"), "noise",
        noise_fig, noise_missing)
    add("fig2b", "Figure 2b — 2-D embedding of the global query", runs.get("fig2"), "query_space",
        embed_fig, lambda run: stage_command(params, "attention", "embed", run))
    add("fig3", "Figure 3 — global attention agreement maps", runs.get("fig2"), "true_class",
        maps_fig, lambda run: stage_command(params, "attention", "maps", run))
    add("fig4a", "Figure 4a — accuracy under noise (the paper's d = 16 panel)", runs.get("fig4a"), "noise",
        noise_fig, noise_missing)
    add("fig4b", "Figure 4b — accuracy under noise (the paper's d = 64 panel)", runs.get("fig4b"), "noise",
        noise_fig, noise_missing)
    add("fig4c", "Figure 4c — lesions", runs.get("fig4c"), "lesions",
        lesion_fig, lambda run: stage_command(params, "lesions", "lesions", run))
    return items


def where_gain_lies(stats: dict) -> dict | None:
    """The maps stage's answer on cluttered images (its stats.json `where`): per conv tap, the AUC of the gain
    α·a separating the item's pixels from the clutter's and from the background's, as text with its CI."""
    where = stats.get("where")
    if not where:
        return None
    auc = lambda v: f"{v:.3f}"  # noqa: E731
    comparisons = ("item_vs_clutter", "item_vs_background")
    rows = [{"tap": tap, **{c: ci_text(estimate(where[c]["auc"][t]), auc) for c in comparisons}}
            for t, tap in enumerate(where["taps"])]
    return {"rows": rows, "n": {c: where[c]["n"] for c in comparisons}, "seeds": len(stats["seeds"])}


def draw_baselines(params: Params, out: Outputs, out_dir: Path, plan: AnalysisPlan) -> dict:
    """The baselines section (tables.baselines_section: its paired comparisons under the analysis plan's level and
    multiplicity rule, each method's multiply-adds counted) plus its noise-curve figure and caption, when any ran."""
    from .costs import baselines_macs

    section = baselines_section(out, params, plan.alpha_one_sided, plan.get("multiplicity") == "holm",
                                baselines_macs(params) if out.baselines else {})
    section["figure"] = None
    if section["missing"] or not section["rows"]:
        return section
    cfg = params.baselines
    results = [(method_label(r["method"]), out.baselines[r["method"]]) for r in section["rows"]]
    first = results[0][1]
    sigmas = {r["peak_sigma"] for _, r in results}
    peak = sigmas.pop() if len(sigmas) == 1 else None
    scratch_only = all(r["track"] == "scratch" for r in section["rows"])
    where = (f"trained from scratch like the {cfg.backbone} backbone" if scratch_only
             else f"on the frozen {cfg.backbone} backbone (budget of run {cfg.run})")
    title = f"{dataset_label(first['dataset'])}: {len(results)} method{'s' * (len(results) > 1)} {where}"
    fig = figs.baselines_curves(results, title, peak_sigma=peak)
    images = ("all test images" if cfg.test_subset <= 0
              else f"a seeded subset of {cfg.test_subset:,} test images")
    clip = "clipped to [0, 1]" if params.noise.clip else "not clipped"
    peak_text = f"; dotted: σ* = {peak:g} (noise.peak_sigma)" if peak is not None else ""
    section["figure"] = {"links": figs.save(fig, out_dir, "baselines"), "caption": (
        f"Measured: top-1 accuracy on {images} of {dataset_label(first['dataset'])}, each image with additive "
        f"Gaussian noise of standard deviation σ on the [0, 1] pixel scale ({clip}), one draw per image and σ, "
        f"mean over the training seeds; every method and the frozen backbone see the same noisy images. Top: each method (solid) and the frozen backbone alone (dashed, from "
        f"{section['backbone']['source']}); bottom: each method minus the backbone, in points{peak_text}.")}
    return section


def draw_controls(params: Params, out: Outputs, out_dir: Path) -> dict:
    """The controls section: the backbone's convergence (curve and words) and each controls run's table
    and figure of gains."""
    backbones = backbone_convergence(out, params)
    for b in backbones:
        b["links"] = figs.save(figs.backbone_curve(out.pretrain_history[b["run"]], b["run"], b["patience"]),
                               out_dir, f"backbone-{b['run']}")
    tables = controls_tables(out)
    for t in tables:
        t["links"] = figs.save(figs.controls_gains(out.controls[t["run"]]), out_dir, f"controls-{t['run']}")
    missing = [stage_command(params, "controls", "controls", k) for k in params.controls if k not in out.controls]
    return {"backbones": backbones, "tables": tables, "missing": missing,
            "capacity": ci_text(estimate(out.baselines["wider-toy"]["clean_gain"])) if "wider-toy" in out.baselines
            else None, "capacity_command": CAPACITY_COMMAND}


def render(context: dict) -> str:
    """The page as a string; autoescape on, so text from params or data shows as text."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters |= {"pct": pct, "pts": pts, "css_class": lambda v: v.replace(" ", "-")}
    env.globals["ci_text"] = ci_text
    css = Markup((TEMPLATES / "report.css").read_text())  # our own file, inlined as is
    return env.get_template("index.html.j2").render(css=css, **context)
