"""nats-fly's test kit: the Fly stand-in (`standin`) and the helpers the tests and bench/ share.
Not tests: the tiers under tests/ import it, as bench/ does."""
