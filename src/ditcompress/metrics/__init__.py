"""Image-generation metrics and evaluators (CMMD, CLIP score, FID, HPSv2, GenEval, DPG-Bench)."""
