"""`python -m bench NAME [options]`: run one benchmark (each module has `main(argv)`)."""

import importlib
import sys

BENCHMARKS = ("completion", "remote", "soak", "explain-fix", "keystroke", "project-completion", "explain", "fix")

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        sys.exit(f"usage: python -m bench {{{','.join(BENCHMARKS)}}} [options]")
    sys.exit(importlib.import_module(f"bench.{sys.argv[1].replace('-', '_')}").main(sys.argv[2:]))
