"""The composition root: the gate builder and the ordered shutdown."""
