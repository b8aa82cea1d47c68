"""A hostile user's battery: bad params through every way a stage starts, kills at each write, orphaned
workers, stale temp folders, corrupt inputs. Each case once failed (issue 24) and must keep failing cleanly."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from gattanet.io import atomic_path
from pipeline.cli import app
from pipeline.stages.validate import cpu_cores
from pipeline.profiles import compose
from tests.helpers import ROOT, project_env, sh

runner = CliRunner()


def tiny() -> dict:
    return compose("tiny")


def hashes(root) -> dict[str, str]:
    """sha256 of every file under the project's output folders (DVC's own folders left out)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in ("data", "models", "results", "reports") for p in sorted((root / top).rglob("*"))
            if p.is_file()}


# ---------------------------------------------------------------- bad params, bounded values


BAD = {  # dotted key -> a value that once passed validation or failed late
    "nproc": 4096,                                   # 4096 gloo workers on this machine's cores
    "seed": 1180591620717411303424,                  # overflowed torch's seed mid-stage
    "attention.toy-fmnist-d16.seeds": [0, 2 ** 70],  # wrote seed-2**70.pt, then dims died
    "attention.toy-fmnist-d16.attn_dim": 0,
    "report.titel": "typo",
    "report.title": 3,
    "report.figures.fig9": "toy-fmnist-d16",
}


@pytest.mark.parametrize("dotted", list(BAD))
def test_bad_param_is_refused_by_every_stage_before_it_writes(project, dotted):
    """`gattanet-cli stage` (what `dvc repro -s` runs) checks the whole file, the machine too, first."""
    before = hashes(project)
    value = yaml.safe_dump(BAD[dotted], default_flow_style=True).strip().removesuffix("...").strip()
    r = runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d16", "-S", f"{dotted}={value}"])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: bad params: ") and dotted.split(".")[0] in r.output
    assert "Traceback" not in r.output and hashes(project) == before


def test_nproc_on_the_cpu_names_the_cores_there_are(project):
    r = runner.invoke(app, ["stage", "validate", "-S", f"nproc={cpu_cores() + 1}", "-S", "device=cpu"])
    assert r.exit_code == 2
    assert f"need {cpu_cores() + 1} cores, but this machine has {cpu_cores()}; allowed: 1 to {cpu_cores()}" in r.output


@pytest.mark.parametrize("key", ["../../../tmp/x", ".hidden", "a/b", "a b", "x" * 65, "d16:x"])
def test_entry_keys_must_be_safe_file_names(project, tmp_path, key):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["attention"][key] = params["attention"]["toy-fmnist-d16"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    r = runner.invoke(app, ["stage", "validate"])
    assert r.exit_code == 2 and f"attention: entry name {key!r} is not allowed" in r.output


def test_seeds_at_the_end_of_the_range_are_refused_and_below_it_accepted(project):
    from pipeline.config import SEED_END, load_params

    assert load_params("params.yaml", [f"seed={SEED_END - 1}"]).seed == SEED_END - 1
    r = runner.invoke(app, ["stage", "validate", "-S", f"seed={SEED_END}"])
    assert r.exit_code == 2 and f"seed: must be < {SEED_END}" in r.output


# ---------------------------------------------------------------- stale temp folders


def test_a_stale_temp_folder_beside_an_output_goes_with_the_next_write(tmp_path):
    """A kill between a checkpoint's write and its rename leaves `.NAME.XXXX.tmp/`; the next write of NAME
    removes it (and leaves a live writer's folder alone)."""
    target = tmp_path / "seed-0.pt"
    stale = tmp_path / ".seed-0.pt.abcd1234.tmp"
    stale.mkdir()
    (stale / "seed-0.pt").write_bytes(b"half a checkpoint")
    other = tmp_path / ".seed-1.pt.abcd1234.tmp"  # another output's: not this write's business
    other.mkdir()
    with atomic_path(target) as tmp:
        live = tmp.parent
        with atomic_path(target) as tmp2:  # a second writer of the same file while the first is live
            tmp2.write_text("second")
        assert live.exists(), "a live writer's temp folder was removed"
        tmp.write_text("first")
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".seed-1.pt.abcd1234.tmp", "seed-0.pt"]


# ---------------------------------------------------------------- orphaned workers


