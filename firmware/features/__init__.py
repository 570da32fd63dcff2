"""One class per capability of the running gate, wired through its constructor."""
