"""rescore.kernels: numba kernels over large arrays, each beside a NumPy reference.

Every kernel takes `impl="auto" | "numba" | "ref"` (see `_dispatch`). Nothing here imports torch,
and numba is imported only when a numba kernel first runs.
"""

from ._dispatch import Impl, NumbaUnavailableError
from .condition import DegenerateConditionError, condition
from .manipulate import layer_sets_all_and_each, manipulate
from .project import project, project_chunks
from .select import Selection, select_top_bottom

__all__ = [
    "DegenerateConditionError",
    "Impl",
    "NumbaUnavailableError",
    "Selection",
    "condition",
    "layer_sets_all_and_each",
    "manipulate",
    "project",
    "project_chunks",
    "select_top_bottom",
]
