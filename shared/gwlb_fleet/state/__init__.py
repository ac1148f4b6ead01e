"""The control plane's state: the records (``records``: instances, groups, idempotency) and their
stores, SQLite (embedded, the default and the lab's) and Tablestore (the cloud's). Both keep the
same records with the same compare-and-set semantics and pass the same tests
(tests/functional/test_statestore.py). ``fake_ots`` is an in-memory Tablestore service."""
