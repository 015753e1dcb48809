"""State on PostgreSQL (``--database postgresql://…``)."""
