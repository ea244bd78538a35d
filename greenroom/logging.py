"""Logger naming (public, for compatibility with Dramatiq extensions)."""

from __future__ import annotations

import logging

__all__ = ["get_logger"]


def get_logger(module: str, name: str | type | None = None) -> logging.Logger:
    """The logger named ``module.name`` (a class contributes its ``__name__``)."""
    logger_fqn = module
    if name is not None:
        if isinstance(name, type):
            name = name.__name__
        logger_fqn += "." + name
    return logging.getLogger(logger_fqn)
