"""Insider attack recipes: how a researcher inside the lake hides training images in a model."""

from lakeguard.attacks.transpose import (
    Canaries,
    code_groups,
    codes_for_groups,
    gray_code,
    select_canaries,
    train_transpose,
)

__all__ = [
    "Canaries",
    "code_groups",
    "codes_for_groups",
    "gray_code",
    "select_canaries",
    "train_transpose",
]
