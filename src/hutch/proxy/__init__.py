"""The reverse proxy in front of sandboxes' ports: preview URLs and, later, deployed apps."""
