"""Importing the application: its modules, and the broker the command line names.

Shared by the worker processes, the fork processes and ``greenroomctl``. Every way an import can
fail (a missing module or attribute, a syntax error, a schedule declared with bad input) becomes
one :class:`ImportError` whose message is the line shown to the user; the commands exit with
``ExitCode.IMPORT`` (2) on it.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from ..broker import Broker, get_broker
from ..scheduling import ScheduleError

__all__ = ["import_broker", "import_module", "import_object"]


def import_module(name: str) -> ModuleType:
    """Import the module ``name`` of the application.

    Raises:
      ImportError: When it cannot be imported, a syntax error in its source (or in a module it
        imports) or a bad schedule declaration included: either way the code cannot run, and the
        command exits with ``ExitCode.IMPORT`` and one line instead of crashing with a traceback.
    """
    try:
        return importlib.import_module(name)
    except SyntaxError as exc:
        # str() names the file and line: "invalid syntax (app.py, line 3)".
        raise ImportError(f"{type(exc).__name__}: {exc}", name=name) from exc
    except ScheduleError as exc:
        # The message names the schedule and the problem: "schedule 'nightly': unknown time zone ...".
        raise ImportError(str(exc), name=name) from exc


def import_object(value: str) -> tuple[ModuleType, object | None]:
    """Import ``module`` or ``module:dotted.attribute``.

    Raises:
      ImportError: When the module or the attribute does not exist, or the module has a syntax error.
    """
    module_name, _, attribute = value.partition(":")
    module = import_module(module_name)
    if not attribute:
        return module, None
    try:
        return module, functools.reduce(getattr, attribute.split("."), module)
    except AttributeError:
        raise ImportError(f"module {module_name!r} does not define {attribute!r}") from None


def import_broker(value: str) -> Broker:
    """The broker named on the command line: ``module``, ``module:broker`` or ``module:callable``.

    Raises:
      ImportError: When something cannot be imported, or the attribute is not a broker.
    """
    _, target = import_object(value)
    if target is None:
        return get_broker()
    if isinstance(target, Broker):
        return target
    if callable(target):
        try:
            target()
        except ScheduleError as exc:  # a setup function that declares schedules
            raise ImportError(str(exc)) from exc
        return get_broker()
    raise ImportError(f"{value!r} is not a broker, nor a callable that sets one up")
