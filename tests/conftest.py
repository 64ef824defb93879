"""Shared fixtures: real mail servers, the app, and the browser."""

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.app",
    "tests.fixtures.browser",
]
