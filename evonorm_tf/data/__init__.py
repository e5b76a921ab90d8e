"""Offline data for demos and tests: nothing here downloads anything."""
