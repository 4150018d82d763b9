"""The pure core: rule sets and the planner.  No I/O, no clock: ``now`` is always an argument."""
