"""lakeguard: the release gate between a medical-imaging data lake and the outside world.

It audits a model for training images hidden in its weights (transpose attack, extra tensors),
sanitizes it with layer-wise learning-rate-decay fine-tuning, checks that utility survived and the
leak did not, and publishes only what passes. Subpackages: ``data``, ``models``, ``attacks``,
``audit``, ``defenses``, ``metrics``, ``gate``, ``registry``, ``observability``; ``steps`` contains the
pipeline steps and ``cli`` the ``lakeguard`` command.
"""

__version__ = "0.1.0"
