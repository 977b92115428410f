"""The kinds of data the pipeline serves, one module each, and the registry that picks one.

`task_for(settings)` (or `task_named(metrics["task"])` for a saved result) is the only place that reads a
kind's name; everything else asks the task object (`tasks/base.py` is the contract).
"""

from __future__ import annotations

from finetune_pipeline.settings import Settings, SettingsError
from finetune_pipeline.tasks.base import Metric, Splits, Task
from finetune_pipeline.tasks.classification import ClassificationTask
from finetune_pipeline.tasks.instruction import InstructionTask
from finetune_pipeline.tasks.preference import PreferenceTask

TASKS: dict[str, Task] = {task.name: task for task in (ClassificationTask(), InstructionTask(), PreferenceTask())}


def task_named(name: str | None) -> Task:
    """The task called `name` (as in settings, metrics.json and the registry); classification when None."""
    return TASKS[name or "classification"]


def task_for(settings: Settings) -> Task:
    """The kind `settings.task` names, once it has checked the settings it needs (`Task.settings_problem`):
    a SettingsError naming the setting to add or change otherwise."""
    task = task_named(settings.task)
    if problem := task.settings_problem(settings):
        raise SettingsError(f"finetune.yaml: {problem}")
    return task


__all__ = ["TASKS", "Metric", "Splits", "Task", "task_for", "task_named"]
