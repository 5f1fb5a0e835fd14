"""Test doubles for external services (real servers on 127.0.0.1).

Import the one you need, e.g. ``from tests.fakes.fake_twilio import FakeTwilio``;
this package imports nothing itself, so using one fake never pulls in another's
dependencies.
"""
