"""The training stages hand params.yaml's training settings to the engine (amp included)."""

import pytest
import yaml
from typer.testing import CliRunner

from gattanet.engine import train as engine
from gattanet.data.noise import derive_seed
from pipeline.cli import app
from pipeline import runs
from pipeline.stages import pretrain

runner = CliRunner()


@pytest.mark.slow
@pytest.mark.parametrize("amp", [True, False])
def test_training_stages_pass_their_settings_to_fit(project, monkeypatch, amp):
    seen = []

    def spy(model, params, train, val, cfg, **kw):
        seen.append(cfg)
        return engine.fit(model, params, train, val, cfg, **kw)

    for module in (pretrain, runs):  # runs.train_attention trains every attention model
        monkeypatch.setattr(module, "fit", spy)
    override = ["-S", f"amp={str(amp).lower()}"]
    for args in (["pretrain", "toy-fmnist"], ["train-attn", "toy-fmnist-d16", "-S", "attention.toy-fmnist-d16.lr=0.002"]):
        r = runner.invoke(app, ["stage", *args, *override])
        assert r.exit_code == 0, r.output
    backbone, *attention = seen
    params = yaml.safe_load((project / "params.yaml").read_text())
    bb, att = params["backbones"]["toy-fmnist"], params["attention"]["toy-fmnist-d16"]
    assert backbone.amp is amp and all(a.amp is amp for a in attention)
    assert (backbone.lr, backbone.epochs, backbone.seed) == (bb["lr"], bb["epochs"], params["seed"])
    for a in attention:
        assert (a.lr, a.l2, a.epochs) == (0.002, att["l2"], att["epochs"])  # -S wins
    # one model per entry of `seeds`, each seeded from (global seed, its seed)
    assert [a.seed for a in attention] == [derive_seed(params["seed"], s) for s in att["seeds"]]
