"""provisioning.cli."""
