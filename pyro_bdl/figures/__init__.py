"""Figures (PNG, matplotlib), one module per subject."""
