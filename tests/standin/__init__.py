"""A local stand-in for Fly.io (see README.md): `StandIn` starts it for a test session."""
from .api import StandIn, StandInError

__all__ = ["StandIn", "StandInError"]
