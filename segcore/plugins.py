"""Plugin loading: built-in plugins, entry points of the ``segcore`` group, and plugins registered at runtime.

Loading is lazy. Built-in plugins (:data:`DEFAULT_PLUGINS`) load the first time a backend is looked up;
installed plugins are *listed* from their entry points without importing them and imported the first time
something needs them (listing or building models, listing backends, asking for a backend that is not
built in). A plugin that fails to import or to register is rolled back and reported with one
:class:`PluginWarning`; everything else keeps working.

Environment variables (read when plugins load; :meth:`PluginManager.reset` re-reads them):

``SEGCORE_DISABLE_PLUGIN_AUTOLOAD=1``
    load only the built-in plugins (and those registered with :meth:`PluginManager.register`).
``SEGCORE_PLUGINS=a,b``
    load only the installed plugins named ``a`` and ``b`` (an empty value loads none).
``SEGCORE_STRICT_PLUGINS=1``
    a plugin that fails is an error (:class:`PluginError`) instead of a warning.

Tests register temporary plugins with ``manager.register(obj, name)`` and remove them with
``manager.unregister(name)``; ``manager.reset()`` forgets every installed and runtime plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import sys
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy

from . import backend as _backend_module
from . import hookspecs
from .backend import Backend, register_backend
from .hookspecs import HOOK_ORDER, PROJECT_NAME, hookimpl
from .registry import BackboneSpec, DuplicateRegistrationError, LossSpec, ModelSpec, Registry, suggest

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginError",
    "PluginWarning",
    "PluginInfo",
    "PluginManager",
    "hookimpl",
    "installed_entry_points",
    "manager",
]

#: Modules holding segcore's own hook implementations; they load first and cannot be disabled.
DEFAULT_PLUGINS: tuple[str, ...] = ("segcore.builtin_plugin",)

#: The entry-point group installed plugins declare themselves in.
ENTRY_POINT_GROUP = "segcore"

_HOOK_PREFIX = "segcore_"


class PluginError(RuntimeError):
    """A plugin could not be loaded and ``SEGCORE_STRICT_PLUGINS=1`` asks for an error, or a built-in failed."""


class PluginWarning(UserWarning):
    """A plugin could not be loaded and was skipped; the message names it and gives the error."""


@dataclass(frozen=True)
class PluginInfo:
    """What ``segcore plugins`` shows for one plugin.

    ``status`` is ``"loaded"``, ``"failed"`` (``error`` says why), ``"disabled"`` (``error`` says by
    what) or ``"not loaded"`` (listed from its entry point, not imported yet).
    """

    name: str
    version: str | None
    source: str
    status: str
    error: str | None = None

    def __str__(self) -> str:
        version = f" {self.version}" if self.version else ""
        status = f"{self.status}: {self.error}" if self.error else self.status
        return f"{self.name}{version} ({self.source}): {status}"


def installed_entry_points(group: str = ENTRY_POINT_GROUP) -> list[importlib.metadata.EntryPoint]:
    """The installed entry points of ``group``, listed from package metadata without importing anything."""
    return list(importlib.metadata.entry_points(group=group))


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(
        f"environment variable {name}={raw!r} is not a boolean: expected 1/0, true/false, yes/no or on/off"
    )


def _allow_list() -> set[str] | None:
    raw = os.environ.get("SEGCORE_PLUGINS")
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


class _PluggyManager(pluggy.PluginManager):
    """pluggy's manager, but every ``segcore_*`` function counts as a hook implementation.

    A misspelled hook (``segcore_register_model``) then reaches ``check_pending`` and fails loudly instead
    of being silently ignored for lack of the ``@hookimpl`` marker (pytest does the same with ``pytest_``).
    """

    def parse_hookimpl_opts(self, plugin: object, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(_HOOK_PREFIX) and inspect.isroutine(getattr(plugin, name, None)):
            opts = {}
        return opts


@dataclass(eq=False)
class _Plugin:
    name: str
    kind: str  # "built-in", "entry point", "runtime"
    load: Callable[[], object]
    source: str
    version: str | None = None
    obj: object | None = None
    status: str = "not loaded"
    error: str | None = None
    undo: list[Callable[[], None]] = field(default_factory=list)

    def info(self) -> PluginInfo:
        return PluginInfo(self.name, self.version, self.source, self.status, self.error)


def _failure_message(plugin: _Plugin) -> str:
    return (
        f"segcore plugin {plugin.name!r} ({plugin.source}) failed to load and was skipped: {plugin.error}. "
        "Run `segcore plugins` to list plugins; SEGCORE_STRICT_PLUGINS=1 makes this an error."
    )


class PluginManager:
    """Loads plugins and holds what they registered.

    Attributes
    ----------
    models, backbones, losses:
        :class:`~segcore.registry.Registry` tables filled by the plugins' hooks.
    """

    def __init__(self, default_plugins: Iterable[str] = DEFAULT_PLUGINS, group: str = ENTRY_POINT_GROUP) -> None:
        self._default_plugins = tuple(default_plugins)
        self._group = group
        # RLock: a plugin's import may itself look up a backend, which re-enters ensure_loaded.
        self._lock = threading.RLock()
        self._pm = _PluggyManager(PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self.models: Registry[ModelSpec] = Registry("model")
        self.backbones: Registry[BackboneSpec] = Registry("backbone")
        self.losses: Registry[LossSpec] = Registry("loss")
        self._kernel_owners: dict[tuple[str, str], str] = {}
        self._plugins: dict[str, _Plugin] = {}
        self._builtins_loaded = False
        self._discovered = False
        self._loaded = False
        self._loading = False
        self._strict = False
        self._problems: list[str] = []
        self._strict_error: PluginError | None = None

    # -- loading ------------------------------------------------------------------------------------------
    def ensure_builtins_loaded(self) -> None:
        """Load the built-in plugins if that has not happened yet (cheap afterwards)."""
        if self._builtins_loaded:
            return
        with self._lock:
            if self._builtins_loaded or self._loading:
                return
            self._loading = True
            try:
                version = _own_version()
                builtins = [
                    self._add(_Plugin(module, "built-in", _importer(module), "built-in", version))
                    for module in self._default_plugins
                ]
                self._activate(builtins, strict=True)
                self._builtins_loaded = True
            finally:
                self._loading = False

    def ensure_loaded(self) -> None:
        """Load built-in, installed and runtime-registered plugins that have not been loaded yet.

        Raises :class:`PluginError` when ``SEGCORE_STRICT_PLUGINS=1`` and a plugin failed (every call, until
        the plugin is fixed, disabled or :meth:`reset` is called with the variable unset).
        """
        self._load()
        if self._strict_error is not None:
            raise self._strict_error

    def _load(self) -> None:
        if self._loaded:
            return
        self.ensure_builtins_loaded()
        with self._lock:
            if not self._loaded and not self._loading:
                self._loading = True
                try:
                    self._load_installed()
                finally:
                    self._loading = False

    def _discover(self) -> None:
        """List installed entry points (importing nothing) and read the plugin environment variables."""
        if self._discovered:
            return
        self._strict = _env_flag("SEGCORE_STRICT_PLUGINS")
        disabled = _env_flag("SEGCORE_DISABLE_PLUGIN_AUTOLOAD")
        allowed = _allow_list()
        seen: set[str] = set()
        for ep in installed_entry_points(self._group):
            seen.add(ep.name)
            plugin = _entry_point_plugin(ep)
            existing = self._plugins.get(plugin.name)
            if existing is not None:
                self._problem(
                    f"segcore plugin {plugin.name!r} ({plugin.source}) was skipped: a plugin with that name "
                    f"comes from {existing.source}"
                )
                continue
            if disabled:
                plugin.status, plugin.error = "disabled", "SEGCORE_DISABLE_PLUGIN_AUTOLOAD is set"
            elif allowed is not None and ep.name not in allowed:
                plugin.status, plugin.error = "disabled", "not in SEGCORE_PLUGINS"
            self._add(plugin)
        if allowed and not disabled:
            for name in sorted(allowed - seen):
                close = suggest(name, sorted(seen))
                hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
                self._problem(
                    f"SEGCORE_PLUGINS names {name!r}, which is not installed{hint}; "
                    f"installed plugins: {', '.join(sorted(seen)) or 'none'}"
                )
        self._discovered = True

    def _problem(self, message: str) -> None:
        """Report a plugin problem: a warning now, or (strict mode) part of the error of every later use."""
        self._problems.append(message)
        if not self._strict:
            warnings.warn(message, PluginWarning, stacklevel=_caller_stacklevel())

    def _load_installed(self) -> None:
        self._discover()
        pending = [p for p in self._plugins.values() if p.kind != "built-in" and p.status == "not loaded"]
        for plugin in self._activate(pending, strict=False):
            self._problem(_failure_message(plugin))
        self._loaded = True
        if self._strict and self._problems:
            self._strict_error = PluginError(
                "plugins failed to load (SEGCORE_STRICT_PLUGINS=1):\n  " + "\n  ".join(self._problems)
            )

    def _add(self, plugin: _Plugin) -> _Plugin:
        self._plugins[plugin.name] = plugin
        return plugin

    def _activate(self, plugins: list[_Plugin], *, strict: bool) -> list[_Plugin]:
        """Import and register ``plugins``, then run each hook for all of them in :data:`HOOK_ORDER`.

        Returns the plugins that failed, each rolled back; ``strict`` raises on the first failure instead.
        """
        failed: list[_Plugin] = []

        def failure(plugin: _Plugin, exc: BaseException) -> None:
            self._rollback(plugin)
            # One line: it goes into a warning and into a row of `segcore plugins`.
            plugin.status, plugin.error = "failed", f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            if strict:
                raise PluginError(f"plugin {plugin.name!r} ({plugin.source}) failed to load: {plugin.error}") from exc
            failed.append(plugin)

        ready: list[_Plugin] = []
        for plugin in plugins:
            try:
                plugin.obj = plugin.load()
                self._pm.register(plugin.obj, name=plugin.name)
                self._check_hooks(plugin)
            except Exception as exc:  # a plugin's import may raise anything; it must not take segcore down
                failure(plugin, exc)
                continue
            ready.append(plugin)
        for hook in HOOK_ORDER:
            for plugin in ready:
                if plugin.status == "failed":
                    continue
                try:
                    self._call_hook(plugin, hook)
                except Exception as exc:
                    failure(plugin, exc)
        for plugin in ready:
            if plugin.status != "failed":
                plugin.status = "loaded"
        return failed

    def _check_hooks(self, plugin: _Plugin) -> None:
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError:
            unknown = sorted(
                caller.name for caller in self._pm.get_hookcallers(plugin.obj) or [] if not caller.has_spec()
            )
            hints = []
            for name in unknown:
                close = suggest(name, list(HOOK_ORDER))
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise PluginError(
                f"plugin {plugin.name!r} implements unknown hook(s) {', '.join(hints)}; "
                f"segcore's hooks are {', '.join(HOOK_ORDER)}"
            ) from None

    def _call_hook(self, plugin: _Plugin, hook: str) -> None:
        for impl in getattr(self._pm.hook, hook).get_hookimpls():
            if impl.plugin is not plugin.obj:
                continue
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(
                    f"{hook} of plugin {plugin.name!r} is a hook wrapper; segcore hooks cannot be wrapped"
                )
            register = self._registrar(plugin, hook)
            result = impl.function(*(register for _ in impl.argnames))
            if result is not None:
                raise PluginError(
                    f"{hook} of plugin {plugin.name!r} returned {type(result).__name__}; hooks must call "
                    "register(...) for each entry and return None"
                )

    def _rollback(self, plugin: _Plugin) -> None:
        """Undo everything ``plugin`` registered and detach it from pluggy."""
        for undo in reversed(plugin.undo):
            undo()
        plugin.undo.clear()
        if plugin.obj is not None and self._pm.get_plugin(plugin.name) is plugin.obj:
            self._pm.unregister(name=plugin.name)

    # -- register callbacks -------------------------------------------------------------------------------
    def _registrar(self, plugin: _Plugin, hook: str) -> Callable[..., None]:
        provider = plugin.name

        def register_model(
            name: str, factory: Callable[..., Any], *, task: str = "semantic", description: str | None = None
        ) -> None:
            self.models.add(ModelSpec.create(name, factory, task=task, provider=provider, description=description))
            plugin.undo.append(lambda: self.models.remove(name))

        def register_backbone(name: str, factory: Callable[..., Any], *, description: str | None = None) -> None:
            self.backbones.add(BackboneSpec.create(name, factory, provider=provider, description=description))
            plugin.undo.append(lambda: self.backbones.remove(name))

        def register_loss(name: str, factory: Callable[..., Any], *, description: str | None = None) -> None:
            self.losses.add(LossSpec.create(name, factory, provider=provider, description=description))
            plugin.undo.append(lambda: self.losses.remove(name))

        def register_backend_(backend: Backend) -> None:
            register_backend(backend, provider=provider)
            plugin.undo.append(lambda: _backend_module._unregister_backend(backend.name))

        def register_kernel(backend: str, name: str, kernel: Callable[..., Any]) -> None:
            table = _backend_module._BACKENDS
            if backend not in table:
                raise ValueError(
                    f"cannot register kernel {name!r} for unknown backend {backend!r}; "
                    f"known backends: {', '.join(sorted(table))}"
                )
            if not isinstance(name, str) or not name:
                raise TypeError(f"kernel name must be a non-empty string, got {name!r}")
            owner = self._kernel_owners.get((backend, name))
            if owner is not None:
                raise DuplicateRegistrationError(
                    f"kernel {name!r} of backend {backend!r} is registered twice: by plugin {owner!r} and by "
                    f"plugin {provider!r}"
                )
            target = table[backend][0]
            previous = target.overrides.get(name)
            target.register_kernel(name, kernel)
            self._kernel_owners[(backend, name)] = provider

            def undo() -> None:
                self._kernel_owners.pop((backend, name), None)
                if previous is None:
                    target.overrides.pop(name, None)
                else:
                    target.overrides[name] = previous

            plugin.undo.append(undo)

        return {
            "segcore_register_models": register_model,
            "segcore_register_backbones": register_backbone,
            "segcore_register_losses": register_loss,
            "segcore_register_backends": register_backend_,
            "segcore_register_kernels": register_kernel,
        }[hook]

    # -- runtime plugins and test support -----------------------------------------------------------------
    def register(self, plugin: object, name: str) -> None:
        """Add ``plugin`` (a module, class or object with hook implementations) under ``name``.

        It is treated exactly like an installed plugin: loaded now if plugins are already loaded, else with
        them; a failure is a warning (an error under ``SEGCORE_STRICT_PLUGINS=1``) and leaves it out.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"plugin name must be a non-empty string, got {name!r}")
        if name in self._plugins:
            raise ValueError(f"a plugin named {name!r} is already registered ({self._plugins[name].source})")
        with self._lock:
            record = self._add(_Plugin(name, "runtime", lambda: plugin, "registered at runtime"))
            record.version = getattr(plugin, "__version__", None)
            if self._loaded:
                failed = self._activate([record], strict=False)
                if failed and self._strict:
                    del self._plugins[name]
                    raise PluginError(f"plugin {name!r} failed to load: {record.error}")
                if failed:
                    self._problem(_failure_message(record))

    def unregister(self, name: str) -> None:
        """Remove a plugin added with :meth:`register` and everything it registered."""
        record = self._plugins.get(name)
        if record is None or record.kind != "runtime":
            runtime = [p.name for p in self._plugins.values() if p.kind == "runtime"]
            raise ValueError(
                f"no plugin named {name!r} was registered at runtime; "
                f"runtime plugins: {', '.join(runtime) or 'none'}"
            )
        with self._lock:
            self._rollback(record)
            del self._plugins[name]

    def reset(self) -> None:
        """Forget installed and runtime plugins and what they registered; built-ins stay loaded.

        The next use lists entry points and reads the environment variables again.
        """
        with self._lock:
            for record in reversed(list(self._plugins.values())):
                if record.kind == "built-in":
                    continue
                self._rollback(record)
                del self._plugins[record.name]
            self._discovered = self._loaded = False
            self._problems = []
            self._strict_error = None

    def plugins(self, *, load: bool = False) -> list[PluginInfo]:
        """Every known plugin with its status, built-ins first.

        ``load=True`` loads pending plugins first; failures then show as status ``"failed"`` (never raised,
        not even under ``SEGCORE_STRICT_PLUGINS=1``: this is what you look at to find out why).
        """
        if load:
            self._load()
        else:
            self.ensure_builtins_loaded()
            with self._lock:
                self._discover()
        return [p.info() for p in self._plugins.values()]


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning to the first frame outside segcore (the user's call)."""
    level, frame = 2, sys._getframe(2)  # 1 is the function calling warnings.warn, this one is not counted
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "segcore":
        level, frame = level + 1, frame.f_back
    return level


def _importer(module: str) -> Callable[[], object]:
    return lambda: importlib.import_module(module)


def _own_version() -> str | None:
    import segcore

    return getattr(segcore, "__version__", None)


def _entry_point_plugin(ep: importlib.metadata.EntryPoint) -> _Plugin:
    dist = getattr(ep, "dist", None)
    source = f"entry point {ep.value}" + (f" in {dist.name}" if dist is not None else "")
    return _Plugin(ep.name, "entry point", ep.load, source, dist.version if dist is not None else None)


#: The process-wide plugin manager used by ``segcore.build``, ``segcore.list_*`` and backend lookup.
manager = PluginManager()
