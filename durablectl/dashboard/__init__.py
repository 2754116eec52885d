"""The web dashboard (SPEC §4): a WSGI application over a store, served by the daemon when
``[dashboard] enabled = true`` or mounted by a user in their own web framework."""

from __future__ import annotations

from durablectl.dashboard.app import DashboardApp, create_dashboard_app

__all__ = ["DashboardApp", "create_dashboard_app"]
