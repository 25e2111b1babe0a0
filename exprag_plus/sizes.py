"""Picture size bounds, apart from plot.py so that the CLI can state them without loading the plotter."""

WIDTH_RANGE = (240, 10_000)  # pixels; the drawing's cost grows with the size
HEIGHT_RANGE = (160, 10_000)
