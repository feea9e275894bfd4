"""KV-cache primitives shared by the router and the mocker: block hashing, block pool."""
