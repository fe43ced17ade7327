"""The measuring side: one cell in a freshly spawned interpreter (``python -m qbench.worker CELL_DIR``).

Never imports qbench.track, qbench.report or qbench.regress: it returns a result, the orchestrator records it.
"""
