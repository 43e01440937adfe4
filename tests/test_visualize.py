"""Visualisations: the paper's three backward rules, receptive fields, deletion, the real CLI.

The rules are checked against references written out in this file (hand-computed numbers,
and a hand-written backward pass that applies the paper's masks), never against Captum
itself; the CLI runs on a real (tiny) training run and must regenerate byte-identical files.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY, cli_env, compose_config, run_cli
from torch import nn

from ablate import network as network_lib
from ablate.report import evidence
from ablate.visualize import attribution, deletion, units
from ablate.visualize.panels import filters_figure, normalise_map


class Total(nn.Module):
    """Sum over everything but the batch: one score per image, as column 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(1, 2, 3)).unsqueeze(1)


def _conv(weight: list, bias: list | None = None, padding: int = 0) -> nn.Conv2d:
    w = torch.tensor(weight, dtype=torch.float32)
    conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[-1], padding=padding, bias=bias is not None)
    conv.weight.data.copy_(w)
    if bias is not None:
        conv.bias.data.copy_(torch.tensor(bias, dtype=torch.float32))
    return conv


# --- the rules, by hand ----------------------------------------------------------------------


def test_each_rule_matches_hand_computed_gradients_on_a_one_by_one_net():
    # conv1: channel 0 = x, channel 1 = -x; conv2: y = a0 - 2 a1 + 0.5; score = sum relu(y).
    net = nn.Sequential(_conv([[[[1.0]]], [[[-1.0]]]]), nn.ReLU(),
                        _conv([[[[1.0]], [[-2.0]]]], [0.5]), nn.ReLU(), Total()).eval()
    x = torch.tensor([[[[2.0, -1.0], [-0.1, 0.0]]]])
    # Pixel by pixel (f1 = (x, -x), R1 = (1, -2) * R2, input gradient = R1[0] - R1[1]):
    #  x = 2:    y = 2.5 > 0, so R2 = 1 for all rules; f1 = (2, -2).
    #            backprop  R1 = (1, 0)          -> 1;  deconv R1 = (1, 0) -> 1;  guided -> 1
    #  x = -1:   y = -1.5 < 0: backprop and guided stop there -> 0; deconv R2 = 1,
    #            R1 = relu(1, -2) = (1, 0) -> 1
    #  x = -0.1: y = 0.3 > 0, f1 = (-0.1, 0.1): backprop R1 = (0, -2) -> 2; deconv -> 1;
    #            guided R1 = (0, 0) -> 0
    #  x = 0:    y = 0.5 > 0, f1 = (0, 0): backprop and guided -> 0 (f > 0 fails); deconv -> 1
    expected = {
        "backprop": [[1.0, 0.0], [2.0, 0.0]],
        "deconvnet": [[1.0, 1.0], [1.0, 1.0]],
        "guided": [[1.0, 0.0], [0.0, 0.0]],
    }
    for method, values in expected.items():
        got = attribution.attribute(net, x, method, target=0)
        assert torch.equal(got, torch.tensor([[values]])), method


