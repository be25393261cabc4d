"""The shapes world: a procedural text-to-image world small enough for a 2-core CPU."""
