"""A local stand-in for Fly.io (see README.md): `api.StandIn` starts it for a test session.

Nothing is imported here: every `flyctl` call imports this package on its way to `client`, and
starts faster without the test side (api, netns)."""
