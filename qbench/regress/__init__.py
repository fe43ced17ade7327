"""Nightly regression checks: a suite's baseline (``suites/baselines/<suite>.json``), the gates that compare a
suite run with it (accuracy, latency, memory, size, status), the run's own deployment-gap gate (no baseline
needed) and the reports (terminal, markdown, JUnit XML).

    qbench baseline update --suite NAME [--run ID]    write the baseline from a complete suite run
    qbench check --suite NAME [--run ID]              compare a suite run (default: latest) with it

Both only read what MLflow holds (through :mod:`qbench.track.query`), plus the suite run's local latency
samples when they are on this machine.
"""
