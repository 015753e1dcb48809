"""``python -m superlink_async``: the same command as the ``superlink-async`` script."""

from superlink_async.cli import main

main()
