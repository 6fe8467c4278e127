"""The earlier name of analysis/mistakes.py (mistake analysis of dev predictions) and of
the prediction-file readers and disagreement rule now in analysis/predictions.py. New
code imports those; this name is kept so that code written against it still runs."""
from analysis.mistakes import (LENGTH_BINS, NEGATION, ONE_LABEL_DROPS, OVERLAP_BINS, SLICES, WORD,  # noqa: F401
                               add_slices, confusion, frame_metrics, has_negation, lexical_overlap, slice_metrics,
                               slice_order, words, worst_examples)
from analysis.predictions import (DISAGREE, REQUIRED, STS_DISAGREE, agreement, check_frame,  # noqa: F401
                                  disagreement_summary, disagreements, load_predictions, name_classes, name_sentiment,
                                  predictions_path)
