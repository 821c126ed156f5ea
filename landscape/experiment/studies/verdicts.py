"""Across studies: every verdict with its Holm-adjusted p and MDE, the verdicts that changed, the budget."""

GRIDS: list = []
TABLES: dict = {}
FIGURES: dict = {}
