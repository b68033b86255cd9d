"""tickstream: streaming analytics for market tick data.

The shared package: tick model, topic names, settings, wire format and metric
definitions that producers/, processors/ and sinks/ all import from. It
imports no stage; the application shell (``cli``) is the only package that
imports them all.
"""

__version__ = "0.1.0"
