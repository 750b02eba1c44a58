"""LWLRD parameter groups, the scheduler contract, and that fine-tuning lowers the task loss."""

import math

import pytest
import torch

from lakeguard.data import load_dataset
from lakeguard.defenses import LayerDecaySettings, param_groups_layer_decay, sanitize_layer_decay, scaled_lr_lambda
from lakeguard.defenses.layer_decay import build_optimizer
from lakeguard.errors import ConfigError
from lakeguard.models import build_model, layer_groups
from lakeguard.tasks import Task
from lakeguard.training import predict_scores, task_loss


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet18"])
@pytest.mark.parametrize("anchor", ["input", "output"])
def test_every_trainable_parameter_in_exactly_one_group(arch, anchor):
    model = build_model(arch, in_channels=3, num_outputs=5)
    groups = param_groups_layer_decay(model, base_lr=1e-3, layer_decay=0.5, anchor=anchor, weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("anchor", ["input", "output"])
def test_lr_follows_decay_from_anchor(anchor):
    model = build_model("mlp", in_channels=1, num_outputs=2, hidden=16)
    groups = param_groups_layer_decay(model, base_lr=2e-3, layer_decay=0.3, anchor=anchor)
    layers = len(layer_groups(model))
    for group in groups:
        i = int(group["name"].split("_")[1])
        k = i if anchor == "input" else layers - 1 - i
        assert group["lr_scale"] == pytest.approx(0.3**k)
        assert group["lr"] == pytest.approx(2e-3 * 0.3**k)


def test_group_names_and_weight_decay_split():
    model = build_model("mlp", in_channels=1, num_outputs=2, hidden=16)
    groups = {g["name"]: g for g in param_groups_layer_decay(model, base_lr=1e-3, layer_decay=0.5, weight_decay=0.1)}
    assert set(groups) == {f"layer_{i}_{kind}" for i in range(4) for kind in ("decay", "no_decay")}
    assert groups["layer_0_decay"]["param_names"] == ["fc.0.weight"]
    assert groups["layer_0_decay"]["weight_decay"] == 0.1
    assert groups["layer_0_no_decay"]["param_names"] == ["fc.0.bias"]
    assert groups["layer_0_no_decay"]["weight_decay"] == 0.0


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_scheduler_keeps_per_group_ratios(schedule, optimizer):
    model = build_model("mlp", in_channels=1, num_outputs=2, hidden=8)
    settings = LayerDecaySettings(base_lr=1e-2, layer_decay=0.5, optimizer=optimizer, schedule=schedule)
    groups = param_groups_layer_decay(model, base_lr=settings.base_lr, layer_decay=settings.layer_decay)
    opt = build_optimizer(groups, settings)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, scaled_lr_lambda(schedule, total_steps=10))
    for _ in range(7):
        opt.step()
        sched.step()
    anchor_lr = opt.param_groups[0]["lr"]
    assert anchor_lr > 0
    for group in opt.param_groups:
        assert group["lr"] / anchor_lr == pytest.approx(group["lr_scale"] / opt.param_groups[0]["lr_scale"])
    if schedule == "cosine":
        assert anchor_lr == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 7 / 10)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_lr": 0.0}, "base_lr must be a positive"),
        ({"layer_decay": 1.5}, r"layer_decay must be in \(0, 1\]"),
        ({"layer_decay": 0.0}, r"layer_decay must be in \(0, 1\]"),
        ({"anchor": "middle"}, "anchor must be one of"),
        ({"optimizer": "lion"}, "optimizer must be one of"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"schedule": "step"}, "schedule must be one of"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LayerDecaySettings(**{"base_lr": 1e-3, "layer_decay": 0.5, **kwargs})


def test_fine_tuning_lowers_training_loss_on_real_images():
    data = load_dataset("breastmnist")
    images, labels = data.train.tensors()
    images, labels = images[:256], labels[:256]
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_outputs=2, hidden=64)
    with torch.no_grad():
        before = task_loss(model(images), labels, Task.BINARY).item()
    settings = LayerDecaySettings(base_lr=1e-3, layer_decay=0.5, epochs=5, batch_size=64)
    sanitize_layer_decay(model, images, labels, Task.BINARY, settings, device=torch.device("cpu"))
    with torch.no_grad():
        after = task_loss(model(images), labels, Task.BINARY).item()
    assert after < before
    assert predict_scores(model, images, Task.BINARY, device=torch.device("cpu")).shape == (256, 2)
