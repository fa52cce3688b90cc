"""Plugin manager factory and the registry that plugins fill."""

from __future__ import annotations

import importlib.metadata
import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pluggy
from torch import nn

from blockdance import hookspecs
from blockdance.architecture import ArchitectureSpec
from blockdance.errors import (
    PluginClashError,
    PolicyFileError,
    PolicyFileNotFoundError,
    UnknownArchitectureError,
    UnknownModelError,
    UnknownPolicyError,
)
from blockdance.policies import BuiltinPolicies
from blockdance.policy import Policy, PolicyConfig

ENTRYPOINT_GROUP = "blockdance"
#: Set to a non-empty value (not "0") to skip loading plugins from entry points.
DISABLE_AUTOLOAD_ENV = "BLOCKDANCE_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated entry-point names of plugins that must not be loaded.
BLOCK_PLUGINS_ENV = "BLOCKDANCE_BLOCK_PLUGINS"
BUILTIN_POLICIES_NAME = "blockdance.builtin_policies"


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("", "0")


class PluginLoadWarning(UserWarning):
    """An installed plugin failed to import and was skipped; the others are loaded."""


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Register each ``blockdance`` entry point under its name; warn about and skip any
    whose import fails, so one broken plugin does not take the others down.

    Blocked names and names already registered are skipped, as pluggy's
    ``load_setuptools_entrypoints`` does.
    """
    for ep in importlib.metadata.entry_points(group=ENTRYPOINT_GROUP):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as e:
            dist = f" (distribution {ep.dist.name})" if ep.dist is not None else ""
            warnings.warn(
                PluginLoadWarning(
                    f"blockdance plugin {ep.name!r} (entry point {ep.name} = {ep.value}"
                    f"{dist}) failed to import and is skipped: {type(e).__name__}: {e}. "
                    "Install what it needs, uninstall it, or block it with "
                    f"{BLOCK_PLUGINS_ENV}={ep.name}."
                ),
                stacklevel=3,
            )
            continue
        pm.register(plugin, name=ep.name)


def get_plugin_manager(*, autoload: bool | None = None) -> pluggy.PluginManager:
    """A new plugin manager with blockdance's hookspecs and plugins registered.

    Entry points of the ``blockdance`` group are loaded unless ``autoload`` is False
    or the ``BLOCKDANCE_DISABLE_PLUGIN_AUTOLOAD`` environment variable is set; names
    in ``BLOCKDANCE_BLOCK_PLUGINS`` are blocked. A plugin that fails to import is
    skipped with a :class:`PluginLoadWarning` naming its entry point and the error.
    Misspelt hook implementations fail here through ``check_pending()``.

    Args:
        autoload: Load entry-point plugins; None follows the environment variable.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in os.environ.get(BLOCK_PLUGINS_ENV, "").split(","):
        if name.strip():
            pm.set_blocked(name.strip())
    if autoload if autoload is not None else not _autoload_disabled():
        _load_entry_points(pm)
    pm.register(BuiltinPolicies(), name=BUILTIN_POLICIES_NAME)
    pm.hook.blockdance_addhooks.call_historic(kwargs={"pluginmanager": pm})
    pm.check_pending()
    return pm


T = TypeVar("T")


