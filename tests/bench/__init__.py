"""Benchmarks (not tests): ``make bench`` runs them all; each module also runs alone.

* ``python -m tests.bench.engine`` — timer precision and burst delivery of the alert engine.
* ``python -m tests.bench.api`` — declaration latency under a steady open-loop load, and the
  incident list with 10,000 active incidents.
* ``python -m tests.bench.first_alert`` — the first alert after a fresh start of the service,
  over ten starts (each a new process).

Nothing here is collected by pytest (no ``test_`` prefix).  Everything listens on 127.0.0.1,
every loop is bounded, and every helper process stops by itself.
"""
