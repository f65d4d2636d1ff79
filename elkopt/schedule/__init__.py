"""Schedules, the analytic timeline and the independent checker."""