@dataclass
class Registrations(Generic[T]):
    """Named entries that plugins registered through one registrar hook, with each owner.

    Args:
        what: What an entry is, for messages (``"workload"``).
        error: Raised, naming the registered entries, for an unknown name.
    """

    what: str
    error: type[LookupError] = UnknownModelError
    entries: dict[str, T] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: T, owner: str) -> None:
        if name in self.entries:
            raise PluginClashError(
                f"{self.what} {name!r} is registered twice: by plugin {self.owners[name]!r} "
                f"and by plugin {owner!r}. Uninstall or block one of them "
                f"(environment variable {BLOCK_PLUGINS_ENV})."
            )
        self.entries[name] = value
        self.owners[name] = owner

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name lists the registered ones."""
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(self.entries) or "(none)"
            raise self.error(
                f"unknown {self.what} {name!r}; registered {self.what}s: {known}"
            ) from None

    def owner(self, name: str) -> str:
        """The name of the plugin that registered ``name``."""
        self.get(name)
        return self.owners[name]


def _call_each(
    pm: pluggy.PluginManager, hook_name: str, make_register: Callable[[str], Callable[..., None]]
) -> None:
    """Call a registrar hook plugin by plugin, each with a register bound to its owner.

    Each call goes through pluggy (a caller restricted to one plugin), so hook
    semantics — optional arguments, wrappers — are kept.
    """
    hook = getattr(pm.hook, hook_name)
    plugins = pm.get_plugins()
    for impl in hook.get_hookimpls():
        others = [p for p in plugins if p is not impl.plugin]
        caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
        caller(register=make_register(impl.plugin_name))


class Registry:
    """Architectures, policies and model factories registered by plugins.

    Args:
        pm: The plugin manager whose hooks fill the registry.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._arch: Registrations[ArchitectureSpec] = Registrations(
            "architecture", UnknownArchitectureError
        )
        self._policies: Registrations[tuple[type[PolicyConfig], type[Policy]]] = Registrations(
            "policy kind", UnknownPolicyError
        )
        self._models: Registrations[Callable[..., nn.Module]] = Registrations(
            "model", UnknownModelError
        )
        self._collected: dict[str, Registrations[Any]] = {}

        def arch_register(owner: str) -> Callable[[ArchitectureSpec], None]:
            return lambda spec: self._arch.add(spec.name, spec, owner)

        def policy_register(owner: str) -> Callable[[type[PolicyConfig], type[Policy]], None]:
            def register(config_class: type[PolicyConfig], policy_class: type[Policy]) -> None:
                kind = config_class.model_fields["kind"].default
                if not isinstance(kind, str) or not kind:
                    raise TypeError(
                        f"{config_class.__name__}.kind needs a default naming the policy, "
                        'e.g. kind: Literal["mine"] = "mine"'
                    )
                self._policies.add(kind, (config_class, policy_class), owner)

            return register

        def model_register(owner: str) -> Callable[[str, Callable[..., nn.Module]], None]:
            return lambda name, factory: self._models.add(name, factory, owner)

        _call_each(pm, "blockdance_register_architectures", arch_register)
        _call_each(pm, "blockdance_register_policies", policy_register)
        _call_each(pm, "blockdance_register_models", model_register)

    # -- architectures -------------------------------------------------------------
    @property
    def architectures(self) -> dict[str, ArchitectureSpec]:
        return dict(self._arch.entries)

    def architecture_owner(self, name: str) -> str:
        """The name of the plugin that registered architecture ``name``."""
        self.architecture(name)  # unknown: an error naming the registered ones
        return self._arch.owners[name]

    def _registered_architectures(self) -> str:
        if not self._arch.entries:
            return (
                "no architectures are registered (is a plugin installed, or is "
                f"{DISABLE_AUTOLOAD_ENV} set?)"
            )
        lines = [
            f"  - {name}: {spec.description or '(no description)'}"
            for name, spec in self._arch.entries.items()
        ]
        return "registered architectures:\n" + "\n".join(lines)

    def architecture(self, name: str) -> ArchitectureSpec:
        """The spec registered as ``name``."""
        try:
            return self._arch.entries[name]
        except KeyError:
            raise UnknownArchitectureError(
                f"unknown architecture {name!r}; {self._registered_architectures()}"
            ) from None

    def match(self, model: nn.Module) -> ArchitectureSpec:
        """The architecture of ``model``: a plugin's override, else the one spec that matches."""
        specs = list(self._arch.entries.values())
        chosen = self.pm.hook.blockdance_match_architecture(model=model, architectures=specs)
        if chosen is not None:
            return chosen
        found = [spec for spec in specs if spec.matches(model)]
        if len(found) == 1:
            return found[0]
        if not found:
            raise UnknownArchitectureError(
                f"no registered architecture matches model {type(model).__module__}."
                f"{type(model).__qualname__}; {self._registered_architectures()}\n"
                "Install or write a plugin for it (docs/plugin-tutorial.md), or pass "
                "architecture=<name> to attach()."
            )
        names = ", ".join(spec.name for spec in found)
        raise UnknownArchitectureError(
            f"several architectures match {type(model).__qualname__}: {names}. Pass "
            "architecture=<name> to attach(), or implement blockdance_match_architecture."
        )

    # -- policies --------------------------------------------------------------------
    @property
    def policy_kinds(self) -> dict[str, tuple[type[PolicyConfig], type[Policy]]]:
        return dict(self._policies.entries)

    def policy_owner(self, kind: str) -> str:
        """The name of the plugin that registered policy ``kind``."""
        self._policy_entry(kind)
        return self._policies.owners[kind]

    def _policy_entry(self, kind: str) -> tuple[type[PolicyConfig], type[Policy]]:
        try:
            return self._policies.entries[kind]
        except KeyError:
            known = ", ".join(sorted(self._policies.entries)) or "(none)"
            raise UnknownPolicyError(
                f"unknown policy kind {kind!r}; registered policy kinds: {known}"
            ) from None

    def policy_config(self, data: Mapping[str, Any]) -> PolicyConfig:
        """Validate ``{"kind": ..., **options}`` into that kind's config model.

        Raises pydantic's ``ValidationError`` (naming each bad field) on invalid options.
        """
        if "kind" not in data:
            raise UnknownPolicyError(
                "a policy configuration needs a 'kind' field; registered policy kinds: "
                + ", ".join(sorted(self._policies.entries))
            )
        config_class, _ = self._policy_entry(str(data["kind"]))
        return config_class.model_validate(dict(data))

    def make_policy(
        self, policy: Policy | PolicyConfig | Mapping[str, Any] | str | Path, **options: Any
    ) -> Policy:
        """Build a policy from a name with options, a config, a mapping or a JSON file.

        A string is a kind name unless it is not a registered kind and looks like a path
        (it has a file suffix or a path separator): then it is read as a JSON file.

        Args:
            policy: A registered kind name, a config object, a ``{"kind": ...}`` mapping,
                a path to a JSON configuration, or a ready policy instance.
            **options: Config fields, when ``policy`` is a name (or to override a config).

        Raises:
            PolicyFileError: A path that does not exist, is not ``.json``, or does not hold
                a JSON object (a missing file is also a ``FileNotFoundError``).
        """
        if isinstance(policy, Policy):
            if options:
                raise TypeError(
                    "options cannot be combined with a policy instance; put them in its config"
                )
            return policy
        if isinstance(policy, PolicyConfig):
            config = self.policy_config({**policy.model_dump(), **options})
        elif isinstance(policy, Mapping):
            config = self.policy_config({**policy, **options})
        elif isinstance(policy, Path) or (
            isinstance(policy, str) and policy not in self._policies.entries and _is_path(policy)
        ):
            config = self.policy_config({**self._policy_file(policy), **options})
        elif isinstance(policy, str):
            config = self.policy_config({"kind": policy, **options})
        else:
            raise TypeError(f"cannot build a policy from {type(policy).__name__}")
        _, policy_class = self._policy_entry(config.kind)
        return policy_class(config)

    def _policy_file(self, path: str | Path) -> dict[str, Any]:
        """:func:`load_policy_file`, naming the registered kinds when a string names no file."""
        try:
            return load_policy_file(path)
        except PolicyFileNotFoundError as e:
            if isinstance(path, Path):
                raise
            known = ", ".join(sorted(self._policies.entries)) or "(none)"
            raise PolicyFileNotFoundError(f"{e}, or a registered policy kind: {known}") from None

    # -- models ------------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return list(self._models.entries)

    def model_owner(self, name: str) -> str:
        """The name of the plugin that registered model ``name``."""
        return self._models.owner(name)

    def create_model(self, name: str, **kwargs: Any) -> nn.Module:
        """Build the model registered as ``name``."""
        return self._models.get(name)(**kwargs)

    # -- registrar hooks that other plugins add ------------------------------------------
    def collect(
        self,
        hook_name: str,
        what: str,
        key: Callable[[Any], str],
        error: type[LookupError] = LookupError,
    ) -> Registrations[Any]:
        """The entries registered through a registrar hook that a plugin added.

        A plugin that adds its own hookspecs (through ``blockdance_addhooks``) of the form
        ``hook(register)`` reads them here, each entry with the plugin that registered it;
        the lab's workloads are read this way. Collected once per registry.

        Args:
            hook_name: The hook, e.g. ``"blockdance_register_workloads"``.
            what: What an entry is, for messages.
            key: The name of an entry.
            error: Raised for an unknown name.

        Raises:
            LookupError: No plugin added a specification for ``hook_name``.
        """
        if hook_name not in self._collected:
            caller = getattr(self.pm.hook, hook_name, None)
            if caller is None or caller.spec is None:
                raise error(
                    f"no plugin defines the hook {hook_name!r}, so there are no {what}s; "
                    "install the plugin that adds it (for workloads: blockdance-lab)"
                )
            table: Registrations[Any] = Registrations(what, error)

            def register(owner: str) -> Callable[[Any], None]:
                return lambda entry: table.add(key(entry), entry, owner)

            _call_each(self.pm, hook_name, register)
            self._collected[hook_name] = table
        return self._collected[hook_name]


