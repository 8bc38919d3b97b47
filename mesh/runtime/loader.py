"""Resolving a `mesh run` TARGET to the one `Agent` it names.

TARGET is a file (`agents/kb.py`, optionally `:attr`), a module (`pkg.mod:attr`), or
the name of a built-in agent (`echo`). Every failure is an AgentLoadError with one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from mesh.agent import Agent
from mesh.errors import AgentLoadError
from mesh.text import one_line

__all__ = ["builtin_agents", "load_agent", "preload_agent"]

_BUILTIN_DIRS = (
    Path(__file__).resolve().parent.parent / "_builtin_agents",  # installed wheel
    Path(__file__).resolve().parents[2] / "agents",  # source checkout / editable install
)


def builtin_agents() -> dict[str, Path]:
    """The ready-made agents this installation ships, by name."""
    found: dict[str, Path] = {}
    for directory in _BUILTIN_DIRS:
        if directory.is_dir():
            for path in sorted(directory.glob("*.py")):
                if not path.name.startswith("_"):
                    found.setdefault(path.stem.replace("_", "-"), path)
    return found


def load_agent(target: str) -> Agent:
    """The Agent that `target` names, or AgentLoadError saying why there is not exactly one."""
    if (agent := _preloaded.get(target)) is not None:
        return agent
    source, _, attr = target.partition(":")
    if source.endswith(".py") or "/" in source or Path(source).is_file():
        module = _import_file(Path(source))
    elif not attr and source in builtin_agents():
        module = _import_file(builtin_agents()[source])
    elif attr:
        module = _import_module(source)
    else:
        known = ", ".join(builtin_agents()) or "none"
        raise AgentLoadError(f"{target!r} is not a file, a module:attribute, or a built-in agent (built-in: {known})")
    return _pick(module, attr, target)


def preload_agent(target: str) -> Agent:
    """Load `target` now; later `load_agent(target)` calls in this process (and its forks) return this Agent.

    The launcher of `mesh up` imports each agent once, then forks it: the forks share its pages.
    """
    agent = load_agent(target)
    _preloaded[target] = agent
    return agent


_preloaded: dict[str, Agent] = {}


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise AgentLoadError(f"no such file: {path}")
    name = f"mesh_agent_{path.stem}_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AgentLoadError(f"cannot load {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # so an agent can import its siblings
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's module failed: report it in one line, not a traceback
        raise AgentLoadError(f"cannot import {path}: {_import_failure(exc)}") from exc
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise AgentLoadError(f"no module named {exc.name or name!r}") from exc
    except Exception as exc:  # the user's module failed: report it in one line, not a traceback
        raise AgentLoadError(f"cannot import {name}: {_import_failure(exc)}") from exc


def _pick(module: ModuleType, attr: str, target: str) -> Agent:
    if attr:
        value = getattr(module, attr, None)
        if not isinstance(value, Agent):
            what = "nothing" if value is None else type(value).__name__
            raise AgentLoadError(f"{target}: {attr!r} is {what}, not a mesh.Agent")
        return value
    agents = {name: v for name, v in vars(module).items() if isinstance(v, Agent)}
    if not agents:
        raise AgentLoadError(f"{target} defines no mesh.Agent")
    if len(agents) > 1:
        names = ", ".join(sorted(agents))
        raise AgentLoadError(f"{target} defines {len(agents)} Agents ({names}): name one as {target}:NAME")
    return next(iter(agents.values()))


def _import_failure(exc: BaseException) -> str:
    # "TypeName: message (file.py:line)": the type says what went wrong, the frame where.
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = one_line(str(exc))
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"