def _rule(method: str, f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The paper's backward pass through one ReLU (forward input f, arriving gradient r)."""
    if method == "backprop":
        return (f > 0) * r
    if method == "deconvnet":
        return (r > 0) * r
    return (f > 0) * (r > 0) * r


@pytest.mark.parametrize("method", attribution.METHODS)
def test_each_rule_matches_a_hand_written_backward_pass(method):
    generator = torch.Generator().manual_seed(3)
    w1 = torch.randn(4, 2, 3, 3, generator=generator)
    b1 = torch.randn(4, generator=generator)
    w2 = torch.randn(3, 4, 3, 3, generator=generator)
    b2 = torch.randn(3, generator=generator)
    net = nn.Sequential(_conv(w1.tolist(), b1.tolist(), 1), nn.ReLU(),
                        _conv(w2.tolist(), b2.tolist(), 1), nn.ReLU(), Total()).eval()
    x = torch.randn(5, 2, 6, 6, generator=generator)
    # forward, keeping each ReLU's input
    f1 = F.conv2d(x, w1, b1, padding=1)
    f2 = F.conv2d(F.relu(f1), w2, b2, padding=1)
    # backward by hand: d(sum)/d(relu out) = 1, then rule, conv transpose, rule, conv transpose
    r = _rule(method, f2, torch.ones_like(f2))
    r = _rule(method, f1, F.conv_transpose2d(r, w2, padding=1))
    expected = F.conv_transpose2d(r, w1, padding=1)
    got = attribution.attribute(net, x, method, target=0)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.abs().sum() > 0


def test_guided_backprop_is_zero_where_input_or_arriving_gradient_is_negative():
    # Arriving gradient at the ReLU = the 1x1 conv's weights (+1, -1, +1, -1) per channel.
    net = nn.Sequential(nn.ReLU(), _conv([[[[1.0]], [[-1.0]], [[1.0]], [[-1.0]]]]),
                        Total()).eval()
    x = torch.tensor([1.0, 1.0, -1.0, -1.0]).view(1, 4, 1, 1)
    flat = {m: attribution.attribute(net, x, m, target=0).flatten().tolist()
            for m in attribution.METHODS}
    assert flat["guided"] == [1.0, 0.0, 0.0, 0.0]      # only f > 0 and R > 0 passes
    assert flat["backprop"] == [1.0, -1.0, 0.0, 0.0]   # f > 0
    assert flat["deconvnet"] == [1.0, 0.0, 1.0, 0.0]   # R > 0


def test_guided_backprop_zero_pattern_holds_at_every_relu_of_a_random_net():
    generator = torch.Generator().manual_seed(0)
    first = nn.Conv2d(1, 3, 3, padding=1)
    relu = nn.ReLU()
    second = nn.Conv2d(3, 2, 3, padding=1)
    for conv in (first, second):
        conv.weight.data.normal_(generator=generator)
    net = nn.Sequential(first, relu, second, nn.ReLU(), Total()).eval()
    seen = {}

    def keep(module, grad_input, grad_output):
        seen["arriving"] = grad_output[0].detach().clone()
        seen["leaving"] = grad_input[0].detach().clone()

    x = torch.randn(2, 1, 5, 5, generator=generator)
    forward_input = first(x).detach()
    handle = relu.register_full_backward_hook(keep)
    try:
        attribution.attribute(net, x, "guided", target=0)
    finally:
        handle.remove()
    # Captum's hook rewrites the leaving gradient after ours ran; recompute it from the rule
    leaving = torch.where((forward_input > 0) & (seen["arriving"] > 0), seen["arriving"], 0.0)
    blocked = (forward_input <= 0) | (seen["arriving"] <= 0)
    assert blocked.any() and (~blocked).any()
    assert torch.equal(leaving[blocked], torch.zeros(int(blocked.sum())))
    assert torch.equal(seen["leaving"][~blocked], seen["arriving"][~blocked])


# --- networks as built by the project ----------------------------------------------------------


@pytest.mark.parametrize("downsample", ["pool", "conv"])
def test_built_network_relus_are_distinct_modules_not_in_place(downsample):
    cfg = compose_config(["experiment=quick", f"downsample={downsample}"])
    net = hydra.utils.instantiate(cfg.network, name="n")
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    convs = [layer for layer in net.spec if layer["type"] in ("conv", "classifier")]
    assert len(relus) == len(convs)
    assert len({id(m) for m in relus}) == len(relus)
    assert not any(m.inplace for m in relus)
    attribution.check_relus(net)  # the check the attribution functions run


def test_check_relus_refuses_in_place_and_shared_relus():
    shared = nn.ReLU()
    with pytest.raises(ValueError, match="several places"):
        attribution.check_relus(nn.Sequential(nn.Conv2d(1, 1, 1), shared, nn.Conv2d(1, 1, 1),
                                              shared))
    with pytest.raises(ValueError, match=r"in place.*nn.ReLU\(\)"):
        attribution.check_relus(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(inplace=True)))


# --- receptive fields --------------------------------------------------------------------------


def _model_c(downsample):
    cfg = compose_config([f"downsample={downsample}"])
    return network_lib.build_network(list(cfg.model.layers), hydra.utils.instantiate(
        cfg.downsample.transform), in_channels=1, image_size=32, num_classes=10, width=0.125)


def test_receptive_field_sizes_of_model_c_follow_the_layer_table():
    layers = _model_c("pool").spec
    fields = units.receptive_fields(layers)
    convs = units.conv_layers(layers)
    # 3, 5, pool -> 7 (jump 2), 11, 15, pool -> 19 (jump 4), 3x3 -> 27, 1x1 -> 27, 1x1 -> 27
    assert [fields[i].size for i in convs.values()] == [3, 5, 11, 15, 27, 27, 27]
    assert [fields[i].jump for i in convs.values()] == [1, 1, 2, 2, 4, 4, 4]
    assert units.layer_by_role(layers, "last3x3") == "conv5"
    assert units.layer_by_role(layers, "middle") == "conv3"
    assert units.layer_by_role(_model_c("conv").spec, "middle") == "conv4"


