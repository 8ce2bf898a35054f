"""Tests of core.lazy: LazyCall, instantiate, LazyConfig.load/save/apply_overrides, get_config."""

import dataclasses
import os
import sys

import pytest
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

import core.lazy as lazy
from core.lazy import LazyCall as L
from core.lazy import LazyConfig, get_config, instantiate
from tests.core.lazy_configs import targets
from tests.core.lazy_configs.targets import Recorder

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lazy_configs")
RECORDER = "tests.core.lazy_configs.targets.Recorder"


def load(name, keys=None):
    return LazyConfig.load(os.path.join(CONFIGS, name), keys)


def stringify_targets(value):
    """A container tree with callable ``_target_`` values replaced by their dotted names."""
    if isinstance(value, dict):
        out = {k: stringify_targets(v) for k, v in value.items()}
        if callable(out.get("_target_")):
            out["_target_"] = lazy._target_to_string(out["_target_"], "_target_")
        return out
    if isinstance(value, list):
        return [stringify_targets(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# LazyCall and instantiate
# ---------------------------------------------------------------------------


def test_lazycall_builds_a_config_allowing_objects():
    cfg = L(Recorder)(a=1, b=L("tests.core.lazy_configs.targets.Recorder")(c=2))
    assert isinstance(cfg, DictConfig)
    assert cfg._target_ is Recorder and cfg.a == 1 and cfg.b._target_ == RECORDER
    net = torch.nn.Linear(2, 2)
    cfg.net = net
    assert cfg.net is net


def test_lazycall_rejects_non_callable_targets():
    with pytest.raises(TypeError, match="callable"):
        L(3)


def test_instantiate_calls_targets_recursively_and_resolves_interpolations():
    cfg = load("top.py")
    model = instantiate(cfg.model)
    assert model.kwargs["num_classes"] == 3
    assert model.kwargs["head"] == Recorder(num_classes=3, names=["cat", "dog"])
    assert model.kwargs["size"] == [800, 1333]
    assert model.kwargs["stages"] == [Recorder(depth=2), Recorder(depth=4)]
    assert isinstance(model.kwargs["stages"], list)


def test_instantiate_optimizer_with_model_stored_in_config():
    cfg = load("top.py")
    net = torch.nn.Linear(4, 2)
    cfg.optimizer.params.model = net
    cfg.optimizer.lr = 0.05
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 1e-4 and group["momentum"] == 0.9
    assert group["params"][0] is net.weight


def test_instantiate_keeps_stored_objects_by_identity():
    cfg = load("top.py")
    net = torch.nn.Linear(2, 2)
    cfg.model.backbone = net
    cfg.model.head.modules = [net]
    model = instantiate(cfg.model)
    assert model.kwargs["backbone"] is net
    assert model.kwargs["head"].kwargs["modules"][0] is net


def test_instantiate_returns_non_target_values_unchanged():
    cfg = DictConfig({"a": {"b": 1, "c": "${.b}"}})
    assert instantiate(cfg.a) is cfg.a
    assert instantiate(cfg.a).c == 1
    assert instantiate(5) == 5
    assert instantiate([L(Recorder)(x=1), 2]) == [Recorder(x=1), 2]
    assert instantiate({"_target_": RECORDER, "x": 1}) == Recorder(x=1)


def test_instantiate_error_names_the_config_path_and_target():
    cfg = load("top.py")
    cfg.model.head = L(targets.fail)(x=1)
    with pytest.raises(ValueError, match=r"'model\.head' \(target tests\.core\.lazy_configs\.targets\.fail\)") as info:
        instantiate(cfg.model)
    assert "bad arguments" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_instantiate_error_for_unknown_target_name():
    cfg = DictConfig({"m": {"_target_": "tests.core.lazy_configs.targets.NoSuchThing"}})
    with pytest.raises(ImportError, match=r"'m'.*NoSuchThing"):
        instantiate(cfg.m)


# ---------------------------------------------------------------------------
# LazyConfig.load
# ---------------------------------------------------------------------------


def test_load_python_config_with_relative_imports():
    cfg = load("top.py")
    assert set(cfg.keys()) == {"model", "optimizer", "train"}
    assert cfg.train.max_iter == 200 and cfg.train.output_dir == "./output/top"
    assert cfg.train.amp.enabled is False and cfg.train.init_checkpoint is None
    assert cfg.optimizer._target_ is torch.optim.SGD
    assert cfg.optimizer.params.base_lr == 0.1  # interpolation resolved on access
    assert isinstance(cfg.model.stages, ListConfig)


def test_load_nested_config_with_parent_and_sibling_imports():
    cfg = load("experiments/small.py")
    assert set(cfg.keys()) == {"model", "optimizer", "train", "lr_multiplier"}
    assert cfg.model.num_classes == 5 and cfg.model.head.num_classes == 5
    assert cfg.train.max_iter == 10
    assert cfg.optimizer.params.base_lr == 0.02
    assert instantiate(cfg.lr_multiplier) == Recorder(milestones=[8, 9], max_iter=10)


def test_load_rel_from_a_config_file():
    cfg = load("experiments/via_load_rel.py")
    assert cfg.model.hidden_dim == 32 and cfg.model.num_classes == 3


def test_load_rel_from_the_calling_file():
    cfg = LazyConfig.load_rel("lazy_configs/top.py", "train")
    assert cfg.max_iter == 200


def test_each_load_executes_config_files_afresh():
    before = targets.LOAD_COUNTS["common/train.py"]
    first = load("top.py")
    first.train.max_iter = 1
    first.model.head.names.append("bird")
    second = load("experiments/small.py")
    third = load("top.py")
    assert targets.LOAD_COUNTS["common/train.py"] == before + 3
    assert third.train.max_iter == 200 and list(third.model.head.names) == ["cat", "dog"]
    assert second.train.max_iter == 10
    assert not any(name.startswith("lazy_config:") for name in sys.modules)  # never cached


def test_load_selects_keys():
    train = load("top.py", "train")
    assert train.max_iter == 200
    model, train = load("top.py", ("model", "train"))
    assert model.num_classes == 3 and train.max_iter == 200
    with pytest.raises(KeyError, match="nope"):
        load("top.py", "nope")


def test_relative_import_of_missing_file_names_the_resolved_path():
    expected = os.path.join(CONFIGS, "common", "does_not_exist.py")
    with pytest.raises(ImportError, match=expected.replace("\\", "\\\\").replace(".", r"\.")):
        load("missing_import.py")
    with pytest.raises(ImportError, match=r"common.nope\.py"):
        load("missing_sibling.py")


def test_load_missing_file_and_unsupported_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load("nope.py")
    bad = tmp_path / "config.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="extension"):
        LazyConfig.load(str(bad))


def test_load_yaml_config():
    cfg = load("base.yaml")
    assert cfg.train.scaled_lr == 0.5
    cfg.model.backbone = torch.nn.Identity()  # objects are allowed
    model = instantiate(cfg.model)
    assert model.kwargs["head"] == Recorder(num_classes=4)


def test_get_config(monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"configs.*no_such_config\.py"):
        get_config("no_such_config.py")
    monkeypatch.setattr(lazy, "_CONFIGS_DIR", CONFIGS)
    assert get_config("common/train.py").train.max_iter == 100


# ---------------------------------------------------------------------------
# LazyConfig.save
# ---------------------------------------------------------------------------


def test_save_then_load_gives_an_equivalent_config(tmp_path):
    cfg = load("experiments/small.py")
    original = OmegaConf.to_container(cfg, resolve=False)
    path = tmp_path / "config.yaml"
    LazyConfig.save(cfg, str(path))

    assert cfg.optimizer._target_ is torch.optim.SGD  # input not mutated
    text = path.read_text()
    assert "${..lr}" in text and "${..num_classes}" in text
    assert "_target_: torch.optim.SGD" in text and f"_target_: {RECORDER}" in text
    assert not [p for p in os.listdir(tmp_path) if p != "config.yaml"]  # no temp file left

    loaded = LazyConfig.load(str(path))
    assert OmegaConf.to_container(loaded, resolve=False) == stringify_targets(original)
    assert instantiate(loaded.model) == instantiate(cfg.model)
    assert instantiate(loaded.lr_multiplier) == instantiate(cfg.lr_multiplier)
    loaded.optimizer.params.model = torch.nn.Linear(2, 2)
    assert instantiate(loaded.optimizer).param_groups[0]["lr"] == 0.02


def test_save_keeps_strings_that_look_like_numbers(tmp_path):
    cfg = DictConfig({"a": "1e-4", "b": "true", "c": 1e-4, "d": "???", "e": "null"})
    LazyConfig.save(cfg, str(tmp_path / "c.yaml"))
    loaded = LazyConfig.load(str(tmp_path / "c.yaml"))
    assert OmegaConf.to_container(loaded, resolve=False) == OmegaConf.to_container(cfg, resolve=False)


def test_save_writes_yaml_and_a_pickle_for_values_yaml_cannot_hold(tmp_path, caplog):
    """detectron2's behaviour: the yaml that can be written, plus the complete config in ``.pkl``."""
    cfg = load("top.py")
    cfg.optimizer.lr_factor_func = lambda name: 0.1 if "backbone" in name else 1.0
    cfg.model.head._target_ = lambda **kw: kw
    path = tmp_path / "config.yaml"
    with caplog.at_level("WARNING", logger="core.lazy"):
        LazyConfig.save(cfg, str(path))
    assert "'optimizer.lr_factor_func'" in caplog.text and "'model.head._target_'" in caplog.text
    from_yaml = LazyConfig.load(str(path))
    assert from_yaml.train.max_iter == 200 and "not representable in yaml" in from_yaml.optimizer.lr_factor_func
    from_pickle = LazyConfig.load(str(path) + ".pkl")
    assert from_pickle.optimizer.lr_factor_func("backbone.conv1") == 0.1
    assert instantiate(from_pickle.model).kwargs["head"]["num_classes"] == 3
    del cfg.optimizer.lr_factor_func, cfg.model.head
    LazyConfig.save(cfg, str(path))
    assert not (tmp_path / "config.yaml.pkl").exists()  # a stale pickle would contradict the yaml
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]


def test_save_of_an_object_writes_a_placeholder_naming_it(tmp_path):
    cfg = load("top.py")
    cfg.optimizer.params.model = torch.nn.Linear(2, 2)
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    assert "Linear" in LazyConfig.load(str(tmp_path / "config.yaml")).optimizer.params.model
    assert isinstance(LazyConfig.load(str(tmp_path / "config.yaml.pkl")).optimizer.params.model, torch.nn.Linear)


@dataclasses.dataclass
class Shape:
    channels: int | None = None
    width: int | None = None
    stride: int = 1


def test_lazycall_of_a_dataclass_instantiates_the_dataclass(tmp_path):
    cfg = L(Shape)(channels=1, width=3)
    nested = L(Recorder)(shape=Shape(channels=2), shapes=[Shape(width=5)], spec=L(Shape)(stride=4))
    for config in (cfg, nested):
        LazyConfig.save(config, str(tmp_path / "c.yaml"))
        assert "_target_: tests.core.test_lazy.Shape" in (tmp_path / "c.yaml").read_text()
    assert instantiate(cfg) == Shape(channels=1, width=3)
    assert instantiate(LazyConfig.load(str(tmp_path / "c.yaml"))) == instantiate(nested)
    built = instantiate(nested)
    assert built.kwargs == {"shape": Shape(channels=2), "shapes": [Shape(width=5)], "spec": Shape(stride=4)}


def test_a_lazy_call_can_be_the_target(tmp_path):
    """The target is instantiated first (here into a callable object), then called with the arguments."""
    cfg = L(L(targets.Scale)(factor=3))(value=4)
    LazyConfig.save(cfg, str(tmp_path / "c.yaml"))
    assert instantiate(cfg) == instantiate(LazyConfig.load(str(tmp_path / "c.yaml"))) == 12


def test_to_py_writes_the_resolved_config_as_formatted_python():
    cfg = DictConfig(
        {
            "train": {"max_iter": 10, "output_dir": "./out", "tags": ["a", 1]},
            "model": L(Recorder)(num_classes=3, head=L(Recorder)(dim="${..num_classes}", opts={"b": 2, "a": 1.5})),
        },
        flags={"allow_objects": True},
    )
    expected = (
        "cfg.model = tests.core.lazy_configs.targets.Recorder(\n"
        '    head=tests.core.lazy_configs.targets.Recorder(dim=3, opts={"a": 1.5, "b": 2}),\n'
        "    num_classes=3,\n"
        ")\n"
        "cfg.train.max_iter = 10\n"
        'cfg.train.output_dir = "./out"\n'
        'cfg.train.tags = ["a", 1]\n'
    )
    assert LazyConfig.to_py(cfg) == expected
    assert LazyConfig.to_py(DictConfig({"x": 1}), prefix="c.") == "c.x = 1\n"
    code = LazyConfig.to_py(DictConfig({"net": torch.nn.Identity()}, flags={"allow_objects": True}))
    assert code == "cfg.net = Identity()\n"


def test_load_returns_any_top_level_value_by_key():
    assert load("values/plain.py", "name") == "plain"
    ratio, sizes, settings = load("values/plain.py", ("ratio", "sizes", "settings"))
    assert ratio == 0.25 and sizes == [1, 2] and isinstance(settings, DictConfig) and settings.depth == 3
    assert set(load("values/plain.py")) == {"settings"}  # without keys: only the configs
    assert load("values/via_load_rel.py").derived == {"name": "plain_derived", "depth": 4}
    with pytest.raises(KeyError, match="Did you mean 'ratio'"):
        load("values/plain.py", "ration")


def test_bad_relative_imports_say_relative_import():
    with pytest.raises(ImportError, match="relative import"):
        load("values/bad_dir_import.py")
    with pytest.raises(ImportError, match="relative import.*does not exist"):
        load("missing_import.py")


def test_get_config_next_to_relative_imports():
    assert load("values/with_get_config.py").train.max_iter == 300


# ---------------------------------------------------------------------------
# LazyConfig.apply_overrides
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("train.max_iter=5", "train.max_iter", 5),
        ("optimizer.lr=0.01", "optimizer.lr", 0.01),
        ("optimizer.lr=1", "optimizer.lr", 1),
        ("train.eval_period=2", "train.eval_period", 2),
        ("train.output_dir=./out/run1", "train.output_dir", "./out/run1"),
        ("train.output_dir='with space'", "train.output_dir", "with space"),
        ('train.output_dir="123"', "train.output_dir", "123"),
        ("model.head.names=[a,b,c]", "model.head.names", ["a", "b", "c"]),
        ("model.size=[1,2]", "model.size", [1, 2]),
        ("train.init_checkpoint=null", "train.init_checkpoint", None),
        ("train.init_checkpoint=/tmp/model.pth", "train.init_checkpoint", "/tmp/model.pth"),
        ("train.max_iter=null", "train.max_iter", None),
        ("train.amp.enabled=true", "train.amp.enabled", True),
        ("train.max_iter=${train.log_period}", "train.max_iter", 20),
    ],
)
def test_apply_overrides_sets_values(override, key, expected):
    cfg = load("top.py")
    assert LazyConfig.apply_overrides(cfg, [override]) is cfg
    value = OmegaConf.select(cfg, key)
    value = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
    assert value == expected and type(value) is type(expected)


