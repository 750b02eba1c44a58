"""Dead hidden units: a payload that fine-tuning alone leaves untouched, and its removal."""

import torch

from lakeguard.data import load_dataset
from lakeguard.defenses import LayerDecaySettings, sanitize_layer_decay, zero_dead_units
from lakeguard.models import build_model
from lakeguard.tasks import Task
from lakeguard.training import train_classifier

PLANTED = 4


def _mlp_with_payload():
    """An MLP whose first PLANTED hidden units store real training images and never activate."""
    data = load_dataset("breastmnist")
    images, labels = data.train.tensors()
    images, labels = images[:256], labels[:256]
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_outputs=2, hidden=64).eval()
    with torch.no_grad():
        model.fc[0].weight[:PLANTED] = images[:PLANTED].flatten(1)
        model.fc[0].bias[:PLANTED] = -1e4
        model.fc[1].weight[:, :PLANTED] = 0
    return model, images, labels


def test_zeroing_dead_units_removes_payload_and_keeps_outputs():
    model, images, _ = _mlp_with_payload()
    with torch.no_grad():
        before = model(images)
    zeroed = zero_dead_units(model, images)
    assert zeroed >= PLANTED
    assert torch.all(model.fc[0].weight[:PLANTED] == 0)
    with torch.no_grad():
        assert torch.allclose(model(images), before, atol=1e-6)


def test_sanitizer_removes_dead_unit_payload():
    model, images, labels = _mlp_with_payload()
    payload = model.fc[0].weight[:PLANTED].clone()
    settings = LayerDecaySettings(base_lr=4e-3, layer_decay=0.5, epochs=1, batch_size=64)

    plain = build_model("mlp", in_channels=1, num_outputs=2, hidden=64)
    plain.load_state_dict(model.state_dict())
    optimizer = torch.optim.Adam(plain.parameters(), lr=4e-3)
    train_classifier(plain, images, labels, Task.BINARY, optimizer=optimizer, epochs=1, batch_size=64, seed=0, device=torch.device("cpu"))
    assert torch.equal(plain.fc[0].weight[:PLANTED], payload), "dead units get no gradient"

    sanitize_layer_decay(model, images, labels, Task.BINARY, settings, device=torch.device("cpu"))
    assert not torch.equal(model.fc[0].weight[:PLANTED], payload)
    assert torch.all(model.fc[0].weight[:PLANTED] == 0)


def test_dead_cnn_channel_is_zeroed_without_changing_outputs():
    images, _ = load_dataset("breastmnist").train.tensors()
    images = images[:64]
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_outputs=2).eval()
    with torch.no_grad():
        model.conv3.bias[0] = -1e4
        before = model(images)
    assert zero_dead_units(model, images) >= 1
    assert torch.all(model.conv3.weight[0] == 0)
    head = model.head.weight.view(2, *model.feature_shape)
    assert torch.all(head[:, 0] == 0)
    with torch.no_grad():
        assert torch.allclose(model(images), before, atol=1e-6)


def test_resnet_is_left_unchanged():
    model = build_model("resnet18", in_channels=1, num_outputs=2).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert zero_dead_units(model, torch.rand(4, 1, 28, 28)) == 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
