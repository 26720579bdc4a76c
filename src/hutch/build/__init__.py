"""Builds: turning an uploaded project into the commands that install, build and serve it."""
