"""Storing and fetching actor results.

Add the :class:`Results` middleware with a backend from :mod:`greenroom.results.backends`, then
call ``message.get_result()``.
"""

from .backend import ResultBackend
from .errors import ResultError, ResultFailure, ResultMissing, ResultTimeout
from .middleware import Results
from .result import Missing

__all__ = ["Missing", "ResultBackend", "ResultError", "ResultFailure", "ResultMissing", "ResultTimeout", "Results"]