@pytest.mark.slow
@pytest.mark.skipif(cpu_cores() < 2, reason="two gloo workers need two cores")
def test_killing_the_launcher_takes_its_torchrun_workers_with_it(project):
    """`kill -9` of the stage DVC started (the launcher) must not leave torchrun and its workers running
    to overwrite outputs after DVC has moved on."""
    assert runner.invoke(app, ["stage", "pretrain", "toy-fmnist"]).exit_code == 0
    resume = project / ".gattanet/resume/train-attn-toy-fmnist-d16-seed0.pt"
    long = ["-S", "attention.toy-fmnist-d16.epochs=200", "-S", "attention.toy-fmnist-d16.patience=200"]
    launcher = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "stage", "train-attn", "toy-fmnist-d16",
                                 "-S", "nproc=2", *long], cwd=project, env=project_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 240
        while not resume.exists() and launcher.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert launcher.poll() is None and resume.exists(), "training did not start, or ended before the kill"
        workers = psutil.Process(launcher.pid).children(recursive=True)
        assert len(workers) >= 3, workers  # torchrun and its two ranks
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"outlived the launcher: {[p.cmdline() for p in alive]}"
        before = hashes(project) | {"resume": hashlib.sha256(resume.read_bytes()).hexdigest()}
        time.sleep(3)
        assert hashes(project) | {"resume": hashlib.sha256(resume.read_bytes()).hexdigest()} == before
        assert not (project / "results/train-attn/toy-fmnist-d16/metrics.json").exists()
    finally:
        for p in [launcher, *workers]:
            try:
                p.kill()
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass


# ---------------------------------------------------------------- bad params under `dvc repro -s`


def test_every_dvc_output_persists_and_the_runner_empties_the_folder_ones():
    """DVC removes a stage's outputs before its command (where a bad param is found) unless they persist;
    a folder output is then emptied by its stage when it writes the new files (see clear_folder_outputs)."""
    from pipeline.stages import STAGES

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    folders = set()
    for name, stage in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get("do", stage).get(kind, []):
                (path, opts), = out.items() if isinstance(out, dict) else ((out, {}),)
                assert opts.get("persist") is True, f"{name}: {path} is removed by DVC before the params are checked"
                if not os.path.splitext(path)[1] and "/live/" not in path:  # DVCLive rewrites its own folder
                    folders.add((name, path.replace("${key}", "{key}")))
    assert folders == {(stage.name, folder) for stage in STAGES.values() for folder in stage.folders}


@pytest.mark.slow
def test_dvc_repro_single_stage_with_a_bad_param_removes_nothing(tiny_run):
    """`dvc repro -s` skips the validate stage: the stage's own check fails, and its outputs persist."""
    repo = tiny_run["repo"]
    before, text = hashes(repo), (repo / "params.yaml").read_text()
    assert "results/pretrain/toy-fmnist/metrics.json" in before
    params = yaml.safe_load(text)
    params["backbones"]["toy-fmnist"]["epochs"] = 0
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        r = sh(["dvc", "repro", "-s", "pretrain@toy-fmnist"], repo, check=False)
        assert r.returncode != 0 and "backbones.toy-fmnist.epochs: must be ≥ 1" in r.stdout + r.stderr
        assert hashes(repo) == before
    finally:
        (repo / "params.yaml").write_text(text)
    assert sh(["dvc", "status"], repo).stdout.strip() in ("", "Data and pipelines are up to date.")


# ---------------------------------------------------------------- corrupt inputs


@pytest.mark.parametrize("content", [b"garbage", b"\x80\x04 half a pickle"])
def test_a_corrupt_data_file_names_its_key_and_the_safe_remedies(project, content):
    data = project / "data/fashion-mnist.pt"
    data.write_bytes(content)
    r = runner.invoke(app, ["stage", "pretrain", "toy-fmnist"])
    assert r.exit_code == 1 and "data/fashion-mnist.pt: corrupt" in r.output
    checkout, repro = "dvc checkout --force data/fashion-mnist.pt", "dvc repro data@fashion-mnist"
    assert checkout in r.output and repro in r.output and r.output.index(checkout) < r.output.index(repro)
    assert "weights_only" not in r.output and "Traceback" not in r.output
    assert not (project / "models").exists()


