"""detectron2-style lazy configs on top of omegaconf and hydra's override grammar.

A lazy config is a tree of omegaconf ``DictConfig``/``ListConfig`` nodes in which
a mapping with a ``_target_`` key describes a call: ``LazyCall(f)(a=1)`` builds
``{"_target_": f, "a": 1}`` and :func:`instantiate` later performs ``f(a=1)``.

* :class:`LazyConfig` loads Python configs (relative imports between config
  files are resolved by path, every file is executed afresh on each load) and
  yaml configs, saves configs as yaml that loads back to an equivalent config,
  and applies command-line overrides (``key=value``, ``+key=value``, ``~key``)
  with errors that name the key.
* :func:`get_config` loads a file from the repository's ``configs/`` directory.

All configs are created with ``allow_objects``, so arbitrary objects (an
``nn.Module``, a class) can be stored in them and are passed to the called
targets by identity, never copied.
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import importlib
import inspect
import logging
import os
import pickle
import types
from collections import abc
from collections.abc import Iterator
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, QuotedString
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf, SCMode

from .fileio import write_text

__all__ = ["LazyCall", "LazyConfig", "instantiate", "get_config", "iter_calls", "locate"]

logger = logging.getLogger(__name__)

_FLAGS = {"allow_objects": True}
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIGS_DIR = os.path.join(_REPO_ROOT, "configs")
_YAML_SUFFIXES = (".yaml", ".yml")
_PRIMITIVES = (type(None), bool, int, float, str, bytes)


class LazyCall:
    """Records a call to ``target`` as a config instead of performing it.

    ``LazyCall(torch.optim.SGD)(lr=0.1)`` returns the ``DictConfig``
    ``{"_target_": torch.optim.SGD, "lr": 0.1}``; :func:`instantiate` calls it.

    Args:
        target: a callable, or the dotted import name of one (``"torch.optim.SGD"``).

    Raises:
        TypeError: if ``target`` is neither callable nor a string.
    """

    def __init__(self, target: Any):
        if not (callable(target) or isinstance(target, (str, abc.Mapping))):
            raise TypeError(
                f"LazyCall target must be a callable, a dotted name string or a lazy call (a config that "
                f"instantiates to a callable), got {target!r}"
            )
        self._target = target

    def __call__(self, **kwargs: Any) -> DictConfig:
        """Returns the config of the call ``target(**kwargs)``."""
        target = self._target
        if isinstance(target, type) and (dataclasses.is_dataclass(target) or issubclass(target, (dict, list, tuple))):
            # omegaconf would turn a dataclass type into a structured config of its fields (and cannot hold a
            # container type at all): keep its dotted name instead, e.g. "builtins.dict" for L(dict)(a=...)
            target = _target_to_string(target, "_target_")
        return DictConfig(content={"_target_": target, **kwargs}, flags=_FLAGS)


# ---------------------------------------------------------------------------
# instantiate
# ---------------------------------------------------------------------------


def instantiate(cfg: Any) -> Any:
    """Recursively performs the calls described by a lazy config.

    * ``list``/``ListConfig``: a Python list of the instantiated items.
    * a mapping with ``_target_``: its values are instantiated first (the target
      too: a lazy call that builds a callable is a valid target), then the target
      (a callable, or a dotted name that is imported) is called with them as
      keyword arguments. Interpolations such as ``${..lr}`` are resolved as the
      values are read; stored objects are passed on by identity.
    * a config backed by a dataclass (omegaconf turns a dataclass instance stored
      in a config into one): that dataclass instance.
    * anything else (including a ``DictConfig`` without ``_target_``) is
      returned unchanged, as in detectron2.

    Args:
        cfg: a config node or any value.

    Returns:
        The instantiated object.

    Raises:
        Exception: an error raised by a target is re-raised, chained, with a
            message naming the config path and the target.
    """
    return _instantiate(cfg, _node_path(cfg))


def _node_path(cfg: Any) -> str:
    """The dotted path of a config node inside its root config ("" for a root or a non-node)."""
    if not isinstance(cfg, DictConfig):
        return ""
    try:
        return cfg._get_full_key(None) or ""
    except Exception:  # a detached or unusual node: the path is only cosmetic
        return ""


def _join(path: str, key: Any) -> str:
    """Joins a dotted config path and a child key (list indices as ``[i]``)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _instantiate(cfg: Any, path: str) -> Any:
    if isinstance(cfg, (ListConfig, list)):
        return [_instantiate(item, _join(path, i)) for i, item in enumerate(cfg)]
    if isinstance(cfg, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(cfg)):
        return OmegaConf.to_object(cfg)
    if isinstance(cfg, abc.Mapping) and "_target_" in cfg:
        kwargs = {key: _instantiate(value, _join(path, key)) for key, value in cfg.items()}
        target = kwargs.pop("_target_")
        return _call_target(target, kwargs, path)
    return cfg


