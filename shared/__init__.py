"""Common library of the trading core: config, logging, server bootstrap, errors, database, money.

It holds no business rules and never imports from ``services``.
"""
