"""Kept so that ``from analysis.tasks import ...`` (the bring-your-own-model
example of earlier releases) still works: the tasks live in :mod:`core.tasks`."""

from core.tasks import (  # noqa: F401
    DIGITS,
    INPUT_KINDS,
    TASKS,
    Head,
    ModelInput,
    Task,
    classification,
    head_key,
    mnist_sum,
    number_from_ids,
    resolve_task,
)
