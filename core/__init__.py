"""The lowest layer: what both ``models/`` and ``analysis/`` need.

Errors the user can fix (:mod:`core.errors`), datasets and their readers
(:mod:`core.datasets`, :mod:`core.image_files`, :mod:`core.image_folder`,
:mod:`core.image_manifest`, :mod:`core.corruptions`), the task a model solves
and its input contract (:mod:`core.tasks`) and device choice
(:mod:`core.device`). Nothing here imports ``models``, ``analysis`` or
``dashboard``; the only sideways import is :class:`cache.errors.CacheError`,
so that :data:`core.errors.USER_ERRORS` names both kinds of expected error.
"""
