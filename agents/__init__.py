"""REINFORCE agents on gymnasium environments (issue 3; not yet written)."""
