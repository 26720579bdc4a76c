"""Domain services: what hutch does, independent of how it is spoken to."""