# ---------------------------------------------------------------- issue 40: keys, YAML, bounds, the analysis plan


def refused_in_one_line(r, code: int = 2) -> str:
    """The CLI's refusal: exit `code`, one line, no traceback; returns it."""
    out = r.output.strip()
    assert r.exit_code == code, r.output
    assert out.startswith("error: ") and "\n" not in out and "Traceback" not in out, r.output
    return out


def outputs_and_outside(root) -> dict[str, str]:
    """hashes() plus every file under root/outside (a folder that no stage owns)."""
    return hashes(root) | {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                           for p in sorted((root / "outside").rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stage, key", [("train-attn", "../../outside"), ("train-attn", "."), ("train-attn", ".."),
                                        ("extend", "../../data"), ("extend", "."), ("train-attn", "no-such-run"),
                                        ("noise", "../../outside"), ("pretrain", "../outside")])
def test_a_stage_key_is_checked_before_any_output_is_touched(project, stage, key):
    """Issue 40.1: KEY named a folder that the runner emptied before it looked the key up in params."""
    for f in ("models/attention/toy-fmnist-d16/seed-0.pt", "models/extensions/toy-fmnist-d16-T2/seed-0.pt",
              "outside/precious.txt", "reports/figures/fig.png"):
        (project / f).parent.mkdir(parents=True, exist_ok=True)
        (project / f).write_bytes(b"keep me")
    before = outputs_and_outside(project)
    out = refused_in_one_line(runner.invoke(app, ["stage", stage, key]))
    assert repr(key) in out and "entries: " in out, out
    assert outputs_and_outside(project) == before


def plan_text(change: str | None) -> str:
    text = (ROOT / "analysis_plan.yaml").read_text()
    if change is None:
        return text
    old, new = change.split(" -> ")
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize("plan, says", [
    ("level: 0.95 -> level: 95", "level is 95; allowed: a number in (0, 1)"),
    (None, "the analysis plan is missing"),
    ("level: 0.95 -> level: [0.95", "not valid YAML"),
    ("judged: [more-training, -> judged: [no-such-control, more-training,",
     "claims.controls.judged is ['no-such-control', 'more-training', 'vector-scaling', 'logits', 'residual-head']; "
     "allowed: a non-empty list of control names from more-training, vector-scaling, logits, residual-head"),
    ("level: 0.95 -> level: 0.95\nlevel: 0.5", "duplicate key 'level'"),
    ("directory", "is a directory, not a file"),
    ("latin-1", "not UTF-8 text"),
])
def test_a_bad_analysis_plan_is_refused_before_the_report_loses_a_figure(project, plan, says):
    """Issue 40.6/7/3/4: the report stage emptied reports/figures, then refused the plan; a control name that
    names nothing changed a verdict; duplicate keys, a directory or bytes that are not UTF-8 passed or crashed."""
    for f in ("reports/figures/fig2.png", "reports/index.html"):
        (project / f).parent.mkdir(parents=True, exist_ok=True)
        (project / f).write_bytes(b"the last report")
    path = project / "analysis_plan.yaml"
    if plan == "directory":
        path.mkdir()
    elif plan == "latin-1":
        path.write_bytes(plan_text(None).encode() + "# caf\xe9\n".encode("latin-1"))
    elif plan is not None:
        path.write_text(plan_text(plan))
    before = hashes(project)
    out = refused_in_one_line(runner.invoke(app, ["stage", "report"]), code=2)
    assert "analysis_plan.yaml" in out and says in out, out
    assert hashes(project) == before


def test_a_missing_stage_output_is_refused_before_the_report_loses_a_figure(project):
    """The report stage emptied reports/figures and only then found that a stage's results were missing."""
    shutil.copy(ROOT / "analysis_plan.yaml", project / "analysis_plan.yaml")
    for f in ("reports/figures/fig2.png", "reports/index.html"):
        (project / f).parent.mkdir(parents=True, exist_ok=True)
        (project / f).write_bytes(b"the last report")
    before = hashes(project)
    out = refused_in_one_line(runner.invoke(app, ["stage", "report"]), code=1)
    assert "dvc repro" in out, out  # names the stage that makes the missing output
    assert hashes(project) == before


