"""Helpers for users' own tests: a clock they can move."""

from durablectl.clock import FakeClock

__all__ = ["FakeClock"]
