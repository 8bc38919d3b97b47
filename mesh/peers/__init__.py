"""Calling other agents: sessions to instances, pooling, routing, retries and failover."""
