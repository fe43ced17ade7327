"""Reports over tracked cells: comparison tables (``qbench compare``), Pareto plots, the self-contained HTML
report written at the end of each suite, and ``qbench ui`` (the MLflow UI on the local store).

Reports only ever read what was recorded (MLflow runs, or the local records when MLflow is off).
"""
