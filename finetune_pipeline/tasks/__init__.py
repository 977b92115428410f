"""The kinds of data the pipeline serves, one module each, and the registry that picks one.

`task_for(settings)` (or `task_named(metrics["task"])` for a saved result) is the only place that reads a
kind's name; everything else asks the task object (`tasks/base.py` is the contract).
"""

from __future__ import annotations

from finetune_pipeline.settings import Settings
from finetune_pipeline.tasks.base import Metric, Splits, Task
from finetune_pipeline.tasks.classification import ClassificationTask
from finetune_pipeline.tasks.instruction import InstructionTask

TASKS: dict[str, Task] = {task.name: task for task in (ClassificationTask(), InstructionTask())}


def task_named(name: str | None) -> Task:
    """The task called `name` (as in settings, metrics.json and the registry); classification when None."""
    return TASKS[name or "classification"]


def task_for(settings: Settings) -> Task:
    return task_named(settings.task)


__all__ = ["TASKS", "Metric", "Splits", "Task", "task_for", "task_named"]
