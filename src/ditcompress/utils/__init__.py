"""Small shared helpers: strict config base, logging, progress, seeding."""
