"""``python -m dashboard.bench``: the dashboard benchmark, kept in :mod:`benchmarks.server`."""

if __name__ == "__main__":
    import sys

    from benchmarks.server import main

    sys.exit(main())
