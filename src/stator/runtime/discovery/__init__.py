"""Discovery: a leased key-value store with prefix watches (mem | file | etcd)."""
