"""Implementations of ``fleet.state.StateStore``: SQLite (embedded, the default and the lab's) and
Tablestore (the cloud's). Both keep the same records with the same compare-and-set semantics and
pass the same tests (tests/functional/test_statestore.py).
"""
