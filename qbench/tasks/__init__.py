"""Task plug-ins (``task=NAME``): a task is the module ``qbench/tasks/NAME.py`` with a :class:`Task` subclass
decorated with :func:`register`, plus ``conf/task/NAME.yaml``. Nothing else lists tasks: the module is imported
when a cell asks for its name, and names are listed from this folder without importing anything
(:func:`qbench.config.names.task_names`, which validation uses).

Torch-free at import time; task modules themselves run in the worker and may import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

from qbench.config.names import task_names
from qbench.tasks.base import LATENCY, THROUGHPUT, Evaluation, Task, Workload, collect, first

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: ``cls`` is the task ``cls.name``, defined in ``qbench/tasks/<cls.name>.py``."""
    if not cls.name or not cls.metric:
        raise TypeError(f"{cls.__name__}: a task needs a name and a metric (class attributes)")
    _REGISTRY[cls.name] = cls
    return cls


def get_task(name: str, options: Mapping[str, Any] | None = None) -> Task:
    """The task ``name`` (``task.name``), with its ``task.options``."""
    if name not in _REGISTRY:
        valid = task_names()
        if name not in valid:
            raise ValueError(f"task.name={name}: invalid value; valid values: {', '.join(valid)}")
        import_module(f"{__name__}.{name}")
        if name not in _REGISTRY:
            raise LookupError(f"qbench/tasks/{name}.py registers no task named {name!r} (a Task subclass with "
                              f"name = {name!r}, decorated with @register)")
    return _REGISTRY[name](options)


__all__ = ["LATENCY", "THROUGHPUT", "Evaluation", "Task", "Workload", "collect", "first", "get_task", "register",
           "task_names"]