def _call_target(target: Any, kwargs: dict, path: str) -> Any:
    """Calls ``target(**kwargs)``, naming the config path in any error."""
    where = repr(path) if path else "the config root"
    if isinstance(target, str):
        try:
            target = locate(target)
        except ImportError as e:
            raise ImportError(f"Error when instantiating {where}: cannot import _target_ {target!r}: {e}") from e
    if not callable(target):
        raise TypeError(f"Error when instantiating {where}: _target_ {target!r} is not callable")
    try:
        return target(**kwargs)
    except Exception as e:
        message = f"Error when instantiating {where} (target {_describe(target)}): {type(e).__name__}: {e}"
        raise _same_type_error(e, message) from e


def _describe(target: Any) -> str:
    """``module.qualname`` of a target, or its repr."""
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(target)


def _same_type_error(error: Exception, message: str) -> Exception:
    """An exception of ``error``'s type carrying ``message`` (a RuntimeError if that type cannot)."""
    try:
        new = type(error)(message)
    except Exception:
        return RuntimeError(message)
    return new if message in str(new) else RuntimeError(message)


def locate(name: str) -> Any:
    """Imports the object with dotted name ``name`` (``"torch.optim.SGD"``).

    Raises:
        ImportError: if no module prefix imports or an attribute is missing.
    """
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name + ".").startswith(e.name + "."):
                continue  # this prefix is not a module: try a shorter one
            raise
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise ImportError(f"{name!r}: module or object {_describe_module(obj)!r} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"{name!r}: no module named {parts[0]!r}")


def _describe_module(obj: Any) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


# ---------------------------------------------------------------------------
# loading Python configs
# ---------------------------------------------------------------------------


def _cast_to_config(value: Any) -> Any:
    """Converts a plain dict into a ``DictConfig`` that allows objects."""
    return DictConfig(value, flags=_FLAGS) if isinstance(value, dict) else value


def _exec_config_file(filename: str, module_name: str) -> types.ModuleType:
    """Executes a Python config file as a fresh module (never put in ``sys.modules``).

    Relative imports inside it are resolved by path (see :func:`_config_import`);
    its public top-level dicts are converted to ``DictConfig``.
    """
    module = types.ModuleType(module_name)
    config_builtins = dict(vars(builtins))
    config_builtins["__import__"] = _config_import
    module.__dict__.update(__file__=filename, __builtins__=config_builtins)
    with open(filename, encoding="utf-8") as f:
        source = f.read()
    exec(compile(source, filename, "exec"), module.__dict__)
    for name, value in list(vars(module).items()):
        if not name.startswith("_"):
            setattr(module, name, _cast_to_config(value))
    return module


def _config_import(name, globals_=None, locals_=None, fromlist=(), level=0):
    """``__import__`` of config files: relative imports load config files by path."""
    if level == 0 or not globals_ or "__file__" not in globals_:
        return builtins.__import__(name, globals_, locals_, fromlist, level)
    base = os.path.dirname(globals_["__file__"])
    for _ in range(level - 1):
        base = os.path.dirname(base)
    target = os.path.join(base, *name.split(".")) if name else base
    module_name = f"{globals_.get('__name__', 'config')}:{'.' * level}{name}"
    if os.path.isfile(target + ".py"):
        return _exec_config_file(target + ".py", module_name)
    if os.path.isdir(target):
        return _ConfigDirModule(target, module_name)
    raise ImportError(
        f"Cannot resolve the relative import {'.' * level + name!r} of config {globals_['__file__']!r}: "
        f"config file {target + '.py'!r} does not exist (a relative import in a config loads a config file by path)"
    )


class _ConfigDirModule(types.ModuleType):
    """A directory of config files seen as a package: ``from .common import optim``.

    Each attribute loads ``<dir>/<name>.py`` (or a sub-directory) on first access.
    """

    def __init__(self, directory: str, module_name: str):
        super().__init__(module_name)
        self.__file__ = directory
        self.__path__ = [directory]

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        path = os.path.join(self.__file__, attr)
        if os.path.isfile(path + ".py"):
            value = _exec_config_file(path + ".py", f"{self.__name__}.{attr}")
        elif os.path.isdir(path):
            value = _ConfigDirModule(path, f"{self.__name__}.{attr}")
        else:
            raise ImportError(
                f"Cannot import {attr!r} from config directory {self.__file__!r} (relative import): "
                f"{path + '.py'!r} does not exist"
            )
        setattr(self, attr, value)
        return value


def _load_python(filename: str, keys: None | str | tuple[str, ...] | list[str]) -> Any:
    """Executes a Python config; returns its public top-level configs, or the named values of ``keys``."""
    module = _exec_config_file(filename, f"lazy_config:{filename}")
    if keys is not None:
        return _select_keys(vars(module), keys, filename)
    ret = {}
    for name, value in vars(module).items():
        if not name.startswith("_") and isinstance(value, (DictConfig, ListConfig)):
            ret[name] = value
    return DictConfig(ret, flags=_FLAGS)


def _load_pickle(filename: str) -> DictConfig:
    """A config pickled by :meth:`LazyConfig.save` (``config.yaml.pkl``)."""
    import cloudpickle  # noqa: F401  (registers nothing, but the pickle may need its reducers installed)

    with open(filename, "rb") as f:
        cfg = pickle.load(f)
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{filename!r} holds a {type(cfg).__name__}, not a config")
    return cfg


def _load_yaml(filename: str) -> DictConfig:
    cfg = OmegaConf.load(filename)
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"Config file {filename!r} must contain a mapping at the top level, got a list")
    return DictConfig(cfg, flags=_FLAGS)


