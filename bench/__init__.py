"""Load benchmark of the trading core: ``python -m bench`` (``make bench``), ``--soak`` (``make soak``), ``--quick``."""