_POLICY_EXAMPLE = '{"kind": "blockdance", "N": 2}'


def _is_path(text: str) -> bool:
    """Whether a policy string looks like a file path: a suffix or a path separator."""
    return bool(Path(text).suffix) or "/" in text or os.sep in text


def load_policy_file(path: str | Path) -> dict[str, Any]:
    """Read a policy configuration (``{"kind": ..., ...}``) from a JSON file.

    Raises:
        PolicyFileNotFoundError: No file at ``path`` (also a ``FileNotFoundError``).
        PolicyFileError: The path is not a ``.json`` file (YAML, TOML ... are not read),
            is not valid JSON (line and column named), or does not hold a JSON object.
    """
    path = Path(path)
    if not path.exists():
        raise PolicyFileNotFoundError(
            f"policy configuration file not found: {path}; give an existing .json file "
            f"holding e.g. {_POLICY_EXAMPLE}"
        )
    if not path.is_file():
        raise PolicyFileError(f"policy configuration {path} is not a file; give a .json file")
    if path.suffix.lower() != ".json":
        found = f"a {path.suffix!r} file" if path.suffix else "a file without a suffix"
        raise PolicyFileError(
            f"policy configuration {path} is {found}, but only JSON policy files (.json) "
            f"are read; write it as JSON, e.g. {_POLICY_EXAMPLE}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PolicyFileError(
            f"policy configuration {path} is not valid JSON: {e.msg} at line {e.lineno}, "
            f"column {e.colno}; a policy file holds one JSON object such as {_POLICY_EXAMPLE}"
        ) from None
    except UnicodeDecodeError as e:
        raise PolicyFileError(
            f"policy configuration {path} is not UTF-8 text ({e.reason} at byte {e.start}); "
            f"a policy file holds one JSON object such as {_POLICY_EXAMPLE}"
        ) from None
    if not isinstance(data, dict):
        raise PolicyFileError(
            f"policy configuration {path} holds a JSON {_json_type(data)}, but a policy file "
            f"holds one JSON object with a 'kind' field, such as {_POLICY_EXAMPLE}"
        )
    return data


def _json_type(value: object) -> str:
    """JSON's name for the type of a decoded value."""
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry, built on first use from the installed plugins."""
    global _default
    if _default is None:
        _default = Registry(get_plugin_manager())
    return _default


def register_plugin(plugin: object, name: str | None = None) -> Registry:
    """Add a plugin to the process-wide registry without installing it (notebooks, tests).

    Args:
        plugin: A module or object with ``@blockdance.hookimpl`` functions.
        name: Plugin name (default: pluggy's canonical name).

    Returns:
        The rebuilt registry.

    Raises:
        pluggy.PluginValidationError: A hook implementation matches no hook (a misspelt
            name); the plugin is not kept, so later registrations still work.
        PluginClashError: The plugin registers a name another plugin has; not kept either.
    """
    global _default
    pm = default_registry().pm
    pm.register(plugin, name=name)
    try:
        pm.check_pending()
        _default = Registry(pm)
    except Exception:
        pm.unregister(plugin)
        raise
    return _default


def reload_plugins() -> Registry:
    """Rebuild the process-wide registry (after installing or blocking plugins)."""
    global _default
    _default = None
    return default_registry()