# ---------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------


def _target_to_string(target: Any, key: str) -> str:
    """The shortest importable dotted name of a callable ``_target_``.

    Raises:
        ValueError: naming ``key`` if the callable cannot be imported by name
            (a lambda, a local function, a ``functools.partial``...).
    """
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        module_parts = module.split(".")
        for i in range(1, len(module_parts) + 1):
            candidate = ".".join(module_parts[:i] + [qualname])
            try:
                if locate(candidate) is target:
                    return candidate
            except ImportError:
                continue
    raise ValueError(
        f"Cannot save config key {key!r}: _target_ {target!r} is not importable by a dotted name "
        "(lambdas, local functions and partials cannot be saved; use a module-level callable)"
    )


def _dataclass_call(obj: Any, key: str) -> dict:
    """A dataclass instance as the lazy call that rebuilds it: ``{"_target_": its class's name, field: value}``."""
    return {
        "_target_": _target_to_string(type(obj), key),
        **{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)},
    }


def _to_yaml_tree(value: Any, key: str, unsaved: list[str]) -> Any:
    """Copies a container tree into what yaml can hold: callable targets and dataclass instances become names and
    lazy calls; a value yaml cannot hold becomes a placeholder string, and its dotted key is added to ``unsaved``.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            value = _dataclass_call(value, key)
        except ValueError:
            return _placeholder(value, key, unsaved)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            child = _join(key, k)
            if k == "_target_" and callable(v):
                try:
                    v = _target_to_string(v, child)
                except ValueError:
                    v = _placeholder(v, child, unsaved)
            out[k] = _to_yaml_tree(v, child, unsaved)
        return out
    if isinstance(value, (list, tuple)):
        return [_to_yaml_tree(v, _join(key, i), unsaved) for i, v in enumerate(value)]
    if isinstance(value, _PRIMITIVES):
        return value
    return _placeholder(value, key, unsaved)


def _placeholder(value: Any, key: str, unsaved: list[str]) -> str:
    unsaved.append(key)
    return f"<not representable in yaml: {type(value).__qualname__} {value!r:.60}; see the .pkl file next to this one>"


# ---------------------------------------------------------------------------
# overrides
# ---------------------------------------------------------------------------


def _parse_override(text: str) -> Override:
    """Parses one ``key=value`` string with hydra's override grammar.

    Raises:
        ValueError: naming ``text`` if it is malformed or a sweep.
    """
    try:
        override = OverridesParser.create().parse_overrides([text])[0]
    except OverrideParseException as e:
        raise ValueError(f"Malformed config override {text!r}: {e}") from e
    if override.is_sweep_override():
        raise ValueError(f"Config override {text!r}: sweeps (a=1,2 / range / choice) are not supported")
    if not override.key_or_group:
        raise ValueError(f"Malformed config override {text!r}: the key is empty")
    if override.package is not None:
        raise ValueError(f"Config override {text!r}: '@package' is not supported")
    return override


def _key_exists(cfg: DictConfig, key: str) -> bool:
    """Whether the dotted ``key`` exists in ``cfg`` (a ``???`` value counts as existing)."""
    parent_key, _, last = key.rpartition(".")
    parent = cfg
    if parent_key:
        parent = OmegaConf.select(cfg, parent_key, default=None, throw_on_resolution_failure=False)
    if not isinstance(parent, DictConfig):
        return False
    return last in parent or OmegaConf.is_missing(parent, last)


def _all_keys(value: Any, prefix: str = "") -> list[str]:
    """Every dotted key path of a container tree (dict keys only)."""
    keys = []
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            keys.append(path)
            keys.extend(_all_keys(v, path))
    return keys


def _closest_keys(key: str, known: list[str]) -> list[str]:
    """Existing keys closest to ``key``: siblings with a similar last name first, else similar full paths."""
    parent, _, last = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    close = difflib.get_close_matches(last, list(siblings), n=3, cutoff=0.6)
    return [siblings[name] for name in close] or difflib.get_close_matches(key, known, n=3, cutoff=0.6)


def _unknown_key_error(cfg: DictConfig, key: str, text: str) -> KeyError:
    """A KeyError for an override of a missing key, suggesting the closest existing keys."""
    close = _closest_keys(key, _all_keys(OmegaConf.to_container(cfg, resolve=False)))
    hint = f" Did you mean {' or '.join(repr(k) for k in close)}?" if close else ""
    return KeyError(
        f"Config override {text!r}: key {key!r} does not exist in the config.{hint} To add a new key, use '+{key}=...'."
    )


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _check_type(cfg: DictConfig, key: str, override: Override, text: str) -> None:
    """Rejects an unquoted string, a list or a dict given for a key whose current value is a bool or a number.

    Numbers may replace numbers (int <-> float), ``None`` may replace anything, an interpolation string may
    replace anything, and so may an explicitly quoted string (``key="123"``, ``key='abc'``): the quotes say
    the user means a string, as detectron2 takes it. An unquoted word (``train.max_iter=5k``) is a mistake.

    Raises:
        ValueError: naming the key, the existing value and type, and the given value.
    """
    value = override.value()
    existing = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    if not isinstance(existing, (bool, int, float)) or value is None or _is_interpolation(value):
        return
    if isinstance(value, (bool, int, float)) or isinstance(override._value, QuotedString):
        return
    hint = f" (to store the string, quote it: {key}='\"{value}\"')" if isinstance(value, str) else ""
    raise ValueError(
        f"Config override {text!r}: key {key!r} holds {existing!r} of type {type(existing).__name__}, "
        f"but the given value {value!r} is a {type(value).__name__}{hint}"
    )


def _delete_key(cfg: DictConfig, override: Override, text: str) -> None:
    """Applies ``~key`` (or ``~key=value``, which requires the current value to match)."""
    key = override.key_or_group
    if not _key_exists(cfg, key):
        raise _unknown_key_error(cfg, key, text)
    parent_key, _, last = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    expected = override.value()
    if override.value_type is not None and expected != parent[last]:
        raise ValueError(f"Config override {text!r}: key {key!r} holds {parent[last]!r}, not {expected!r}")
    del parent[last]


def _apply_override(cfg: DictConfig, text: str) -> None:
    """Applies one override string to ``cfg`` in place."""
    override = _parse_override(text)
    key = override.key_or_group
    if override.is_delete():
        _delete_key(cfg, override, text)
        return
    value = override.value()
    exists = _key_exists(cfg, key)
    if override.type == OverrideType.ADD and exists:
        raise KeyError(
            f"Config override {text!r}: key {key!r} already exists; use '{key}=...' to change it "
            f"or '++{key}=...' to set it either way"
        )
    if override.type == OverrideType.CHANGE:
        if not exists:
            raise _unknown_key_error(cfg, key, text)
        _check_type(cfg, key, override, text)
    OmegaConf.update(cfg, key, value, merge=True)


# ---------------------------------------------------------------------------
# LazyConfig
# ---------------------------------------------------------------------------


def _py_target(target: Any) -> str:
    if isinstance(target, str):
        return target
    try:
        return _target_to_string(target, "_target_")
    except ValueError:
        return repr(target)


def _py_expression(value: Any) -> str:
    """A value as a Python expression: a lazy call as a call (arguments sorted), mappings as dict literals."""
    if isinstance(value, abc.Mapping) and "_target_" in value:
        args = ", ".join(f"{k}={_py_expression(v)}" for k, v in sorted(value.items()) if k != "_target_")
        return f"{_py_target(value['_target_'])}({args})"
    if isinstance(value, abc.Mapping):
        return "{" + ", ".join(f"{k!r}: {_py_expression(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py_expression(v) for v in value) + "]"
    return repr(value)


def _py_assignments(value: Any, prefix: str) -> list[str]:
    """``prefix.key = expression`` lines: plain mappings are walked into, anything else is one assignment."""
    lines = []
    for k, v in sorted(value.items()):
        if isinstance(v, abc.Mapping) and "_target_" not in v:
            lines.extend(_py_assignments(v, f"{prefix}{k}."))
        else:
            lines.append(f"{prefix}{k} = {_py_expression(v)}")
    return lines


def _select_keys(values: abc.Mapping, keys: str | tuple[str, ...] | list[str], filename: str) -> Any:
    """One value of a loaded config file, or a tuple of them: any top-level name (a dict becomes a config)."""
    names = [keys] if isinstance(keys, str) else list(keys)
    for name in names:
        if name not in values:
            public = [k for k in values if not k.startswith("_")]
            close = difflib.get_close_matches(name, public, n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise KeyError(f"Config file {filename!r} defines no {name!r}.{hint}")
    selected = [_cast_to_config(values[name]) for name in names]
    return selected[0] if isinstance(keys, str) else tuple(selected)


class LazyConfig:
    """Loads, saves and overrides lazy configs (detectron2's ``LazyConfig``)."""

    @staticmethod
    def load(filename: str, keys: None | str | tuple[str, ...] | list[str] = None) -> Any:
        """Loads a ``.py``, ``.yaml``/``.yml`` or ``.pkl`` (written by :meth:`save`) config file.

        A Python config is executed as a fresh module each time (as is every
        config file it imports). Its relative imports (``from .common.train import
        train``, ``from ..data import dataloader``, ``from . import optim``) load
        config files by path, relative to the importing file, without any
        ``__init__.py``. Without ``keys``, the result holds every public top-level
        name whose value is a dict or ``DictConfig``/``ListConfig``; modules,
        functions, classes and names starting with ``_`` are skipped.

        Args:
            filename: path of the config file.
            keys: ``None`` for the whole config; a name for one of its top-level
                values, or a tuple/list of names for a tuple of them. Any value can
                be asked for (a string, a number...), as in detectron2; dicts are
                returned as configs.

        Returns:
            A ``DictConfig`` (objects allowed), or the selected value(s).

        Raises:
            FileNotFoundError: if the file does not exist.
            ValueError: for an unsupported file extension.
            ImportError: for a relative import of a missing config file.
        """
        filename = os.path.abspath(os.fspath(filename))
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"Config file {filename!r} does not exist")
        if filename.endswith(".py"):
            return _load_python(filename, keys)
        if filename.endswith(_YAML_SUFFIXES):
            cfg = _load_yaml(filename)
        elif filename.endswith(".pkl"):
            cfg = _load_pickle(filename)
        else:
            raise ValueError(f"Config file {filename!r}: unsupported extension (use .py, .yaml, .yml or .pkl)")
        return cfg if keys is None else _select_keys(cfg, keys, filename)

    @staticmethod
    def load_rel(filename: str, keys: None | str | tuple[str, ...] | list[str] = None) -> Any:
        """Like :meth:`load`, with ``filename`` relative to the calling file's directory."""
        caller_file = inspect.currentframe().f_back.f_globals.get("__file__")
        if caller_file is None:
            raise RuntimeError("LazyConfig.load_rel must be called from a file (the caller has no __file__)")
        return LazyConfig.load(os.path.join(os.path.dirname(caller_file), filename), keys)

    @staticmethod
    def save(cfg: DictConfig, filename: str) -> None:
        """Saves ``cfg`` as yaml that :meth:`load` turns back into an equivalent config.

        Callable ``_target_`` values are written as importable dotted names; dataclass instances as lazy calls
        of their class; interpolations (``${..lr}``) are written unresolved; tuples become lists. A value yaml
        cannot hold (a lambda, as detrex recipes use for ``lr_factor_func``; an object; a target that is not
        importable by name) is written as a placeholder string, a warning names its key, and the whole config
        is also pickled with cloudpickle into ``filename + ".pkl"`` (which :meth:`load` reads), as detectron2
        does. Files are written atomically; a stale ``.pkl`` of an earlier save is removed; ``cfg`` is not
        modified.

        Args:
            cfg: the config to save.
            filename: destination ``.yaml`` path.
        """
        filename = os.fspath(filename)
        container = OmegaConf.to_container(
            cfg, resolve=False, throw_on_missing=False, structured_config_mode=SCMode.INSTANTIATE
        )
        unsaved: list[str] = []
        tree = _to_yaml_tree(container, "", unsaved)
        write_text(filename, OmegaConf.to_yaml(OmegaConf.create(tree), resolve=False))
        pickle_file = filename + ".pkl"
        if not unsaved:
            if os.path.exists(pickle_file):
                os.remove(pickle_file)
            return
        import cloudpickle

        write_text(pickle_file, cloudpickle.dumps(cfg))
        logger.warning(
            f"Config keys {unsaved} cannot be written to yaml; {filename} holds placeholders for them and the "
            f"complete config is pickled in {pickle_file} (LazyConfig.load reads it)"
        )

    @staticmethod
    def to_py(cfg: DictConfig, prefix: str = "cfg.") -> str:
        """The config as Python-like code, formatted with black: one line per leaf outside calls, calls as calls.

        Interpolations are resolved. The result is meant to be read and diffed (``default_setup`` logs it), not
        executed: objects are written by their ``repr``.

        Args:
            cfg: a config.
            prefix: the name the lines assign to.
        """
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        code = "\n".join(_py_assignments(container, prefix))
        try:
            import black

            return black.format_str(code, mode=black.Mode())
        except ImportError:  # pragma: no cover - black is a requirement
            return code + "\n"
        except Exception:  # black.InvalidInput: an object whose repr is not Python
            return code + "\n"

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
        """Applies command-line overrides in hydra's grammar to ``cfg`` in place.

        * ``key=value`` changes an existing key (a missing key is a KeyError that
          suggests the closest existing keys); a string, list or dict given for a
          bool/number key is a ValueError.
        * ``+key=value`` adds a key that must not exist yet; ``++key=value`` sets
          a key whether or not it exists.
        * ``~key`` deletes an existing key.

        Values use hydra's syntax: ``1``, ``0.5``, ``true``, ``null``, ``abc``,
        ``'quoted string'``, ``[1,2]``, ``{a:1}``, ``${interpolation}``. A dict
        value is merged into an existing dict.

        Args:
            cfg: the config to modify.
            overrides: override strings.

        Returns:
            ``cfg``.

        Raises:
            ValueError: for a malformed override or a type mismatch.
            KeyError: for a missing key (or ``+key`` of an existing one).
        """
        for text in overrides:
            _apply_override(cfg, text)
        return cfg


