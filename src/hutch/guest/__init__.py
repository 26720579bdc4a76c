"""The in-sandbox agent (standard library only). See :mod:`hutch.guest.agent`."""
