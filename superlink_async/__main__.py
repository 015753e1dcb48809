"""``python -m superlink_async``: the same command as the ``superlink-async`` script."""

from superlink_async.cli import main

# Guarded: worker processes (anyio's process pool) load this file again as ``__mp_main__``.
if __name__ == "__main__":
    main()
