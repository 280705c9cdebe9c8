"""The version of the numbers: the code part of every run key.

Bump it (and regenerate tests/fixtures/golden.json with `make golden`) whenever a change alters a number that a
run computes; tests/test_numerics.py fails until you do. Everything else (refactors, comments, new switches that
default to off, reports) leaves it alone, and so leaves every committed run reusable.
"""

NUMERICS_VERSION = "1"