@pytest.mark.parametrize(("layer", "row", "col"), [("conv4", 3, 4), ("conv7", 2, 3),
                                                   ("conv4", 0, 0)])
def test_receptive_field_box_is_exactly_where_the_gradient_can_reach(layer, row, col):
    net = _model_c("conv").eval()  # strided convs: every input of the field contributes
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.data.fill_(0.1)
            module.bias.data.zero_()
    index = units.conv_layers(net.spec)[layer]
    trunk = units.trunk(net, index)
    x = torch.ones(1, 1, 32, 32, requires_grad=True)
    trunk(x)[0, 0, row, col].backward()
    reached = (x.grad[0, 0] != 0).nonzero()
    top, bottom, left, right = units.receptive_fields(net.spec)[index].box(row, col, 32)
    assert (int(reached[:, 0].min()), int(reached[:, 0].max()) + 1) == (top, bottom)
    assert (int(reached[:, 1].min()), int(reached[:, 1].max()) + 1) == (left, right)


def test_crop_pads_outside_the_image_with_nan():
    field = units.Field(size=5, jump=2, start=0.0)
    image = torch.arange(64, dtype=torch.float32).view(1, 8, 8)
    crop = field.crop(image, 0, 0)  # centre (0, 0): rows/cols -2..2, two of them outside
    assert crop.shape == (1, 5, 5)
    assert torch.isnan(crop[0, :2]).all() and torch.isnan(crop[0, :, :2]).all()
    assert torch.equal(crop[0, 2:, 2:], image[0, :3, :3])


def test_unknown_layer_names_the_valid_ones():
    with pytest.raises(units.VisualizeError, match=r"no layer 'conv99'.*middle, last3x3.*conv1"):
        units.resolve_layer(_model_c("pool").spec, "conv99", "run")


# --- deletion and display ----------------------------------------------------------------------


def test_deletion_removes_most_attributed_pixels_first_and_scores_the_predicted_class():
    # Class 0's logit is 4 * pixel (0, 0); class 1's is 0: deleting that pixel first kills it.
    class OnePixel(nn.Module):
        def forward(self, x):
            return torch.stack([4 * x[:, 0, 0, 0], torch.zeros(len(x))], dim=1)

    x = torch.ones(1, 1, 2, 2)
    good = torch.tensor([[[[9.0, 0.0], [0.0, 0.0]]]])  # points at (0, 0)
    bad = torch.tensor([[[[0.0, 0.0], [0.0, -9.0]]]])  # |-9| wins: (1, 1) goes first
    fractions = (0.0, 0.25, 0.5)
    fill = torch.zeros(1)
    p_intact = float(torch.sigmoid(torch.tensor(4.0)))
    curves = {name: deletion.deletion_curves(OnePixel(), x, deletion.deletion_order(a), fill,
                                             fractions)
              for name, a in (("good", good), ("bad", bad))}
    torch.testing.assert_close(curves["good"], torch.tensor([[p_intact, 0.5, 0.5]]))
    # "bad" deletes (1, 1), then the tie among zeros goes in reading order: (0, 0)
    torch.testing.assert_close(curves["bad"], torch.tensor([[p_intact, p_intact, 0.5]]))
    area = deletion.area_under(curves["good"], fractions)
    assert area[0] == pytest.approx(((p_intact + 0.5) / 2 * 0.25 + 0.5 * 0.25) / 0.5)


def test_area_and_confidence_interval_match_hand_values():
    line = torch.tensor([[1.0, 0.5, 0.0]])
    assert deletion.area_under(line, (0.0, 0.25, 0.5))[0] == pytest.approx(0.5)
    summary = evidence.summarize(np.array([1.0, 2.0, 3.0]))  # the deletion table's interval
    mean, half = summary.mean, summary.half_width
    # sd 1, sem 1/sqrt(3), t(0.975, 2 df) = 4.302653
    assert mean == 2.0 and half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)


def test_maps_are_normalised_around_one_half_per_image():
    shown = normalise_map(torch.tensor([[[-2.0, 0.0], [1.0, 2.0]]]))
    assert shown.flatten().tolist() == [0.0, 0.5, 0.75, 1.0]
    assert normalise_map(torch.zeros(1, 2, 2)).unique().tolist() == [0.5]


# --- W&B -------------------------------------------------------------------------------------


