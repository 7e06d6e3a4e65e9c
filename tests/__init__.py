"""The test suite is a package so that every test module gets a unique dotted name
(``tests.core.test_presence`` and ``tests.xmpp.test_presence`` can both exist); see the
``[tool:pytest]`` section of setup.cfg and ``tests/test_architecture.py``."""
