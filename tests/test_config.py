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
    # keys that would silently do nothing
    ({"model": {"init_from_labels": True}}, "'model.init_from_labels' needs 'model.h_class_affine' = true"),
    ({"model": {"conditional": "ffjord", "init_from_labels": True}}, "'model.init_from_labels' has nothing"),
    ({"model": {"conditional": "gmm", "h_class_affine": True}}, "'model.h_class_affine' applies to conditional"),
    ({"model": {"ffjord_train_tol": 1e-3}}, "'model.ffjord_train_tol' applies to FFJORD parts only"),
    ({"model": {"lu": True}}, "'model.lu' applies to image models only"),
    ({"train": {"augment_shift": 2}}, "'train.augment_shift' applies to image data only"),
    ({"data": {"dataset": "mnist"}, "train": {"input_noise": 0.1}}, "'train.input_noise' applies to vector data"),
    ({"data": {"dataset": "mnist"}, "model": {"h_net": "resmlp"}}, "'model.h_net' applies to vector data only"),
    ({"model": {"h_net": "cnn"}}, "'model.h_net' must be 'mlp' or 'resmlp'"),
    ({"model": {"conditional": "gmm", "embed_dim": 4}}, "'model.embed_dim' applies to conditional = 'glow'"),
    ({"data": {"dataset": "mnist"}, "model": {"kind": "m2", "embed_dim": 4}},
     "'model.embed_dim' applies to model.kind = 'scnf' only"),
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


@pytest.mark.parametrize("model", [{"conditional": "gmm", "init_from_labels": True},
                                   {"conditional": "glow", "init_from_labels": True, "h_class_affine": True},
                                   {"conditional": "glow", "h_class_affine": True},
                                   {"unconditional": "ffjord", "ffjord_train_tol": 1e-3}])
def test_class_aware_and_ffjord_keys_accepted_where_they_act(model):
    from_dict({"model": model})


def test_init_from_labels_with_plain_glow_h_would_change_nothing():
    """Why it is refused: with a Glow h and no class-affine layer, class_aware_init sets nothing
    from the labels (the model after it is the same as after a plain first forward)."""
    import torch

    import scnf
    from scnf.models.flow import class_aware_init

    x = torch.randn(64, 2)
    y = torch.full((64,), -1)
    y[:4] = torch.tensor([0, 0, 1, 1])
    torch.manual_seed(0)
    a = scnf.vector_scnf(2, 2, blocks=1, hidden=8, h_blocks=1, h_hidden=8)
    torch.manual_seed(0)
    b = scnf.vector_scnf(2, 2, blocks=1, hidden=8, h_blocks=1, h_hidden=8)
    class_aware_init(a, x, y)
    b.train()
    b.log_joint(x)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb), k


def test_overrides_apply_and_validate():
    from scnf.config import ConfigError, RunConfig, with_overrides

    cfg = with_overrides(RunConfig(), ["data.split_seed=2", "train.lr=0.5", "model.conditional=gmm", "seed=7",
                                       'data.dataset="circles"'])
    assert (cfg.data.split_seed, cfg.train.lr, cfg.model.conditional, cfg.seed, cfg.data.dataset) == \
        (2, 0.5, "gmm", 7, "circles")
    for bad, match in (("data.split_seed", "section.key=value"), ("train.nope=1", "unknown config key"),
                       ("train.steps=-1", "positive"), ("foo.bar=1", "expected seed"),
                       ("train.steps=abc", "integer")):
        with pytest.raises(ConfigError, match=match):
            with_overrides(RunConfig(), [bad])


def test_the_model_kinds_registry_drives_config_and_building():
    """One declaration of the kinds (scnf.config.MODEL_KINDS) and one registry of builders
    (scnf.models.registry.BUILDERS): every declared kind has a builder, and build_model builds
    the kind the config names."""
    import torch

    from scnf.runs.run import build_model
    from scnf.protocol import TrainableModel
    from scnf.config import FLOW_KEYS, MODEL_KINDS, VAE_KEYS
    from scnf.models.registry import BUILDERS
    from scnf.data.batches import SemiSupervisedData

    assert set(MODEL_KINDS) == set(BUILDERS) == {"scnf", "m1", "m2", "m1m2"}
    assert set(MODEL_KINDS["m2"].keys) < set(VAE_KEYS) and MODEL_KINDS["scnf"].keys == FLOW_KEYS
    data = SemiSupervisedData(torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8),
                              torch.tensor([0, 1] * 10), images=True)
    for name, kind in MODEL_KINDS.items():
        cfg = from_dict({"data": {"dataset": "mnist"}, "model": {"kind": name}})
        model = build_model(cfg, data)
        assert isinstance(model, TrainableModel), name
        assert kind.flow == (name == "scnf")
        groups = model.parameter_groups()
        assert sorted(id(p) for ps in groups.values() for p in ps) == sorted(id(p) for p in model.parameters())


def test_the_key_reference_lists_every_key_with_its_default_and_meaning(capsys):
    """scnf config --defaults: every key of every section, with a meaning, and the file it
    prints reads back as the default config."""
    import tomllib

    from scnf.cli import main
    from scnf.config import RunConfig, key_reference

    ref = key_reference()
    keys = {(sec, key) for sec, key, _, _ in ref}
    for sec in ("data", "model", "train"):
        assert {(sec, f) for f in getattr(RunConfig(), sec).__dataclass_fields__} <= keys, sec
    missing = [f"{sec}.{key}" for sec, key, _, meaning in ref if not meaning]
    assert not missing, f"keys without a meaning: {missing}"
    assert main(["config", "--defaults"]) == 0
    text = capsys.readouterr().out
    assert from_dict(tomllib.loads(text)) == RunConfig()
