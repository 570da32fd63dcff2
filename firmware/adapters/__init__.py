"""One adapter per library or file format, behind the ports."""
