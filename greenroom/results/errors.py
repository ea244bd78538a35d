"""Errors raised when fetching results.

They are defined in :mod:`greenroom.errors`, with the rest of the hierarchy, so that the core
(``group.completed_count``) can catch them without importing this package.
"""

from __future__ import annotations

from ..errors import ResultError, ResultFailure, ResultMissing, ResultTimeout

__all__ = ["ResultError", "ResultFailure", "ResultMissing", "ResultTimeout"]
