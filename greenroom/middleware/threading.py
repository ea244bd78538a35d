"""Compatibility path: :mod:`greenroom.threading` under ``greenroom.middleware``."""

from ..threading import Interrupt, current_platform, is_gevent_active, raise_thread_exception, supported_platforms

__all__ = ["Interrupt", "current_platform", "is_gevent_active", "raise_thread_exception", "supported_platforms"]
