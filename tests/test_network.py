"""The 12 networks of the ablation: exact parameter counts, 6x6 maps, structure of each mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ablate import spec
from ablate.init import caffe_xavier, gaussian, xavier_uniform
from ablate.network import PNormPool2d, build_network, count_parameters

CONF = Path(__file__).resolve().parent.parent / "conf"
TRANSFORMS = {
    "pool": spec.pool,
    "stride": spec.strided,
    "convpool": spec.conv_pool,
    "conv": spec.all_conv,
    "lppool": spec.lp_pool,
    "avgpool": spec.avg_pool,
}
# paper.md: exact counts with K = 10 on 32x32x3 inputs.
PAPER_PARAMS = {
    ("A", "pool"): 839_242, ("A", "stride"): 839_242,
    ("A", "convpool"): 1_254_250, ("A", "conv"): 1_254_250,
    ("B", "pool"): 885_610, ("B", "stride"): 885_610,
    ("B", "convpool"): 1_300_618, ("B", "conv"): 1_300_618,
    ("C", "pool"): 954_730, ("C", "stride"): 954_730,
    ("C", "convpool"): 1_369_738, ("C", "conv"): 1_369_738,
}


def base_layers(model: str) -> list[dict]:
    return yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text())["layers"]


def label(model: str, mode: str) -> str:
    """The paper's name of a network, as its downsample YAML spells it."""
    node = yaml.safe_load((CONF / "downsample" / f"{mode}.yaml").read_text())
    return node["label"].replace("${model.name}", model).replace("${.p}", str(node.get("p")))


def build(model: str, mode: str, **kwargs) -> nn.Module:
    args = {"in_channels": 3, "image_size": 32, "num_classes": 10, **kwargs}
    return build_network(base_layers(model), TRANSFORMS[mode], name=label(model, mode), **args)


def test_the_labels_are_the_papers_names():
    assert [label("C", m) for m in ("pool", "stride", "convpool", "conv")] == [
        "Model C", "Strided-CNN-C", "ConvPool-CNN-C", "All-CNN-C"]


def test_the_yaml_modes_are_the_tested_ones():
    names = {p.stem for p in (CONF / "downsample").glob("*.yaml")}
    assert names == set(TRANSFORMS)
    for mode, function in TRANSFORMS.items():
        target = yaml.safe_load((CONF / "downsample" / f"{mode}.yaml").read_text())
        assert target["transform"]["_target_"] == f"ablate.spec.{function.__name__}"


def map_sizes(network: nn.Module, size: int = 32) -> list[tuple[int, int]]:
    """The spatial size after every module of ``network`` on a ``size`` x ``size`` input."""
    seen: list[tuple[int, int]] = []
    hooks = [m.register_forward_hook(lambda module, inputs, output: seen.append(
        tuple(output.shape[-2:]))) for m in network if not isinstance(m, nn.Flatten)]
    network(torch.rand(2, 3, size, size))
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("model", ["A", "B", "C"])
@pytest.mark.parametrize("mode", ["lppool", "avgpool"])
def test_pnorm_pooling_keeps_model_x_params_and_maps(model, mode):
    """A p-norm has no weights and max-pooling's windows: Model X's count and maps exactly."""
    network = build(model, mode, init=caffe_xavier)
    assert count_parameters(network) == PAPER_PARAMS[model, "pool"]
    pool_maps = map_sizes(build(model, "pool"))
    assert map_sizes(network) == pool_maps
    assert (16, 16) in pool_maps and (8, 8) in pool_maps and pool_maps[-2] == (6, 6)
    kind = {"lppool": PNormPool2d, "avgpool": nn.AvgPool2d}[mode]
    assert sum(isinstance(m, kind) for m in network) == 2
    assert not any(isinstance(m, nn.MaxPool2d) for m in network)


