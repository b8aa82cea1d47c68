"""Every interval a claim's verdict rests on, as a function of the per-image arrays the stages also write
(git-tracked, compressed .npz): the stages compute their JSON's intervals with these functions, and the report
recomputes them with the same functions from the arrays alone (`recompute_outputs`), so a reader of the
repository can rebuild every verdict without rerunning a model.

Arrays per output: noise → results/noise/KEY/correct.npz (also the clean gain and the dims stage's intervals,
which are differences of the noise gains on the same noisy images), lesions → results/lesions/KEY.npz,
embed → results/embedding/KEY/correct.npz, maps → results/maps/KEY/hits.npz, controls →
results/controls/KEY.npz, extensions → results/extensions/KEY/correct.npz. An output whose arrays are missing (a run from before they were written) keeps its
JSON's intervals, and `Recomputed.missing` names it, the array it lacks and the command that writes it.
"""

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gattanet.analysis.stats import effect_ci
from gattanet.analysis.sweeps import gain_at, growth
from pipeline import outputs


def noise_estimates(baseline: np.ndarray, gattanet: np.ndarray) -> dict:
    """sweep.json's intervals from correct.npz: baseline (σ, N), gattanet (seeds, σ, N)."""
    n = baseline.shape[0]
    return {"gain": [gain_at(baseline, gattanet, i).as_dict() for i in range(n)],
            "growth_by_sigma": [growth(baseline, gattanet, i).as_dict() for i in range(n)]}


SHARE = 0.5  # the share of G the lesion and control contrasts test against: analysis_plan.yaml's (v2) default


def kept_share(part: np.ndarray, whole: np.ndarray, base: np.ndarray, share: float = SHARE) -> dict:
    """(part − base) − share · (whole − base), paired per seed and image: above 0 when `part` keeps more than `share`
    of `whole`'s gain over `base`. part, whole (seeds, N) from the same derived seeds; base (N,)."""
    v = part - share * whole - (1.0 - share) * base[None, :]
    return {"share": share, **effect_ci([(1.0, v)]).as_dict()}


def lesion_estimates(baseline: np.ndarray, correct: np.ndarray, full: int, share: float = SHARE) -> list[dict]:
    """Per pattern, its difference to the baseline and to the full model (pattern index `full`), and the share of
    the full model's gain it keeps beyond `share` (kept_share), from KEY.npz: baseline (N,), correct (patterns,
    seeds, N)."""
    base, acc = baseline.astype(np.float64), correct.astype(np.float64)
    return [{"vs_baseline": effect_ci([(1.0, a - base)]).as_dict(),
             "vs_full": effect_ci([(1.0, a - acc[full])]).as_dict(),
             "kept": kept_share(a, acc[full], base, share)} for a in acc]


def embed_estimates(z: dict) -> dict:
    """stats.json's intervals from correct.npz: k-NN hits (seeds, N) on q (`query`) and on each control, and the
    same on the group labels (`group_query`, `group_<control>`) where the dataset has groups."""
    def block(prefix: str) -> dict:
        q = z[f"{prefix}query"].astype(np.float64)
        controls = [k[len(prefix):] for k in z if k.startswith(prefix) and k[len(prefix):] in QUERY_CONTROLS]
        hits = {c: z[prefix + c].astype(np.float64) for c in controls}
        return {"knn_query": effect_ci([(1.0, q)]).as_dict(),
                "controls": {c: {"knn": effect_ci([(1.0, h)]).as_dict(),
                                 "query_minus": effect_ci([(1.0, q), (-1.0, h)]).as_dict()} for c, h in hits.items()}}
    out = block("")
    if "group_query" in z:
        out["groups"] = block("group_")
    return out


QUERY_CONTROLS = ("random", "pca")  # the embed stage's query-space controls, in the order it writes them


def maps_estimates(top1: np.ndarray, top3: np.ndarray) -> dict:
    """The maps stage's stats.json intervals from hits.npz: the rates at which the true class is the unit attention
    enhances most (`top1`) and among the 3 it enhances most (`top3`), each (seeds, N) per seed and test image."""
    return {"top1_rate": effect_ci([(1.0, top1.astype(np.float64))]).as_dict(),
            "top3_rate": effect_ci([(1.0, top3.astype(np.float64))]).as_dict()}


