"""Runnable examples; ``email_campaign`` is the demo behind ``make demo``."""
