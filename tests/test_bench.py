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
