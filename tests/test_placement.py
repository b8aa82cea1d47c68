"""The engine's placement (channels_last on every device) changes memory layout, not results."""

import copy

import torch

from gattanet.models.attention import GlobalAttention
from gattanet.models.registry import build_backbone
from gattanet.models.gattanet import GAttANet
from gattanet.engine.placement import place


def _model(seed: int = 0) -> GAttANet:
    torch.manual_seed(seed)
    backbone = build_backbone("toy", 10, 1)
    model = GAttANet(backbone, GlobalAttention(backbone.taps(), 8)).eval()
    with torch.no_grad():
        for p in model.attention.parameters():
            p.normal_(0, 0.1)
    return model


def test_place_uses_channels_last_for_conv_weights():
    model = place(_model(), "cpu")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not all(m.weight.is_contiguous() for m in convs)


def test_placed_model_computes_the_same_logits():
    nchw = _model()
    nhwc = place(copy.deepcopy(nchw), "cpu")
    x = torch.randn(6, 1, 32, 32)
    with torch.no_grad():
        a = nchw(x)
        b = nhwc(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
