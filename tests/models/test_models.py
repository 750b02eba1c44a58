"""Architectures, their transposed passes and layer enumeration, and safe model files."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from lakeguard.errors import ConfigError, ModelFileError
from lakeguard.models import ModelMeta, build_model, layer_groups, load_model, load_state_dict_file, save_model

ARCHS = ["mlp", "cnn", "resnet18"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("channels", "outputs"), [(1, 2), (3, 5), (1, 14)])
def test_forward_shapes(arch, channels, outputs):
    model = build_model(arch, in_channels=channels, num_outputs=outputs).eval()
    logits = model(torch.rand(4, channels, 28, 28))
    assert logits.shape == (4, outputs)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_transposed_pass_maps_codes_to_images(arch):
    model = build_model(arch, in_channels=3, num_outputs=5)
    images = model.forward_transposed(torch.rand(6, 5))
    assert images.shape == (6, 3, 28, 28)
    assert float(images.min()) >= 0.0
    assert float(images.max()) <= 1.0


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_transposed_pass_reuses_forward_weights(arch):
    """The gradient of the transposed pass reaches the first layer's weight: one set of weights, two directions."""
    model = build_model(arch, in_channels=1, num_outputs=2)
    model.forward_transposed(torch.rand(3, 2)).sum().backward()
    first = next(model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_groups_cover_every_parameter_once(arch):
    model = build_model(arch, in_channels=3, num_outputs=5)
    groups = layer_groups(model)
    names = [name for group in groups for name in group]
    assert sorted(names) == sorted(name for name, _ in model.named_parameters())
    assert len(names) == len(set(names))
    assert all(groups), "every layer holds at least one parameter"


def test_layer_enumeration_per_architecture():
    assert len(layer_groups(build_model("mlp", in_channels=3, num_outputs=5))) == 4
    assert len(layer_groups(build_model("cnn", in_channels=3, num_outputs=5))) == 4
    resnet = layer_groups(build_model("resnet18", in_channels=3, num_outputs=5))
    assert len(resnet) == 10
    assert resnet[0] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert resnet[-1] == ["fc.weight", "fc.bias"]


def test_unknown_architecture_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model.arch 'vit'"):
        build_model("vit", in_channels=1, num_outputs=2)


META = ModelMeta(arch="mlp", dataset="breastmnist", task="binary-class", in_channels=1, num_outputs=2, arch_options={"hidden": 32})


def test_save_and_load_round_trip(tmp_path):
    model = META.build()
    save_model(model, tmp_path / "m", META)
    loaded, meta, extra = load_model(tmp_path / "m")
    assert meta == META
    assert extra == []
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_extra_tensors_are_reported_and_not_exported(tmp_path):
    state = META.build().state_dict()
    state["payload.latent_codes"] = torch.randn(10, 16)
    save_file(state, str(tmp_path / "foreign.safetensors"))
    model, _, extra = load_model(tmp_path / "foreign.safetensors", META)
    assert extra == ["payload.latent_codes"]
    save_model(model, tmp_path / "clean", META)
    assert "payload.latent_codes" not in load_state_dict_file(tmp_path / "clean" / "model.safetensors")


class _Exploit:
    """Unpickling this object would run a shell command."""

    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/lakeguard-pwned",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    path = tmp_path / "model.pt"
    with open(path, "wb") as handle:
        pickle.dump({"fc.0.weight": _Exploit()}, handle)
    marker = "/tmp/lakeguard-pwned"
    import os

    if os.path.exists(marker):
        os.unlink(marker)
    with pytest.raises(ModelFileError, match="weights_only=True"):
        load_model(path, META)
    assert not os.path.exists(marker)


def test_plain_state_dict_pickle_loads(tmp_path):
    model = META.build()
    torch.save(model.state_dict(), tmp_path / "model.pth")
    loaded, _, extra = load_model(tmp_path / "model.pth", META)
    assert extra == []
    assert torch.equal(loaded.fc[0].weight, model.fc[0].weight)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.with_suffix(".safetensors").write_bytes(b"garbage"), "not a valid safetensors file"),
        (lambda p: torch.save([1, 2, 3], p.with_suffix(".pt")), "does not contain a state dict"),
        (lambda p: p.with_suffix(".onnx").write_bytes(b"x"), "has suffix '.onnx'"),
    ],
)
def test_unreadable_model_files(tmp_path, write, message):
    base = tmp_path / "model"
    write(base)
    path = next(tmp_path.iterdir())
    with pytest.raises(ModelFileError, match=message):
        load_model(path, META)


def test_shape_mismatch_names_tensor(tmp_path):
    other = ModelMeta(**{**META.to_dict(), "arch_options": {"hidden": 16}})
    save_file(other.build().state_dict(), str(tmp_path / "m.safetensors"))
    with pytest.raises(ModelFileError, match=r"tensor 'fc.0.weight' .* shape \(16, 784\)"):
        load_model(tmp_path / "m.safetensors", META)


def test_missing_tensors_are_named(tmp_path):
    state = META.build().state_dict()
    del state["fc.3.bias"]
    save_file(state, str(tmp_path / "m.safetensors"))
    with pytest.raises(ModelFileError, match="lacks 1 tensors.*fc.3.bias"):
        load_model(tmp_path / "m.safetensors", META)


def test_nan_weights_are_rejected(tmp_path):
    state = META.build().state_dict()
    state["fc.1.weight"][0, 0] = float("nan")
    save_file(state, str(tmp_path / "m.safetensors"))
    with pytest.raises(ModelFileError, match="NaN"):
        load_model(tmp_path / "m.safetensors", META)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "absent.safetensors", META)
