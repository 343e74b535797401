"""Every component id of the dashboard, in one place.

The ids named in the issue (``population-graph`` ... ``export-selection-csv``)
are stable: tests and automation rely on them.
"""

from __future__ import annotations

# -- app level -------------------------------------------------------------------------------
URL = "url"
RUN_SELECT = "run-select"
HEAD_SELECT = "head-select"          # the model head the pages show (multi-head runs)
HEAD_SELECT_BOX = "head-select-box"
RUN_STORE = "run-store"              # {"run": key}
SELECTION_STORE = "selection-store"  # {"run": key, "ids": [sample ids], "source": str}
SAMPLE_STORE = "sample-store"        # {"run": key, "id": sample id}
APP_MESSAGE = "app-message"

# -- population (/) ----------------------------------------------------------------------------
POPULATION_GRAPH = "population-graph"
POPULATION_TOOLTIP = "population-tooltip"
PROJECTION_SELECT = "projection-select"
COLOR_SELECT = "color-select"
SIZE_SELECT = "size-select"
SELECTION_GRID = "selection-grid"
SELECTION_SUMMARY = "selection-summary"
POPULATION_MESSAGE = "population-message"

# -- sample analysis (/sample) -----------------------------------------------------------------
SAMPLE_IMAGE = "sample-image"
SAMPLE_PROBABILITIES = "sample-probabilities"
SAMPLE_METADATA = "sample-metadata"
SAMPLE_TITLE = "sample-title"
HEATMAP_METHOD = "heatmap-method"
HEATMAP_TARGET = "heatmap-target"
SAMPLE_HEATMAP = "sample-heatmap"
HEATMAP_STATUS = "heatmap-status"
HEATMAP_ERROR = "heatmap-error"
SIMILARS_GALLERY = "similars-gallery"
SIMILARS_MAP = "similars-map"
SAMPLE_MESSAGE = "sample-message"

# -- errors (/errors) --------------------------------------------------------------------------
CONFUSION_MATRIX = "confusion-matrix"
CELL_GRID = "cell-grid"
CELL_TITLE = "cell-title"
PER_CLASS_GRAPH = "per-class-graph"
HIGHEST_LOSS_GALLERY = "highest-loss-gallery"
MISCLASSIFIED_GALLERY = "misclassified-gallery"
ERRORS_MESSAGE = "errors-message"

# -- loss vs metadata (/metadata) --------------------------------------------------------------
METADATA_GRAPH = "metadata-graph"
METADATA_COLUMN = "metadata-column"
METADATA_BINS = "metadata-bins"
METADATA_PER_CLASS = "metadata-per-class"
SCATTER_GRAPH = "scatter-graph"
SCATTER_X = "scatter-x"
SCATTER_Y = "scatter-y"
METADATA_MESSAGE = "metadata-message"

# -- training (/training) ----------------------------------------------------------------------
TRAINING_GRAPH = "training-graph"
MODEL_SUMMARY = "model-summary"
HYPERPARAMETERS = "hyperparameters"
TRAINING_MESSAGE = "training-message"
INPUT_CHECK = "input-check"
HEATMAP_LAYER = "heatmap-layer"
HEATMAP_LAYER_ROW = "heatmap-layer-row"
HEATMAP_REQUEST = "heatmap-request"

# -- export (/export) --------------------------------------------------------------------------
EXPORT_CSV = "export-csv"
EXPORT_SELECTION_CSV = "export-selection-csv"
EXPORT_DOWNLOAD = "export-download"
EXPORT_SELECTION_DOWNLOAD = "export-selection-download"
EXPORT_INFO = "export-info"
EXPORT_MESSAGE = "export-message"

# -- uncertainty & OOD (/uncertainty) ----------------------------------------------------------
UNCERTAINTY_HISTOGRAMS = "uncertainty-histograms"
OOD_MAP = "ood-map"
OOD_TABLE = "ood-table"
OOD_DATASET_SELECT = "ood-dataset-select"
OOD_MAP_SELECT = "ood-map-select"
OOD_COLOR_SELECT = "ood-color-select"
OOD_MAP_TOOLTIP = "ood-map-tooltip"
OOD_MAP_OVERLAP = "ood-map-overlap-caption"
OOD_SUMMARY = "ood-summary-line"
OOD_GALLERY_SCORE = "ood-gallery-score"
OOD_CONFIDENT_GALLERY = "ood-confident-gallery"
IN_UNCERTAIN_GALLERY = "in-uncertain-gallery"
UNCERTAINTY_MESSAGE = "uncertainty-message"
OOD_HISTOGRAM_SCALE = "ood-histogram-scale"
OOD_OVERLAP_TABLE = "ood-overlap-table"

