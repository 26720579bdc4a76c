"""Sandbox drivers: one interface (:mod:`.base`), a fake for tests, runc for real."""
