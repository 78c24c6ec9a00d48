"""Reusable widgets: the config form, image grids and the compare view, the loss plot."""
