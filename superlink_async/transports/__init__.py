"""Transports: convert wire requests, delegate to services, convert the answers back."""
