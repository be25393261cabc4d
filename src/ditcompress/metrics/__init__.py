"""Image-generation metrics and evaluators (CMMD, CLIP score, FID, HPSv2, GenEval, DPG-Bench).

Pure scoring functions work on arrays (embeddings, detections, answers); evaluators wrap them
with models and caches and are chosen by name (`get_evaluator`, `build_evaluators`):

    from ditcompress.metrics import build_evaluators, evaluate
    values = evaluate(build_evaluators(params.evaluate), generate=pipe_fn, prompts=ps, reference=ref)
"""

from ditcompress.metrics.base import Evaluator, ImageSet, MetricsError
from ditcompress.metrics.cache import EmbeddingCache, default_cache
from ditcompress.metrics.clip import clip_score, load_clip
from ditcompress.metrics.cmmd import cmmd
from ditcompress.metrics.config import METRIC_NAMES, EvaluateConfig
from ditcompress.metrics.detection import Detection, Detector
from ditcompress.metrics.dpg import DPGPrompt, DPGQuestion, apply_hierarchy, dpg_score, load_dpg_questions
from ditcompress.metrics.frechet import frechet_distance, frechet_distance_from_stats
from ditcompress.metrics.geneval import (GenEvalRules, evaluate_image, geneval_results, geneval_score,
                                         load_geneval_metadata, relative_position, select_objects)
from ditcompress.metrics.hps import HPS_STYLES, hps_benchmark_aggregate, load_hps_prompts
from ditcompress.metrics.images import image_set_from_folder, load_image_folder
from ditcompress.metrics.registry import EVALUATORS, build_evaluators, evaluate, get_evaluator

__all__ = [
    "EVALUATORS", "HPS_STYLES", "METRIC_NAMES", "DPGPrompt", "DPGQuestion", "Detection", "Detector",
    "EmbeddingCache", "EvaluateConfig", "Evaluator", "GenEvalRules", "ImageSet", "MetricsError",
    "apply_hierarchy", "build_evaluators", "clip_score", "cmmd", "default_cache", "dpg_score", "evaluate",
    "evaluate_image", "frechet_distance", "frechet_distance_from_stats", "geneval_results", "geneval_score",
    "get_evaluator", "hps_benchmark_aggregate", "image_set_from_folder", "load_clip", "load_dpg_questions",
    "load_geneval_metadata", "load_hps_prompts", "load_image_folder", "relative_position", "select_objects",
]