def test_apply_overrides_keeps_interpolations_working():
    cfg = LazyConfig.apply_overrides(load("top.py"), ["optimizer.lr=0.3"])
    assert cfg.optimizer.params.base_lr == 0.3


def test_apply_overrides_merges_dicts():
    cfg = LazyConfig.apply_overrides(load("top.py"), ["train.amp={enabled:true,dtype:bf16}"])
    assert cfg.train.amp == {"enabled": True, "dtype": "bf16"}


def test_unknown_key_error_suggests_the_closest_key():
    cfg = load("top.py")
    with pytest.raises(KeyError) as info:
        LazyConfig.apply_overrides(cfg, ["train.max_itr=5"])
    message = str(info.value)
    assert "'train.max_itr'" in message and "Did you mean 'train.max_iter'?" in message
    assert "+train.max_itr=" in message


def test_add_and_delete_keys():
    cfg = load("top.py")
    LazyConfig.apply_overrides(cfg, ["+new.key=1", "+train.seed=7", "~train.amp", "++train.max_iter=3"])
    assert cfg.new.key == 1 and cfg.train.seed == 7 and cfg.train.max_iter == 3
    assert "amp" not in cfg.train
    with pytest.raises(KeyError, match="already exists"):
        LazyConfig.apply_overrides(cfg, ["+train.seed=8"])
    with pytest.raises(KeyError, match="Did you mean 'train.log_period'"):
        LazyConfig.apply_overrides(cfg, ["~train.log_perod"])


def test_quoted_string_is_stored_as_a_string():
    cfg = load("top.py")
    LazyConfig.apply_overrides(cfg, ['train.max_iter="123"', "train.output_dir='456'", "train.amp.enabled='yes'"])
    assert cfg.train.max_iter == "123" and cfg.train.output_dir == "456" and cfg.train.amp.enabled == "yes"


def test_type_mismatch_is_an_error():
    cfg = load("top.py")
    with pytest.raises(ValueError, match=r"'train\.max_iter' holds 200 of type int.*'abc'"):
        LazyConfig.apply_overrides(cfg, ["train.max_iter=abc"])
    with pytest.raises(ValueError, match=r"'train\.amp\.enabled' holds False of type bool"):
        LazyConfig.apply_overrides(cfg, ["train.amp.enabled=[1]"])
    assert cfg.train.max_iter == 200


@pytest.mark.parametrize("override", ["train.max_iter", "=3", "train.max_iter=1,2", "a b=1"])
def test_malformed_override_is_an_error(override):
    with pytest.raises(ValueError, match=repr(override).replace(".", r"\.")):
        LazyConfig.apply_overrides(load("top.py"), [override])
