"""lesions@KEY: the paper's Fig. 4c patterns — none, full, one layer ablated, one layer alone.

mode `eval` switches modulation off per layer in the trained model; mode `retrain` trains a
new attention system under each pattern (same settings as the run) and evaluates it.
"""

from functools import partial

from gattanet.evaluate import accuracies
from gattanet.io import write_json
from gattanet.lesion import ablation_patterns
from pipeline import common
from pipeline.common import RESULTS
from pipeline.stages.train_attn import train


def run(params, key: str) -> None:
    cfg = common.entry(params.lesions, key, "lesions")
    run_cfg, device, source, model, _ = common.open_run(params, key)
    patterns = ablation_patterns(model.taps)
    test = source.loader("test", 512, limit=cfg.test_subset)
    with common.stopwatch() as clock:
        if cfg.mode == "eval":
            forwards = {p["pattern"]: partial(model, lesion=p["pattern"]) for p in patterns}
            accs = {name: a["top1"] for name, a in accuracies(forwards, test).items()}
        else:
            accs = {}
            for p in patterns:
                if p["kind"] == "none":
                    accs[p["pattern"]] = accuracies({"b": model.baseline}, test)["b"]["top1"]
                    continue
                retrained, _ = train(params, run_cfg, source, device, lesion=p["pattern"],
                                     resume_name=f"lesions-{key}-{p['pattern'].replace('.', '_')}")
                accs[p["pattern"]] = accuracies({"m": retrained}, test)["m"]["top1"]
    rows = [{**p, "accuracy": accs[p["pattern"]]} for p in patterns]
    by_kind = {r["kind"]: r["accuracy"] for r in rows if r["kind"] in ("none", "full")}
    write_json(RESULTS / "lesions" / f"{key}.json", {
        "run": key, "mode": cfg.mode, "taps": [t.name for t in model.taps],
        "baseline_acc": by_kind["none"], "full_acc": by_kind["full"], "patterns": rows,
        "seconds": clock["seconds"], "device": str(device)})
    for r in rows:
        print(f"lesions {key} [{cfg.mode}] {r['pattern']}: {r['accuracy']:.4f}")