def controls_estimates(baseline: np.ndarray, gattanet: np.ndarray, correct: np.ndarray, share: float = SHARE) -> dict:
    """The controls stage's intervals from KEY.npz: baseline (N,), gattanet (seeds, N), correct (methods, seeds, N),
    top-1 correctness on the same test images. GAttANet's gain over the baseline; per control its own gain,
    GAttANet − control, paired per seed (control seed s trained from GAttANet seed s's derived seed), and the
    control's gain beyond `share` of GAttANet's (kept_share: the non-inferiority contrast)."""
    base, full = baseline.astype(np.float64), gattanet.astype(np.float64)
    return {"gattanet_gain": effect_ci([(1.0, full - base)]).as_dict(),
            "controls": [{"gain": effect_ci([(1.0, ctl - base)]).as_dict(),
                          "vs_gattanet": effect_ci([(1.0, full), (-1.0, ctl)], paired=True).as_dict(),
                          "kept": kept_share(ctl, full, base, share)}
                         for ctl in correct.astype(np.float64)]}


def extension_estimates(baseline: np.ndarray, gattanet: np.ndarray, variant: np.ndarray) -> dict:
    """An extension's intervals from its correct.npz, per σ: baseline (σ, N), gattanet and variant (seeds, σ, N) on
    the same images. The variant's gain over the backbone, and variant − GAttANet paired per seed (variant seed s is
    trained from GAttANet seed s's derived seed)."""
    base, ref, var = (a.astype(np.float64) for a in (baseline, gattanet, variant))
    return {"gain": [effect_ci([(1.0, var[:, i] - base[i][None, :])]).as_dict() for i in range(len(base))],
            "vs_gattanet": [effect_ci([(1.0, var[:, i]), (-1.0, ref[:, i])], paired=True).as_dict()
                            for i in range(len(base))]}


def extension_difference(a: dict, b: dict) -> list[dict]:
    """Variant a − variant b per σ, paired per seed, from both extensions' correct.npz (the same run, so the same
    seeds and images): fine-tuning with attention against the fine-tuning control."""
    if not (np.array_equal(a["seeds"], b["seeds"]) and a["variant"].shape == b["variant"].shape):
        raise ValueError(f"extensions compared seed by seed need the same seeds and images; got seeds "
                         f"{list(a['seeds'])} {a['variant'].shape} and {list(b['seeds'])} {b['variant'].shape}")
    va, vb = a["variant"].astype(np.float64), b["variant"].astype(np.float64)
    return [effect_ci([(1.0, va[:, i]), (-1.0, vb[:, i])], paired=True).as_dict() for i in range(va.shape[1])]


def _sigma_index(z: dict, sigma: float) -> int:
    sigmas = [float(s) for s in z["sigmas"]]
    if float(sigma) not in sigmas:
        raise ValueError(f"σ = {sigma:g} is not in the noise arrays' sigmas {sigmas}")
    return sigmas.index(float(sigma))


def run_gain(z: dict, sigma: float) -> dict:
    """A run's gain over its baseline at σ, from its noise correct.npz (`sigmas`, `baseline`, `gattanet`): the dims
    rows' `gain` (σ = 0) and `gain_at_peak`."""
    return gain_at(z["baseline"], z["gattanet"], _sigma_index(z, sigma)).as_dict()


def dims_difference(small: dict, large: dict, sigma: float) -> dict:
    """gain(large) − gain(small) at σ on the same noisy test images, from both runs' noise correct.npz; paired per
    seed when both have the same seeds (seed s of both runs starts from the same derived seed)."""
    def gain(z: dict) -> np.ndarray:  # (seeds, N)
        i = _sigma_index(z, sigma)
        return z["gattanet"][:, i].astype(np.float64) - z["baseline"][i].astype(np.float64)[None, :]

    paired = np.array_equal(small["seeds"], large["seeds"])
    return effect_ci([(1.0, gain(large)), (-1.0, gain(small))], paired=paired).as_dict()


