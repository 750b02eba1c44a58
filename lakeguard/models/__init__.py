"""Model architectures that lakeguard can train, audit and sanitize, and their safe file format."""

from lakeguard.models.cnn import TransposableCNN
from lakeguard.models.io import ModelMeta, load_model, load_state_dict_file, save_model
from lakeguard.models.mlp import TransposableMLP
from lakeguard.models.registry import ARCHITECTURES, build_model, layer_groups
from lakeguard.models.resnet import ResNet18

__all__ = [
    "ARCHITECTURES",
    "ModelMeta",
    "ResNet18",
    "TransposableCNN",
    "TransposableMLP",
    "build_model",
    "layer_groups",
    "load_model",
    "load_state_dict_file",
    "save_model",
]
