"""Event plane: topic publish/subscribe (zmq | nats)."""
