"""``python -m superlink_async``: the same command as the ``superlink-async`` script."""

from superlink_async.cli import main

# Guarded: a child process started by multiprocessing loads this file again, as
# ``__mp_main__``, and must not start a server.
if __name__ == "__main__":
    main()
