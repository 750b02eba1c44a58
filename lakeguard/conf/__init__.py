"""Hydra configuration of ``lakeguard run``: ``config.yaml`` and its groups.

A package, so that ``hydra.initialize_config_module("lakeguard.conf")`` finds it.
"""
