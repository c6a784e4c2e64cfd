"""kdtune: tune the knowledge-distillation weighting of pose-estimation compression.

Heavy dependencies (torch, ray, mlflow) are imported by the modules that need them,
never here, so that ``kdtune --help`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
