"""Shared code of bench/run: servers, scenarios and their report."""
