"""The pure core: decisions, credentials, codecs and models. No I/O, no clock reads."""
