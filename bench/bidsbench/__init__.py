"""The bids benchmark's parts; ``bench/bids_bench.py`` is the entry point that runs them.

- ``common``: the sizes of a run (full and quick) and small helpers shared by all parts.
- ``report``: a measurement's result, the run's report and the printed table.
- ``instances``: the bids service subprocesses (and the tokens they accept).
- ``loading``: the COPY loads (PENDING bids, the tasks to list).
- ``withdraw``: 1. WithdrawBid through the service against raw asyncpg.
- ``listing``: 2. ListTasks with the index against a forced sequential scan.
- ``keyset``: 3. the deep keyset page against the first.

The modules import each other as ``bidsbench.*``: ``bench/`` is on the path when
the entry point runs as a script, for pytest (its ``pythonpath``) and for mypy
(its ``mypy_path``).
"""
