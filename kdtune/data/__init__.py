"""Pose data: the in-memory set every trial trains on, its COCO loader and the synthetic
generator."""

from __future__ import annotations

from kdtune.data.poseset import PoseSet

__all__ = ["PoseSet"]
