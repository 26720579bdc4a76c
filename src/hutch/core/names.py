"""Sandbox names: user-chosen, or generated as two words (``brave-otter``).

A name is also the sandbox's hostname, so it follows the rules of a DNS label.
"""

from __future__ import annotations

import re
import secrets

__all__ = ["NAME_PATTERN", "generate_name", "name_problem"]

NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

_ADJECTIVES = (
    "able agile amber bold brave bright brisk calm clever cosmic crisp curious daring eager "
    "fancy fearless fierce gentle glad golden grand happy hardy jolly keen kind lively lucky "
    "mellow merry mighty nimble noble plucky proud quick quiet rapid ready regal sharp shiny "
    "silent silver sleek smart snappy solid spry steady stellar sunny swift tidy trusty "
    "vivid warm wise witty zesty"
).split()
_ANIMALS = (
    "badger bat bear beaver bison boar bobcat crane crow deer dingo dolphin eagle falcon "
    "ferret finch fox frog gecko gibbon goat goose hare hawk heron hippo ibis jackal jaguar "
    "koala lemur lynx magpie marten mink moose newt ocelot orca otter owl panda puffin quail "
    "rabbit raven robin salmon seal shrew skunk sloth stoat swan tapir tiger toad trout walrus "
    "weasel whale wolf wombat yak zebra"
).split()


def generate_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_ANIMALS)}"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a sandbox name, or None if it can."""
    if NAME_PATTERN.fullmatch(name):
        return None
    return (
        "names are 1-63 lowercase letters, digits and '-', starting and ending with a letter "
        "or digit (they are also the hostname)"
    )
