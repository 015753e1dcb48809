"""The load generator behind ``make bench``: any SuperLink command, measured on the 1.18.0 wire.

Simulated SuperNodes (``loadgen``) and a ServerApp driver (``driver``) speak the real
protocol through grpcio's C-core client, so the instrument costs less than the servers it
compares. ``scenarios`` runs the targets alternately and ``report`` renders the results.
"""
