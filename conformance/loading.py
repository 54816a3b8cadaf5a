"""Loading what a run is given: the adapter (``--impl``), the checkpoint and the xfails file.

Each failure raises a :class:`LoadError` (an :class:`AdapterLoadError` for the adapter) saying
what was wrong and how to fix it; the pytest plugin reports it as a usage error. Scripts load
adapters with :func:`load_adapter` as well. No pytest here.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from .adapter import CAPABILITIES, Adapter, Params
from .adapters import BUILTINS


class LoadError(ValueError):
    """Something a run was given cannot be loaded (a usage error of the suite)."""


class AdapterLoadError(LoadError):
    """``--impl`` does not name a usable adapter."""


def load_adapter(name: str) -> Adapter:
    """Resolve ``--impl``: a built-in name, ``package.module`` or ``package.module:attribute``.

    The attribute may be an :class:`Adapter` instance, an Adapter subclass (instantiated with no
    arguments) or a zero-argument factory returning an Adapter. Without ``:attribute`` the module's
    ``adapter`` attribute is used, or else the one Adapter subclass the module defines.

    Raises:
        AdapterLoadError: with what was wrong and how to fix it.
    """
    target = BUILTINS.get(name, name)
    module_name, _, attribute = target.partition(":")
    where = f"--impl={name}"
    if not module_name:
        raise AdapterLoadError(f"{where}: give a module, as package.module[:attribute]")
    module = _import(module_name, where)
    obj = _adapter_object(module, module_name, attribute, where)
    if isinstance(obj, type):
        if not issubclass(obj, Adapter):
            raise AdapterLoadError(
                f"{where}: {obj.__qualname__} is a class but not a subclass of "
                "gpt2_conformance.adapter.Adapter; derive your adapter from it"
            )
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(obj.__abstractmethods__))
            raise AdapterLoadError(
                f"{where}: the adapter {obj.__qualname__} is missing required method {missing}; "
                "implement it (see gpt2_conformance.adapter.Adapter)"
            )
    if not isinstance(obj, Adapter):
        obj = _call_factory(obj, module_name, attribute, where)
    _check_adapter(obj, where)
    return obj


def _import(module_name: str, where: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise AdapterLoadError(
                f"{where}: cannot import module {module_name!r} ({error}). Install the package "
                "that provides it, or add its folder to PYTHONPATH; or name a built-in: "
                f"{', '.join(BUILTINS)}"
            ) from error
        raise AdapterLoadError(
            f"{where}: importing {module_name!r} failed because a module it needs is missing "
            f"({error}); install that dependency"
        ) from error
    except SystemExit as error:
        raise AdapterLoadError(
            f"{where}: importing {module_name!r} called sys.exit({error.code!r}); an adapter "
            "module must not exit when imported"
        ) from error
    except Exception as error:
        raise AdapterLoadError(
            f"{where}: importing {module_name!r} raised {type(error).__name__}: {error}"
        ) from error


def _call_factory(factory: Any, module_name: str, attribute: str, where: str) -> Adapter:
    if not callable(factory):
        raise AdapterLoadError(
            f"{where}: {module_name}.{attribute or 'adapter'} is of type "
            f"{type(factory).__name__}, not a gpt2_conformance.Adapter (nor a class or factory "
            "that makes one)"
        )
    call = f"{module_name}.{getattr(factory, '__name__', '?')}()"
    try:
        obj = factory()
    except SystemExit as error:
        raise AdapterLoadError(
            f"{where}: creating the adapter with {call} called sys.exit({error.code!r})"
        ) from error
    except Exception as error:
        raise AdapterLoadError(
            f"{where}: creating the adapter with {call} raised {type(error).__name__}: {error}"
        ) from error
    if not isinstance(obj, Adapter):
        raise AdapterLoadError(
            f"{where}: the factory returned an object of type {type(obj).__name__}, not a "
            "gpt2_conformance.Adapter"
        )
    return obj


def _adapter_object(module: Any, module_name: str, attribute: str, where: str) -> Any:
    if attribute:
        try:
            return getattr(module, attribute)
        except AttributeError:
            raise AdapterLoadError(
                f"{where}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if hasattr(module, "adapter"):
        return module.adapter
    defined = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Adapter)
        and value.__module__ == module.__name__
        and not inspect.isabstract(value)
    ]
    if len(defined) == 1:
        return defined[0]
    found = f" (it defines {', '.join(c.__name__ for c in defined)})" if defined else ""
    raise AdapterLoadError(
        f"{where}: module {module_name!r} has no attribute 'adapter'{found}; name the adapter "
        f"as {module_name}:ATTRIBUTE or set `adapter = YourAdapter()` in the module"
    )


def _check_adapter(adapter: Adapter, where: str) -> None:
    unknown = sorted(set(adapter.capabilities) - set(CAPABILITIES))
    if unknown:
        raise AdapterLoadError(
            f"{where}: the adapter claims unknown capabilities {', '.join(unknown)}; known: "
            f"{', '.join(CAPABILITIES)}"
        )
    if adapter.label_convention not in ("inputs", "shifted"):
        raise AdapterLoadError(
            f"{where}: label_convention is {adapter.label_convention!r}; it must be "
            "'inputs' or 'shifted'"
        )


def resolve_device(requested: str, adapter: Adapter) -> str:
    """``--device`` for ``adapter``: auto picks cuda when the adapter supports it and it is here."""
    supported = tuple(adapter.devices)
    if requested == "auto":
        return "cuda" if "cuda" in supported and cuda_available() else "cpu"
    if requested == "cuda" and not cuda_available():
        raise LoadError(
            "--device=cuda: CUDA is not available here (torch.cuda.is_available() is False); "
            "use --device=cpu, or --device=auto to take CUDA only when present"
        )
    if requested not in supported:
        raise LoadError(
            f"--device={requested}: the adapter {adapter.name!r} supports "
            f"{', '.join(supported)} (its `devices`); choose one of those"
        )
    return requested


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def load_checkpoint(path_text: str) -> tuple[tuple[Any, Params], Path]:
    """Read ``--checkpoint``: a checkpoint directory, or a weights file beside its config.json.

    Returns ``((config, float64 params), path)``; a bad checkpoint raises :class:`LoadError`.
    """
    from gpt2_reference import checkpoint as ck

    path = Path(path_text).expanduser()
    try:
        config = None
        if path.is_file() and (path.parent / ck.CONFIG_FILE).is_file():
            config = ck.read_config(path.parent)
        config, state_dict = ck.load_checkpoint(path, config)
        params = ck.to_numpy_params(state_dict)
    except ck.CheckpointError as error:
        raise LoadError(f"--checkpoint={path_text}: {error}") from error
    return (config, params), path


def missing_xfails(path: str) -> str | None:
    """The warning for an xfails file that does not exist (None when it does).

    A missing file lists no expected failure: the run is then as strict as it can be, so a CI
    job whose file is not created yet (or was deleted when its last entry was fixed) runs on,
    and is told how to create one."""
    if Path(path).exists():
        return None
    return (
        f"--xfails-file={path}: no such file, so no failure is expected; to expect some, create "
        "it with one requirement id or property name per line (# starts a comment)"
    )


def read_xfails(path: str) -> list[str]:
    """The entries of an xfails file: one per line; ``#`` starts a comment; blanks ignored.
    A file that does not exist has no entries (:func:`missing_xfails` says so)."""
    if missing_xfails(path) is not None:
        return []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise LoadError(f"--xfails-file={path}: cannot read it ({error})") from error
    entries = []
    for line in text.splitlines():
        entry = line.split(" #", 1)[0].strip()
        if entry and not entry.startswith("#"):
            entries.append(entry)
    return entries
