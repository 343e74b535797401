"""Pure figure functions: arrays in, ``plotly`` figures (or patch payloads) out.

No Dash, no session, no I/O here: every function is testable on its own.
"""

from dashboard.figures.common import class_palette, empty_figure, typed_array
from dashboard.figures.errors import confusion_figure, per_class_figure
from dashboard.figures.metadata import (
    binned_loss,
    loss_vs_metadata_figure,
    scatter_figure,
)
from dashboard.figures.population import (
    ColorSpec,
    color_spec,
    highlight_trace,
    population_figure,
    recolor_payload,
    resize_payload,
    size_spec,
)
from dashboard.figures.sample import (
    heatmap_figure,
    heatmap_grid_figure,
    probability_figure,
)
from dashboard.figures.training import training_figure

__all__ = [
    "ColorSpec", "binned_loss", "class_palette", "color_spec", "confusion_figure",
    "empty_figure", "heatmap_figure", "heatmap_grid_figure", "highlight_trace",
    "loss_vs_metadata_figure", "per_class_figure", "population_figure", "probability_figure",
    "recolor_payload", "resize_payload", "scatter_figure", "size_spec", "training_figure",
    "typed_array",
]
