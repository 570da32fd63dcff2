"""Technician and issuer tools: keys, passes, venues, device configs, provisioning QR, lists."""