def test_every_control_name_the_plan_judges_is_accepted():
    from pipeline.config import CONTROL_METHODS
    from pipeline.report.analysis_plan import parse_plan

    text = plan_text(None)
    assert list(parse_plan(text).get("claims", "controls", "judged")) == list(CONTROL_METHODS)


BOMB = "[" + ", ".join(["&a0 [x, x, x, x, x, x, x, x, x]"]
                       + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]) + "]"


@pytest.mark.parametrize("where", ["seed", "report.title", "attention.toy-fmnist-d16.seeds"])
def test_a_yaml_alias_bomb_is_refused_fast_and_small(project, where):
    """Issue 40.2: 9 ** 10 strings by 10 aliases took a minute and 1.3 GB, then died building the message."""
    start = time.perf_counter()
    out = refused_in_one_line(runner.invoke(app, ["stage", "validate", "-S", f"{where}={BOMB}"]))
    assert time.perf_counter() - start < 5 and len(out) < 400, (time.perf_counter() - start, out[:400])
    assert out.startswith(f"error: bad params: {where}"), out


def test_a_long_value_is_shortened_in_the_message(project):
    out = refused_in_one_line(runner.invoke(app, ["stage", "validate", "-S", "report.title=[" + "x, " * 50000 + "x]"]))
    assert out.startswith("error: bad params: report.title: expected a non-empty string, got ['x', 'x'")
    assert "..." in out and len(out) < 400, out[:400]


def test_duplicate_keys_in_params_are_refused_as_dvc_refuses_them(project):
    """Issue 40.3: `seed: 0` then `seed: 7` passed here (the last won) while DVC refused the file."""
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text + "\nseed: 7\n")
    out = refused_in_one_line(runner.invoke(app, ["stage", "validate"]))
    assert "params.yaml" in out and "duplicate key 'seed'" in out, out


@pytest.mark.parametrize("what", ["directory", "latin-1"])
def test_params_that_are_a_directory_or_not_utf8_are_refused_in_one_line(project, what):
    """Issue 40.4: IsADirectoryError / UnicodeDecodeError tracebacks, rc 1."""
    if what == "directory":
        (project / "p").mkdir()
    else:
        (project / "p").write_bytes((project / "params.yaml").read_bytes() + "# caf\xe9\n".encode("latin-1"))
    before = hashes(project)
    out = refused_in_one_line(runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d16", "--params", "p"]))
    assert "p: " in out and ("is a directory" in out if what == "directory" else "not UTF-8" in out), out
    assert hashes(project) == before


COSTLY = {  # dotted key -> (a value that once passed and then allocated or looped for ever, the limit named)
    "attention.toy-fmnist-d16.attn_dim": (100_000_000, "must be ≤ 4096"),
    "attention.toy-fmnist-d16.epochs": (10 ** 26, "must be ≤ 100000"),
    "attention.toy-fmnist-d16.patience": (10 ** 26, "must be ≤ 100000"),
    "attention.toy-fmnist-d16.batch_size": (10 ** 12, "must be ≤ 65536"),
    "extensions.toy-fmnist-d16-T2.iterations": (10 ** 6, "must be ≤ 16"),
    "attention.toy-fmnist-d16.seeds": (list(range(1000)), "at most 100 values"),
    "noise.sigmas": ([i / 10_000 for i in range(10_000)], "at most 1000 values"),
    "eval_batch_size": (10 ** 12, "must be ≤ 65536"),
    "embedding.max_points": (10 ** 12, "must be ≤ 10000000"),
    "maps.max_images": (10 ** 12, "must be ≤ 10000"),
}


@pytest.mark.parametrize("dotted", list(COSTLY))
def test_values_that_cost_memory_or_time_have_an_upper_bound(project, dotted):
    """Issue 40.5: attn_dim 1e8 emptied the run's folder, then failed to allocate 25.6 GB."""
    value, limit = COSTLY[dotted]
    before = hashes(project)
    flow = yaml.safe_dump(value, default_flow_style=True, width=10 ** 9).strip().removesuffix("...").strip()
    out = refused_in_one_line(runner.invoke(app, ["stage", "train-attn", "toy-fmnist-d16", "-S", f"{dotted}={flow}"]))
    assert out.startswith(f"error: bad params: {dotted}") and limit in out and len(out) < 400, out[:400]
    assert hashes(project) == before
