"""A Toxiproxy-API-compatible TCP fault proxy (asyncio)."""
