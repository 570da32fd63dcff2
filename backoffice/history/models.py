"""No models: scan events stay in provisioning.history's tables (``events``, ``written_off``,
``sources``), in the back office's own database, so `qrgate history collect|query|prune`
keep working on it unchanged."""
