"""The host agent: everything that happens on the machine that runs sandboxes."""
