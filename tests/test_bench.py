"""`gattanet-cli bench`'s attention section: the GAttANet step at d = 16 and d = 64 against the backbone's,
beside the ratio the multiply-adds allow, and the shared evaluation at d = 64 against d = 16."""

import torch
from typer.testing import CliRunner

import gattanet.cost.bench as bench
from pipeline.cli import app


def test_attention_section_has_each_dimension_in_each_precision(monkeypatch):
    monkeypatch.setattr(bench, "_best_rates", lambda runs, n, *_: {k: float(n) for k in runs})  # no timing
    result = bench.run_bench(device="cpu", n_images=16, batch_size=16)
    att, precisions = result["attention"], list(result["img_per_s"])
    assert set(att["img_per_s"]) == set(att["step_vs_backbone"]) == set(att["eval_d64_vs_d16"]) == set(precisions)
    assert all(set(r) == {"attn_step_d16", "attn_step_d64", "eval_shared_d16", "eval_shared_d64"}
               for r in att["img_per_s"].values())
    assert all(set(r) == {"d16", "d64"} for r in att["step_vs_backbone"].values())
    assert set(att["targets"]) == {"d16_vs_backbone_step", "d64_vs_backbone_step", "eval_d64_vs_d16"}
    assert result["settings"]["in_channels"] == 1


def test_multiply_adds_allow_less_at_a_larger_dimension():
    # a GAttANet step does a backbone step's arithmetic and more (keys and queries), more at d = 64
    allowed = bench.allowed_ratios(1, batch_size=4)
    assert set(allowed) == {"d16", "d64"}
    assert 0 < allowed["d64"] < allowed["d16"] < 1


def test_step_macs_counts_no_gradients_of_frozen_weights():
    torch.manual_seed(0)
    x, y = torch.randn(2, 1, 32, 32), torch.tensor([0, 1])
    model = bench.build_backbone("toy", 10, 1)
    trained = bench.step_macs(model, x, y)
    for p in model.parameters():
        p.requires_grad_(False)
    x.requires_grad_(True)  # the backward still runs, for the input gradients only
    assert 0 < bench.step_macs(model, x, y) < trained


def test_cli_bench_prints_the_attention_table(monkeypatch):
    monkeypatch.setattr(bench, "_best_rates", lambda runs, n, *_: {k: float(n) for k in runs})
    r = CliRunner().invoke(app, ["bench", "--device", "cpu", "--n-images", "64"])
    assert r.exit_code == 0, r.output
    assert "MACs allow" in r.output and "eval_shared d64/d16" in r.output
    # every rate equal: each ratio is 1, printed to three digits, and judged against its target
    rows = [line for line in r.output.splitlines() if line.strip("│ ").startswith(("d16 ", "d64 ", "eval_shared d64"))]
    assert len(rows) == 3 and all("1.000" in line and "yes" in line for line in rows), rows


def test_cli_bench_judges_every_target_in_every_precision_measured(monkeypatch):
    rates = {("fp32", "loader"): 100.0}
    measured = {"bare_loop": 10.0, "pretrain_step": 9.5, "attn_step": 4.0, "backbone_infer": 50.0,
                "gattanet_infer": 30.0, "eval_shared": 20.0, "eval_naive": 15.0, "attn_step_d64": 3.0,
                "eval_shared_d64": 18.0}

    def fake(runs, n, *_):  # bf16 twice as fast as fp32 on every model: only the loader ratio differs
        return {k: rates.get(k) or measured[k[1]] * (2 if k[0] == "bf16" else 1) for k in runs}

    monkeypatch.setattr(bench, "_best_rates", fake)
    monkeypatch.setattr(bench.precision, "autocast_dtype", lambda device, amp: torch.bfloat16)
    r = CliRunner().invoke(app, ["bench", "--device", "cpu", "--n-images", "64"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "fp32" in r.output and "bf16" in r.output
    loader = next(line for line in r.output.splitlines() if "loader_vs_pretrain" in line)
    assert "10.53" in loader and "5.26" in loader and "yes" not in loader  # 100/9.5 and 100/19, both below 20
    attn = next(line for line in r.output.splitlines() if "attn_vs_pretrain" in line)
    assert attn.count(" no") == 2 and "0.42 no" in attn  # 4/9.5 = 0.42 in both precisions, below 0.5
