"""Periodic work run by the jobs process (see the README's runtime processes).

Each module exposes plain functions that run inside an app context and are safe to run in
several processes at once (work is claimed row by row with atomic UPDATEs), and a ``JOBS``
list of (name, interval_seconds, function) for a scheduler.
"""
