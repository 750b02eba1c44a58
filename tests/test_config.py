"""The run configuration as a pipeline parameter: typed, closed, and free of interpolations."""

import json

import pytest

from lakeguard.config import RunConfig, from_json, to_json
from lakeguard.errors import ConfigError


def _config_dict() -> dict:
    cfg = RunConfig(run_dir="/tmp/run")
    return json.loads(to_json(cfg))


def test_round_trip_keeps_values():
    data = _config_dict()
    data["sanitize"]["base_lr"] = 0.002
    cfg = from_json(json.dumps(data))
    assert cfg.sanitize.base_lr == 0.002
    assert cfg.run_dir == "/tmp/run"


def test_policy_file_is_not_a_run_option():
    data = _config_dict()
    data["policy_file"] = "/tmp/loose.yaml"
    with pytest.raises(ConfigError, match="policy_file"):
        from_json(json.dumps(data))


def test_unknown_key_is_rejected():
    data = _config_dict()
    data["gate"]["max_reid"] = 0.5
    with pytest.raises(ConfigError, match="max_reid"):
        from_json(json.dumps(data))


def test_interpolation_is_rejected_with_its_path():
    data = _config_dict()
    data["sanitize"]["optimizer"] = "${oc.env:REGISTRY_SECRET,adam}"
    with pytest.raises(ConfigError, match=r"sanitize\.optimizer contains an interpolation"):
        from_json(json.dumps(data))


def test_wrong_type_is_rejected():
    data = _config_dict()
    data["train"]["epochs"] = "many"
    with pytest.raises(ConfigError, match="epochs"):
        from_json(json.dumps(data))


def test_not_json_is_rejected():
    with pytest.raises(ConfigError, match="not JSON"):
        from_json("{broken")
