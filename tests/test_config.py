import pytest

from scnf.config import ConfigError, demo_config, dump_config, from_dict, load_config


def test_round_trip_dump_and_load(tmp_path):
    cfg = demo_config(seed=3)
    p = tmp_path / "c.toml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


@pytest.mark.parametrize("raw,match", [
    ({"train": {"stepz": 3}}, "unknown config key 'train.stepz'"),
    ({"optimizer": {}}, "unknown config key 'optimizer'"),
    ({"train": {"steps": "10"}}, "'train.steps' must be an integer"),
    ({"train": {"steps": 1.5}}, "'train.steps' must be an integer"),
    ({"train": {"lr": "fast"}}, "'train.lr' must be a number"),
    ({"model": {"lu": 1}}, "'model.lu' must be true or false"),
    ({"train": {"optimisation": "adam"}}, "'train.optimisation' must be one of"),
    ({"data": {"dataset": "cifar"}}, "'data.dataset' must be one of"),
    ({"train": {"steps": 0}}, "'train.steps' must be positive"),
    ({"train": {"labelled_share": 1.0}}, "'train.labelled_share'"),
    ({"data": 3}, "'data' must be a table"),
    ({"train": {"augment_shift": -1}}, "'train.augment_shift'"),
    ({"train": {"consistency_weight": 1.0}}, "needs 'train.augment_shift'"),
    ({"train": {"consistency_weight": -1.0}}, "'train.consistency_weight' must be non-negative"),
    ({"train": {"consistency_temperature": 0.0}}, "'train.consistency_temperature' must be positive"),
    ({"train": {"micro_batch": -1}}, "'train.micro_batch' must be non-negative"),
])
def test_bad_configs_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(raw)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_shipped_configs_load():
    from pathlib import Path

    paths = sorted((Path(__file__).parent.parent / "configs").rglob("*.toml"))
    assert paths
    for p in paths:
        load_config(p)


def test_demo_config_matches_shipped_moons_config():
    from pathlib import Path

    cfg = load_config(Path(__file__).parent.parent / "configs" / "moons.toml")
    assert cfg == demo_config()
