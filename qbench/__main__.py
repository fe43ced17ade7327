from qbench.cli import entry

entry()
