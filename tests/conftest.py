"""Shared fixtures: real mail servers, the app, the browser, fake Microsoft."""

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.app",
    "tests.fixtures.browser",
    "tests.fixtures.email",
    "tests.fakes.microsoft",
]