def iter_calls(cfg: Any, target: Any = None) -> Iterator[DictConfig]:
    """Every lazy call in the config tree ``cfg`` (itself included), depth first; only those of ``target`` (a
    callable, or its dotted name) when given. For edits across a model, e.g. every FFN's ``d_ffn``.
    """
    if isinstance(cfg, ListConfig):
        for item in cfg:
            yield from iter_calls(item, target)
        return
    if not isinstance(cfg, DictConfig):
        return
    if "_target_" in cfg and (target is None or _same_target(cfg._get_node("_target_")._value(), target)):
        yield cfg
    for _, value in cfg.items_ex(resolve=False):
        yield from iter_calls(value, target)


def _same_target(value: Any, target: Any) -> bool:
    if isinstance(value, str) != isinstance(target, str):
        try:
            return (locate(value) if isinstance(value, str) else value) is (
                locate(target) if isinstance(target, str) else target
            )
        except ImportError:
            return False
    return value == target if isinstance(value, str) else value is target


def get_config(config_path: str) -> DictConfig:
    """Loads a config from the repository's ``configs/`` directory (like detrex's ``get_config``).

    Args:
        config_path: path relative to ``configs/``, e.g. ``"common/train.py"``.

    Returns:
        The loaded config.

    Raises:
        FileNotFoundError: naming the resolved path if the file does not exist.
    """
    path = os.path.join(_CONFIGS_DIR, config_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Config {config_path!r} not found: {path!r} does not exist (looked under {_CONFIGS_DIR})"
        )
    return LazyConfig.load(path)
