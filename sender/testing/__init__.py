"""Test helpers: a scriptable fake inbox HTTP API server."""

from sender.testing.fake_inbox import FakeInbox, RecordedRequest, Step

__all__ = ["FakeInbox", "RecordedRequest", "Step"]
