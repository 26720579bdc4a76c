"""Real services the tests start and stop: a throwaway PostgreSQL, a hutch server process."""