def read_arrays(path: Path, need: tuple[str, ...] = ()) -> dict | None:
    """An .npz's arrays as a dict (None when the file is missing); ValueError naming the file when it lacks an array
    of `need` or is not an .npz archive."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz archive ({e})") from None
    lacking = [k for k in need if k not in arrays]
    if lacking:
        raise ValueError(f"{path}: lacks the array(s) {', '.join(lacking)} (it holds {', '.join(arrays) or 'none'})")
    return arrays


@dataclass
class Recomputed:
    """What `recompute_outputs` did: the arrays it recomputed intervals from, and each output whose intervals stayed
    its JSON's, with why (its array missing, and the command that writes it)."""

    arrays: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def recompute_outputs(out, noise_subset: int, lesion_share: float = SHARE, control_share: float = SHARE) -> Recomputed:
    """Replace every interval of the loaded outputs (pipeline.report.load.Outputs) a claim reads by the one
    recomputed from its per-image arrays: the noise sweeps, the lesions, the embeddings, the maps' true-class rates,
    the dims rows and comparisons (the noise arrays of both runs), and the controls. An output without its arrays
    keeps its JSON's intervals and is listed in `missing`.

    Each run's clean gain is set once, in `out.clean_gain` (clean_gains): train-attn's own `gain` is left as it was
    stored and read only where the noise arrays cannot stand in for it. `noise_subset`: params' noise.test_subset."""
    root, done = Path(out.root), Recomputed()

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    def lacking(what: Path, array: Path, command: str) -> None:
        done.missing.append(f"{rel(what)}: {rel(array)} missing (its intervals are the JSON's; {command} writes it)")

    def matching(path: Path, name: str, arrays, listed) -> None:  # an archive left by another run is refused
        if [str(a) for a in arrays] != [str(x) for x in listed]:
            raise ValueError(f"{path}: {name} {[str(a) for a in arrays]} do not match its JSON's {list(listed)}")

    def archive(array, json_output, key: str, stage: str, seeds=None, need=None):
        """(arrays, path) of `array` for `key` (`need`: the arrays it must hold, by default all; checked against the
        JSON's `seeds`), or (None, path) when it is missing, then listed in `missing`."""
        z = read_arrays(path := array.path(key, root), array.names if need is None else need)
        if z is None:
            lacking(json_output.path(key, root), path, f"dvc repro {stage}@{key}")
        elif seeds is not None:
            matching(path, "seeds", z["seeds"], seeds)
        return z, path

    noise_arrays: dict[str, dict] = {}
    for key, sweep in out.noise.items():
        z, path = archive(outputs.NOISE_CORRECT, outputs.NOISE_SWEEP, key, "noise", sweep["seeds"])
        if z is None:
            continue
        noise_arrays[key] = z
        est = noise_estimates(z["baseline"], z["gattanet"])
        sweep["gain"], sweep["growth_by_sigma"] = est["gain"], est["growth_by_sigma"]
        sweep["growth"] = est["growth_by_sigma"][_sigma_index(z, sweep["peak_sigma"])]
        done.arrays.append(rel(path))
    out.clean_gain, fallback = clean_gains(out.train_attn, noise_arrays, noise_subset)
    done.missing += [f"{rel(outputs.TRAIN_ATTN_METRICS.path(key, root))}: clean gain read from the JSON ({why})"
                     for key, why in fallback.items()]
    for key, les in out.lesions.items():
        z, path = archive(outputs.LESIONS_CORRECT, outputs.LESIONS, key, "lesions", les["seeds"])
        if z is None:
            continue
        matching(path, "patterns", z["patterns"], [p["pattern"] for p in les["patterns"]])
        full = next(i for i, p in enumerate(les["patterns"]) if p["kind"] == "full")
        for row, est in zip(les["patterns"], lesion_estimates(z["baseline"], z["correct"], full, lesion_share)):
            row.update(est)
        done.arrays.append(rel(path))
    for key, emb in out.embedding.items():
        z, path = archive(outputs.EMBED_CORRECT, outputs.EMBED_STATS, key, "embed", need=("query",))
        if z is None:
            continue
        stats, est = emb["stats"], embed_estimates(z)
        for target, new in ((stats, est), (stats.get("groups"), est.get("groups"))):
            if target is None or new is None:
                continue
            target["knn_query"] = new["knn_query"]
            for c, e in new["controls"].items():
                target.setdefault("controls", {}).setdefault(c, {"what": c}).update(e)
        done.arrays.append(rel(path))
    for key, maps in out.maps.items():
        z, path = archive(outputs.MAPS_HITS, outputs.MAPS_STATS, key, "maps", maps["stats"]["seeds"])
        if z is None:
            continue
        maps["stats"].update(maps_estimates(z["top1"], z["top3"]))
        done.arrays.append(rel(path))
    if out.dims is not None:
        _recompute_dims(out.dims, noise_arrays, done, rel(outputs.DIMS.path(root=root)))
    for key, res in out.controls.items():
        z, path = archive(outputs.CONTROLS_CORRECT, outputs.CONTROLS, key, "controls", res["seeds"])
        if z is None:
            continue
        matching(path, "methods", z["methods"], [r["method"] for r in res["controls"]])
        est = controls_estimates(z["baseline"], z["gattanet"], z["correct"], control_share)
        res["gattanet_gain"] = est["gattanet_gain"]
        for row, e in zip(res["controls"], est["controls"]):
            row.update(e)
        done.arrays.append(rel(path))
    for method, res in out.baselines.items():
        z, path = archive(outputs.BASELINES_CORRECT, outputs.BASELINES, method, "baselines", res["seeds"])
        if z is None:
            continue
        k = _sigma_index(z, res["peak_sigma"])
        res["clean_gain"], res["gain_at_peak"] = (gain_at(z["baseline"], z["correct"], i).as_dict() for i in (0, k))
        out.baseline_arrays[method] = z
        done.arrays.append(rel(path))
    for key, res in out.extensions.items():
        z, path = archive(outputs.EXTENSION_CORRECT, outputs.EXTENSION_METRICS, key, "extend", res["seeds"])
        if z is None:
            continue
        matching(path, "sigmas", [float(x) for x in z["sigmas"]], [float(x) for x in res["sigmas"]])
        res.update(extension_estimates(z["baseline"], z["gattanet"], z["variant"]))
        out.extension_arrays[key] = z
        done.arrays.append(rel(path))
    return done


