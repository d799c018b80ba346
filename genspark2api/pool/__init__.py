"""The cookie pool, the failover runner, thread bindings."""