@pytest.mark.slow  # a real W&B offline run
def test_figures_reach_the_runs_offline_wandb_run_and_wandb_trouble_only_warns(tmp_path, caplog):
    from ablate.records import Record
    from ablate.visualize.wandb_log import log_figures

    png = tmp_path / "figures" / "visualize_filters_x.png"
    png.parent.mkdir()
    png.write_bytes(filters_figure("x", torch.ones(2, 1, 3, 3)))
    entry = {"id": "vizrun01", "project": "ablate", "mode": "offline",
             "dir": str(tmp_path / "run" / "wandb")}
    assert log_figures(Record(cell={}, wandb=entry), {"figures/visualize_filters_x.png": png})
    (run_folder,) = (tmp_path / "run" / "wandb").glob("offline-run-*-vizrun01")
    assert list(run_folder.glob("files/media/images/visualize/filters_x_*.png"))
    assert not log_figures(Record(cell={}), {})  # no W&B entry: nothing to do
    broken = {**entry, "mode": "no-such-mode"}
    assert not log_figures(Record(cell={}, wandb=broken), {"figures/visualize_filters_x.png": png})
    assert "could not log the figures" in caplog.text


# --- the real CLI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """One tiny real training run (~10 s), shared by the CLI tests."""
    root = tmp_path_factory.mktemp("visualize")
    done = run_cli([*TINY, "trainer.limit_train_batches=4", f"hydra.run.dir={root / 'run'}"],
                   root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run"


def _visualize(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate.visualize", *map(str, args)], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=300)


QUICK = ["--images", "12", "--rows", "3", "--unit-count", "2", "--top-k", "3", "--no-wandb"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_cli_writes_figures_and_report_byte_identically(real_run, tmp_path):
    first = _visualize([real_run, real_run, "--out", tmp_path / "a", *QUICK], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    again = _visualize([real_run, real_run, "--out", tmp_path / "b", *QUICK], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    written, rewritten = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert written == rewritten
    names = set(written)
    assert "visualizations.md" in names
    assert {"figures/visualize_regions.png", "figures/visualize_deletion.png"} <= names
    # the same run twice gets two labels, two filter figures, two figures per default layer
    assert sum(name.startswith("figures/visualize_units_") for name in names) == 4
    assert sum(name.startswith("figures/visualize_filters_") for name in names) == 2
    text = written["visualizations.md"].decode()
    for name in names - {"visualizations.md"}:
        assert f"({name})" in text
    for method in ("| backprop |", "| deconvnet |", "| guided backprop |", "| random order"):
        assert method in text
    assert all(data.startswith(b"\x89PNG") for n, data in written.items() if n.endswith(".png"))


def _copy(run: Path, target: Path, edit=None) -> Path:
    shutil.copytree(run, target)
    if edit is not None:
        record = json.loads((target / "result.json").read_text())
        edit(record)
        (target / "result.json").write_text(json.dumps(record))
    return target


def _without_checkpoint(run: Path, target: Path) -> Path:
    _copy(run, target)
    (target / "checkpoints" / "last.ckpt").unlink()
    return target


def _fail(record):
    record.update(status="failed", error="RuntimeError: out of memory")


def _other_dataset(record):
    record["cell"]["dataset"] = "cifar10"
    record["config"]["datamodule"]["image_size"] = 32


@pytest.mark.parametrize(
    ("make", "extra", "expected"),
    [
        (lambda run, tmp: tmp / "nothing-here", [], "has no result.json"),
        (lambda run, tmp: _without_checkpoint(run, tmp / "r"), [], "no checkpoints/last.ckpt"),
        (lambda run, tmp: _copy(run, tmp / "r", _fail), [], "status is 'failed'"),
        (lambda run, tmp: _copy(run, tmp / "r", _other_dataset), ["RUN"],
         "different datasets.*cifar10 at 32 px.*digits at 16 px"),
        (lambda run, tmp: run, ["--layers", "conv42"], r"no layer 'conv42'.*conv1 \(3x3 conv"),
        (lambda run, tmp: run, ["--units", "0", "999"], r"unit\(s\) \[999\].*valid units are 0"),
        (lambda run, tmp: run, ["--images", "100000"], r"test split has \d+ images"),
    ],
    ids=["no-record", "no-checkpoint", "failed", "datasets", "layer", "unit", "images"],
)
@pytest.mark.slow  # a real training run and seven CLI processes
def test_bad_input_exits_2_names_the_problem_and_writes_nothing(real_run, tmp_path, make,
                                                                extra, expected):
    target = make(real_run, tmp_path)
    extra = [real_run if arg == "RUN" else arg for arg in extra]
    done = _visualize([target, "--out", tmp_path / "out", *QUICK, *extra], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert re.search(expected, done.stderr), done.stderr
    assert not (tmp_path / "out").exists()
