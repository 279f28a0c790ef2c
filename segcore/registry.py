"""Model, backbone and loss registries, and the public ``build`` / ``list_*`` functions.

Plugins fill the registries through the hooks in :mod:`segcore.hookspecs`; every entry records the plugin
that provided it. The functions here load plugins on first use (see :mod:`segcore.plugins`).
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

from .backend import Backend, get_backend

if TYPE_CHECKING:
    from .nn import Module

__all__ = [
    "TASKS",
    "ModelSpec",
    "BackboneSpec",
    "LossSpec",
    "Registry",
    "DuplicateRegistrationError",
    "build",
    "build_backbone",
    "build_loss",
    "list_models",
    "list_backbones",
    "list_losses",
]

#: The tasks a model can be registered for.
TASKS: tuple[str, ...] = ("semantic", "instance")

# Names appear on command lines and in config files: keep them free of spaces and shell metacharacters.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")


class DuplicateRegistrationError(ValueError):
    """Two plugins registered the same name; the message names both."""


def _check_entry(kind: str, name: Any, factory: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{kind} name must be a non-empty string of letters, digits, '_', '.' or '-' "
            f"starting with a letter or digit, got {name!r}"
        )
    if not callable(factory):
        raise TypeError(f"{kind} {name!r}: factory must be callable, got {type(factory).__name__}")
    return name


def _first_doc_line(factory: Callable) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass(frozen=True)
class _Spec:
    name: str
    factory: Callable[..., Any] = field(repr=False)
    provider: str
    description: str = ""


@dataclass(frozen=True)
class ModelSpec(_Spec):
    """A registered model: its name, the factory building it, the task and the providing plugin."""

    task: str = "semantic"

    @classmethod
    def create(
        cls, name: str, factory: Callable[..., Any], *, task: str, provider: str, description: str | None = None
    ) -> ModelSpec:
        """Validate the arguments of a ``register`` call and build the spec."""
        _check_entry("model", name, factory)
        if task not in TASKS:
            raise ValueError(f"model {name!r}: task must be one of {', '.join(map(repr, TASKS))}, got {task!r}")
        return cls(name, factory, provider, _first_doc_line(factory) if description is None else description, task)


@dataclass(frozen=True)
class BackboneSpec(_Spec):
    """A registered backbone: its name, the factory building it and the providing plugin."""

    @classmethod
    def create(
        cls, name: str, factory: Callable[..., Any], *, provider: str, description: str | None = None
    ) -> BackboneSpec:
        """Validate the arguments of a ``register`` call and build the spec."""
        _check_entry("backbone", name, factory)
        return cls(name, factory, provider, _first_doc_line(factory) if description is None else description)


@dataclass(frozen=True)
class LossSpec(_Spec):
    """A registered loss: its name, the factory returning the loss callable and the providing plugin."""

    @classmethod
    def create(
        cls, name: str, factory: Callable[..., Any], *, provider: str, description: str | None = None
    ) -> LossSpec:
        """Validate the arguments of a ``register`` call and build the spec."""
        _check_entry("loss", name, factory)
        return cls(name, factory, provider, _first_doc_line(factory) if description is None else description)


S = TypeVar("S", bound=_Spec)


def suggest(name: str, known: list[str]) -> list[str]:
    """Close matches for ``name``: difflib's, plus names containing it (``"lraspp"`` finds
    ``"lraspp_mobilenet_v3_large"``, which difflib's ratio alone misses)."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    lowered = name.lower()
    contained = [k for k in sorted(known) if lowered and lowered in k.lower()]
    return list(dict.fromkeys(close + contained))[:5]


