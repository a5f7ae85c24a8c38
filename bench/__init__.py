"""Benchmarks, run as `python -m bench NAME` (completion, remote, soak).

Each one measures its baseline side by side in the same run (the machine is shared and noisy),
prints the figures and writes a Markdown report with a plot under bench/results/.
"""
