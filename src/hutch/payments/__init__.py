"""Payments for deploys: chains, tokens and on-chain checks (seed 003)."""