def clean_gains(train_attn: dict[str, dict], noise_arrays: dict[str, dict],
                noise_subset: int) -> tuple[dict[str, dict], dict[str, str]]:
    """Each attention run's clean gain from one source: its noise arrays at σ = 0 (the same models on the same test
    images as train-attn, kept per image), or, where the sweep has no arrays or ran on a test subset, train-attn's
    stored `gain`. Returns ({run: gain}, {run: why its gain is train-attn's})."""
    gains, fallback = {}, {}
    for key, metrics in train_attn.items():
        z = noise_arrays.get(key)
        if z is not None and not noise_subset and metrics.get("test_images") == z["baseline"].shape[1]:
            gains[key] = run_gain(z, 0.0)
            continue
        gains[key] = metrics["gain"]
        fallback[key] = ("the noise sweep ran on a test subset, not the images train-attn measured on"
                         if z is not None else f"no noise arrays; dvc repro noise@{key} writes them")
    return gains, fallback


def _recompute_dims(dims: dict, noise_arrays: dict[str, dict], done: Recomputed, name: str) -> None:
    """dims.json's rows and comparisons from the noise arrays of their runs (the dims stage's own inputs)."""
    runs = {r["run"] for r in dims["rows"]} | {k for c in dims.get("comparisons", []) for k in (c["small"], c["large"])}
    lacks = sorted(runs - set(noise_arrays))
    for row in dims["rows"]:
        z = noise_arrays.get(row["run"])
        if z is not None:
            row["gain"], row["gain_at_peak"] = run_gain(z, 0.0), run_gain(z, row["peak_sigma"])
    for c in dims.get("comparisons", []):
        small, large = noise_arrays.get(c["small"]), noise_arrays.get(c["large"])
        if small is not None and large is not None:
            c["difference"] = dims_difference(small, large, c["sigma"])
    if lacks:
        done.missing.append(f"{name}: the rows and comparisons of {', '.join(lacks)} read from the JSON (no noise "
                            f"arrays; {' && '.join(f'dvc repro noise@{k}' for k in lacks)} && dvc repro dims writes "
                            "them)")
