"""Helpers for testing greenroom applications and brokers."""

from .waiting import wait_for

__all__ = ["wait_for"]