class Registry(Generic[S]):
    """Name -> spec for one kind of thing (``"model"``, ``"backbone"``, ``"loss"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, S] = {}

    def add(self, spec: S) -> None:
        """Add ``spec``; a name that is already taken raises :class:`DuplicateRegistrationError`."""
        existing = self._entries.get(spec.name)
        if existing is not None:
            raise DuplicateRegistrationError(
                f"{self.kind} {spec.name!r} is registered twice: by plugin {existing.provider!r} and by "
                f"plugin {spec.provider!r}; uninstall one of them or leave one out of SEGCORE_PLUGINS"
            )
        self._entries[spec.name] = spec

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str, *, hint: str = "") -> S:
        """The spec called ``name``; an unknown name raises ``ValueError`` with close matches and all names."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        spec = self._entries.get(name)
        if spec is not None:
            return spec
        known = sorted(self._entries)
        close = suggest(name, known)
        did_you_mean = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        listing = f"Available {self.kind}s: {', '.join(known)}." if known else f"No {self.kind}s are registered."
        raise ValueError(f"unknown {self.kind} {name!r}.{did_you_mean} {listing}{hint}")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[S]:
        return iter(sorted(self._entries.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._entries)


# -- public API -------------------------------------------------------------------------------------------


def _manager():
    # The plugin manager owns the registries and imports this module for the spec types: import it late.
    from .plugins import manager

    manager.ensure_loaded()
    return manager


def list_models(task: str | None = None) -> list[ModelSpec]:
    """Every registered model (optionally only those for ``task``), sorted by name.

    Parameters
    ----------
    task:
        ``"semantic"``, ``"instance"`` or ``None`` for all.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))} or None, got {task!r}")
    return [spec for spec in _manager().models if task is None or spec.task == task]


def list_backbones() -> list[BackboneSpec]:
    """Every registered backbone, sorted by name."""
    return list(_manager().backbones)


def list_losses() -> list[LossSpec]:
    """Every registered loss, sorted by name."""
    return list(_manager().losses)


def _check_kwargs(what: str, factory: Callable, kwargs: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # builtins without a signature: the call itself will check
    params = signature.parameters
    keywordable = {
        name: p
        for name, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    accepted = ", ".join(
        name if p.default is inspect.Parameter.empty else f"{name}={p.default!r}" for name, p in keywordable.items()
    )
    accepted = accepted or "none"
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in keywordable]
    if unknown and not takes_any:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(keywordable), n=1)
            hints.append(f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k))
        plural = "s" if len(unknown) > 1 else ""
        raise TypeError(
            f"{what}: unknown keyword argument{plural} {', '.join(hints)}. Accepted keyword arguments: {accepted}"
        )
    missing = [
        name
        for name, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and name not in kwargs
    ]
    if missing:
        raise TypeError(
            f"{what}: missing required keyword argument{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))}. Accepted keyword arguments: {accepted}"
        )


def _failed_plugins_hint(manager) -> str:
    failed = [info.name for info in manager.plugins() if info.status == "failed"]
    if not failed:
        return ""
    return f" (Plugins that failed to load: {', '.join(failed)}; run `segcore plugins` to see why.)"


def _construct(kind: str, spec: _Spec, backend: str | Backend | None, kwargs: dict[str, Any]) -> Module:
    from .nn import Module

    _check_kwargs(f"{kind} {spec.name!r}", spec.factory, kwargs)
    target = get_backend(backend)
    built = spec.factory(**kwargs)
    if not isinstance(built, Module):
        raise TypeError(
            f"{kind} factory {spec.name!r} from plugin {spec.provider!r} returned {type(built).__name__}, "
            "expected a segcore.nn.Module"
        )
    # Parameters are initialised wherever the layers put them; .to() is a no-op when that is already target.
    return built.to(target)


def build(name: str, *, backend: str | Backend | None = "numpy", **kwargs: Any) -> Module:
    """Build the registered model ``name`` on ``backend``.

    Parameters
    ----------
    name:
        A name from :func:`list_models`.
    backend:
        Backend name or :class:`~segcore.Backend` the parameters live on (``None``: the default backend).
    **kwargs:
        Passed to the model's factory; checked against its signature before anything is built.

    Raises
    ------
    ValueError
        Unknown model name (the message lists close matches and every model).
    TypeError
        A keyword the factory does not accept, or a required one missing (the message lists accepted ones).
    segcore.BackendUnavailableError
        The backend cannot run here (the message says why and what to install).
    """
    manager = _manager()
    spec = manager.models.get(name, hint=_failed_plugins_hint(manager))
    return _construct("model", spec, backend, kwargs)


def build_backbone(name: str, *, backend: str | Backend | None = "numpy", **kwargs: Any) -> Module:
    """Build the registered backbone ``name`` on ``backend``; errors as in :func:`build`."""
    manager = _manager()
    spec = manager.backbones.get(name, hint=_failed_plugins_hint(manager))
    return _construct("backbone", spec, backend, kwargs)


def build_loss(name: str, **kwargs: Any) -> Callable[..., Any]:
    """The loss callable registered as ``name``, configured with ``kwargs`` (checked against its factory)."""
    manager = _manager()
    spec = manager.losses.get(name, hint=_failed_plugins_hint(manager))
    _check_kwargs(f"loss {spec.name!r}", spec.factory, kwargs)
    return spec.factory(**kwargs)