# -- experiments (/experiments) ----------------------------------------------------------------
RUNS_TABLE = "runs-table"
RUNS_CURVES = "runs-curves"
RUNS_DIFF = "runs-diff"                    # run B's map, the flipped samples highlighted
RUNS_CAPTION = "runs-caption"
RUNS_SUMMARIES = "runs-summaries"
RUNS_PAIR_STORE = "runs-pair-store"        # {"order": [run names], "a": name, "b": name}
RUNS_PAIR = "runs-pair"
RUNS_SWAP = "runs-swap"
RUNS_DIFF_SUMMARY = "runs-diff-summary"
RUNS_DIFF_GALLERY = "runs-diff-gallery"
RUNS_DIFF_THUMB = "runs-diff-thumb"        # pattern-matching type: {"type", "index"}
RUNS_DIFF_READY = "runs-diff-ready"        # the pair + head, once compared: starts the map
RUNS_DIFF_HEAD = "runs-diff-head"          # the compared head of two multi-head runs
RUNS_DIFF_HEAD_BOX = "runs-diff-head-box"
RUNS_DIFF_SPINNER = "runs-diff-spinner"    # shown while the map's job runs, with its progress
RUNS_DIFF_STATUS = "runs-diff-status"
RUNS_BODY = "runs-body"                    # everything but the message (hidden without runs)
EXPERIMENTS_MESSAGE = "experiments-message"

# -- sample table (/samples) -------------------------------------------------------------------
SAMPLES_GRID = "samples-grid"
SAMPLES_SEARCH = "samples-search"                # the id search box
SAMPLES_ONLY_SELECTED = "samples-only-selected"  # switch: restrict to the shared selection
SAMPLES_USE_SELECTION = "samples-use-selection"  # button: the table's rows become the selection
SAMPLES_COUNT = "samples-count"                  # "N of M samples"
SAMPLES_NOTE = "samples-note"
SAMPLES_REFRESH = "samples-refresh"              # written when the grid's cache was purged
SAMPLES_MESSAGE = "samples-message"

# -- uncertainty & OOD (/uncertainty): in-distribution part, shown with or without an extra set
IN_UNCERTAINTY_SUMMARY = "in-uncertainty-summary"
IN_UNCERTAINTY_HISTOGRAMS = "in-uncertainty-histograms"
IN_UNCERTAINTY_SCORE = "in-uncertainty-score"          # ranks the most-uncertain gallery
IN_MOST_UNCERTAIN_GALLERY = "in-most-uncertain-gallery"
OOD_SECTION = "ood-section"                            # hidden while no extra dataset is open
OOD_HINT = "ood-hint"                                  # how to open one, when none is

# -- insights (/insights) ----------------------------------------------------------------------
INSIGHTS_LIST = "insights-list"            # one card per insight, ranked
INSIGHTS_STATUS = "insights-status"        # "finding insights…" while the job runs
INSIGHTS_MESSAGE = "insights-message"
INSIGHTS_QUERY = "insights-query"          # {"explain": bool} from the URL (?explain=1)
INSIGHT_SELECT = "insight-select"          # pattern-matching type: {"type", "index"}
EXPLAIN_CARD = "explain-card"              # the "Explain selection" card at the top
EXPLAIN_STATUS = "explain-status"
EXPLAIN_CURRENT = "explain-current"        # button: explain the shared selection now
EXPLAIN_SELECTION = "explain-selection"    # the Population page's "Explain this selection"
INSIGHT_CARD = "insight"                   # + "-<rank>": the card of the rank-th insight

# -- polish (appended) ---------------------------------------------------------------------------
CELL_EMPTY = "cell-empty"                  # "No samples with true X predicted as Y."
SIZE_NOTE = "population-size-note"         # what the marker size means
RUNS_DIFF_PENDING = "runs-diff-pending"    # "Computing the diff of A vs B…" while it runs
RUNS_DIFF_PENDING_TEXT = "runs-diff-pending-text"

# -- sample page metadata, run selector progress (appended) ------------------------------------
SAMPLE_METADATA_RAW = "sample-metadata-raw"    # every column under its internal name
SAMPLE_RAW_TOGGLE = "sample-raw-toggle"        # switches the grouped view for the raw one
SAMPLE_BODY = "sample-body"                    # everything but the message (hidden on a bad id)
RUN_STATUS = "run-status"                      # "analysing run X… step k of n" under the navbar
RUN_POLL = "run-poll"                          # ticks while a discovered run is being opened

# -- the population map at scale (appended) ----------------------------------------------------
POPULATION_VIEW = "population-view"            # {"projection", "x", "y"}: the zoomed view
