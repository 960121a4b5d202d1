"""Consumer groups: server-side assignment in the manner of KIP-848 (pure logic)."""
