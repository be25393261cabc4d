"""Image-generation metrics and evaluators (CMMD, CLIP score, FID, HPSv2, GenEval, DPG-Bench).

Pure scoring functions work on arrays (embeddings, detections, answers); evaluators wrap them
with models and caches and are chosen by name (`get_evaluator`, `build_evaluators`):

    from ditcompress.metrics import build_evaluators, evaluate
    values = evaluate(build_evaluators(params.evaluate), generate=pipe_fn, prompts=ps, reference=ref)
"""

from __future__ import annotations

from ditcompress.utils.lazy import lazy_getattr

# name -> module; imported on first use so that `import ditcompress.metrics` (e.g. for its
# config) does not load torch and the model libraries
_EXPORTS = {
    "DPGPrompt": "ditcompress.metrics.dpg",
    "DPGQuestion": "ditcompress.metrics.dpg",
    "Detection": "ditcompress.metrics.detection",
    "Detector": "ditcompress.metrics.detection",
    "EVALUATORS": "ditcompress.metrics.config",
    "EmbeddingCache": "ditcompress.metrics.cache",
    "EvaluateConfig": "ditcompress.metrics.config",
    "Evaluator": "ditcompress.metrics.base",
    "GenEvalRules": "ditcompress.metrics.config",
    "HPS_STYLES": "ditcompress.metrics.hps",
    "ImageSet": "ditcompress.metrics.base",
    "METRIC_NAMES": "ditcompress.metrics.config",
    "MetricsError": "ditcompress.metrics.base",
    "apply_hierarchy": "ditcompress.metrics.dpg",
    "build_evaluators": "ditcompress.metrics.registry",
    "clip_score": "ditcompress.metrics.clip",
    "cmmd": "ditcompress.metrics.cmmd",
    "default_cache": "ditcompress.metrics.cache",
    "dpg_score": "ditcompress.metrics.dpg",
    "evaluate": "ditcompress.metrics.registry",
    "evaluate_image": "ditcompress.metrics.geneval",
    "frechet_distance": "ditcompress.metrics.frechet",
    "frechet_distance_from_stats": "ditcompress.metrics.frechet",
    "geneval_results": "ditcompress.metrics.geneval",
    "geneval_score": "ditcompress.metrics.geneval",
    "get_evaluator": "ditcompress.metrics.registry",
    "hps_benchmark_aggregate": "ditcompress.metrics.hps",
    "image_set_from_folder": "ditcompress.metrics.images",
    "load_clip": "ditcompress.metrics.clip",
    "load_dpg_questions": "ditcompress.metrics.dpg",
    "load_geneval_metadata": "ditcompress.metrics.geneval",
    "load_hps_prompts": "ditcompress.metrics.hps",
    "load_image_folder": "ditcompress.metrics.images",
    "relative_position": "ditcompress.metrics.geneval",
    "select_objects": "ditcompress.metrics.geneval",
}

__all__ = [
    "EVALUATORS", "HPS_STYLES", "METRIC_NAMES", "DPGPrompt", "DPGQuestion", "Detection", "Detector",
    "EmbeddingCache", "EvaluateConfig", "Evaluator", "GenEvalRules", "ImageSet", "MetricsError",
    "apply_hierarchy", "build_evaluators", "clip_score", "cmmd", "default_cache", "dpg_score", "evaluate",
    "evaluate_image", "frechet_distance", "frechet_distance_from_stats", "geneval_results", "geneval_score",
    "get_evaluator", "hps_benchmark_aggregate", "image_set_from_folder", "load_clip", "load_dpg_questions",
    "load_geneval_metadata", "load_hps_prompts", "load_image_folder", "relative_position", "select_objects",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
