"""The orchestrating side: preflight, the cell runner (spawned workers), suites, console output.

Never imports torch: everything that needs it runs in a worker process (qbench.worker).
"""
