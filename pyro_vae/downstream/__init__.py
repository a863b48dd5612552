"""The downstream tasks of 004 as experiments: the manifold-projection defence (App. F) and OOD detection (§5)."""