def test_lp_pooling_is_the_p_norm_of_max_poolings_windows():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 5
    windows = F.unfold(F.pad(x, (0, 1, 0, 1)), 3, stride=2).view(2, 3, 9, 16, 16)
    for p in (1, 2, 4, 16):
        expected = windows.pow(p).sum(dim=2).pow(1 / p)  # zeros past the edge add nothing
        assert torch.allclose(PNormPool2d(p, 3, 2)(x.float()).double(), expected, rtol=1e-5)
    # torch's LPPool2d agrees inside the map, but inflates a window that hangs over the edge:
    # the mean over the 2x3 pixels it covers, times 9 (the reason for PNormPool2d)
    ones = torch.ones(1, 1, 32, 32)
    assert PNormPool2d(1, 3, 2)(ones)[0, 0, 0, -1] == 6
    assert nn.LPPool2d(1, 3, 2, ceil_mode=True)(ones)[0, 0, 0, -1] == 9
    # p = 1 is the sum, avgpool the mean over the pixels covered; a large p nears the max
    assert nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False)(ones)[0, 0, 0, -1] == 1
    max_pooled = nn.MaxPool2d(3, 2, ceil_mode=True)(x.float())
    lp64 = PNormPool2d(64, 3, 2)(x.float())
    assert torch.all(lp64 >= max_pooled - 1e-5) and torch.all(lp64 <= max_pooled * 9 ** (1 / 64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lp_pooling_does_not_overflow_in_half_precision(dtype):
    """x^16 is past fp16's 65504 from x = 2 on; 300^16 is past even fp32 and bf16."""
    value = {torch.float16: 3.0, torch.bfloat16: 300.0}[dtype]
    x = torch.full((1, 2, 16, 16), value, dtype=dtype)
    assert not torch.isfinite(nn.LPPool2d(16, 3, 2)(x.float() if dtype == torch.bfloat16
                                                      else x)).all()  # the test can fail
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = PNormPool2d(16, 3, 2)(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    expected = value * 9 ** (1 / 16)  # a full window of equal values: x * 9^(1/p)
    assert torch.allclose(out[..., :-1, :-1].float(), torch.tensor(expected), rtol=1e-2)
    # an all-zero window (common after a ReLU) gives 0 and a finite gradient, not NaN
    zeros = torch.zeros(1, 1, 8, 8, requires_grad=True)
    PNormPool2d(16, 3, 2)(zeros).sum().backward()
    assert torch.all(zeros.grad == 0)


@pytest.mark.parametrize(("model", "mode"), sorted(PAPER_PARAMS))
def test_exact_parameter_count_and_6x6_map(model, mode):
    network = build(model, mode)
    assert count_parameters(network) == PAPER_PARAMS[model, mode]
    seen = {}
    pool = next(m for m in network if isinstance(m, nn.AdaptiveAvgPool2d))
    pool.register_forward_hook(lambda module, inputs, output: seen.update(shape=inputs[0].shape))
    logits = network(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert seen["shape"][-2:] == (6, 6)


def test_all_cnn_c_for_cifar100():
    assert count_parameters(build("C", "conv", num_classes=100)) == 1_387_108


def kinds(layers):
    return [layer["type"] for layer in layers]


@pytest.mark.parametrize("model", ["A", "B", "C"])
def test_structure_of_each_mode(model):
    base = spec.normalise(base_layers(model))
    pools = [i for i, layer in enumerate(base) if layer["type"] == "maxpool"]
    assert len(pools) == 2
    convs_before = [base[i - 1] for i in pools]

    strided = spec.strided(base)
    assert "maxpool" not in kinds(strided)
    assert len(strided) == len(base) - 2
    assert [layer.get("stride", 1) for layer in strided if layer["type"] == "conv"].count(2) == 2
    for layer in strided:  # the conv just before each pool is the one that got stride 2
        if layer.get("stride", 1) == 2:
            assert {k: v for k, v in layer.items() if k != "stride"} in convs_before

    all_conv = spec.all_conv(base)
    assert "maxpool" not in kinds(all_conv)
    assert len(all_conv) == len(base)
    for i, before in zip(pools, convs_before, strict=True):
        assert all_conv[i] == {"type": "conv", "out": before["out"], "k": 3, "stride": 2,
                               "pad": "same"}
        assert all_conv[i + 1]["type"] == "dropout" and all_conv[i + 1]["p"] == 0.5

    conv_pool = spec.conv_pool(base)
    assert kinds(conv_pool).count("maxpool") == 2
    assert len(conv_pool) == len(base) + 2
    for offset, (i, before) in enumerate(zip(pools, convs_before, strict=True)):
        extra = conv_pool[i + offset]
        assert extra == {"type": "conv", "out": before["out"], "k": 3, "pad": "same"}
        assert conv_pool[i + offset + 1]["type"] == "maxpool"

    assert spec.pool(base) == base


@pytest.mark.parametrize("model", ["A", "B", "C"])
def test_paper_protocol_pieces(model):
    network = build(model, "conv")
    dropouts = [m.p for m in network if isinstance(m, nn.Dropout)]
    assert dropouts == [0.2, 0.5, 0.5]
    assert isinstance(network[0], nn.Dropout)  # on the input image
    # the last conv (classifier) keeps its ReLU, then global average
    tail = list(network)[-4:]
    assert isinstance(tail[0], nn.Conv2d) and tail[0].out_channels == 10
    assert isinstance(tail[1], nn.ReLU)
    assert isinstance(tail[2], nn.AdaptiveAvgPool2d)


def test_dropout_is_off_in_eval_mode():
    network = build("C", "conv", width=0.25).eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(network(x), network(x))


def test_width_multiplier_scales_hidden_convs_only():
    network = build("C", "conv", width=0.25)
    outs = [m.out_channels for m in network if isinstance(m, nn.Conv2d)]
    assert outs == [24, 24, 24, 48, 48, 48, 48, 48, 10]


def test_input_channels_and_classes_come_from_arguments():
    network = build("A", "stride", in_channels=1, num_classes=7)
    assert network(torch.zeros(1, 1, 32, 32)).shape == (1, 7)


def test_too_small_images_name_the_minimum():
    with pytest.raises(spec.SpecError) as caught:
        build("C", "conv", image_size=8)
    message = str(caught.value)
    assert "All-CNN-C cannot take 8x8 images" in message
    assert "dataset.image_size" in message
    need = int(message.split("at least ")[1].split("x")[0])
    assert build("C", "conv", image_size=need)(torch.zeros(1, 3, need, need)).shape == (1, 10)
    with pytest.raises(spec.SpecError):
        build("C", "conv", image_size=need - 1)


def test_initialisers_are_applied():
    torch.manual_seed(0)
    network = build("C", "pool", init=gaussian)
    weights = torch.cat([m.weight.flatten() for m in network if isinstance(m, nn.Conv2d)])
    assert abs(weights.std().item() - 0.05) < 0.002
    assert all(m.bias.abs().sum() == 0 for m in network if isinstance(m, nn.Conv2d))
    convs = [m for m in build("C", "pool", init=xavier_uniform) if isinstance(m, nn.Conv2d)]
    for conv in convs:  # Glorot-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert conv.weight.abs().max() <= bound
        assert conv.weight.abs().max() > 0.9 * bound
        assert conv.bias.abs().sum() == 0


def test_caffe_xavier_is_caffes_filler_not_glorots():
    """Caffe's xavier filler (FAN_IN): U(+-sqrt(3 / fan_in)), variance 1 / fan_in, zero biases."""
    torch.manual_seed(0)
    convs = [m for m in build("C", "pool", init=caffe_xavier) if isinstance(m, nn.Conv2d)]
    for conv in convs:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = (3 / fan_in) ** 0.5
        weight = conv.weight.detach().flatten().double()
        assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound
        # the variance of U(-a, a) is a^2 / 3 = 1 / fan_in; >= 2,592 draws per conv keep the
        # sample variance within 10 % (its relative std is sqrt(0.8 / n) < 2 %)
        assert abs(weight.var().item() * fan_in - 1.0) < 0.1
        assert conv.bias.abs().sum() == 0
    # Glorot's bound differs wherever fan_out != fan_in: on the first conv (27 in, 864 out)
    # it is sqrt(6 / 891) = 0.082 against Caffe's sqrt(3 / 27) = 0.333
    glorot = [m for m in build("C", "pool", init=xavier_uniform) if isinstance(m, nn.Conv2d)]
    assert glorot[0].weight.abs().max() < 0.3 * convs[0].weight.abs().max()


def test_unknown_layer_type_is_named():
    with pytest.raises(spec.SpecError, match="valid layer types"):
        spec.normalise([{"type": "minpool"}])


def test_printed_spec_reads_like_the_paper():
    text = spec.format_spec(build("C", "conv").spec, 32)
    assert "3x3 conv 96 ReLU, stride 2  -> 16x16" in text
    assert "3x3 conv 192 ReLU  -> 6x6" in text
    assert "1x1 conv num_classes ReLU  -> 6x6" in text
