"""Request plane: send a request to one instance, receive a stream of responses (tcp | nats)."""
