"""The shapes world: a procedural text-to-image world small enough for a 2-core CPU.

    config.py   `ShapesDataConfig`, the `data:` section of params.yaml
    vocab.py    shape geometry, GenEval's ten colours, number words
    prompts.py  captions as GenEval metadata items (six GenEval tags + dense captions)
    scene.py    sample a scene that satisfies an item (sizes, gaps, unambiguous positions)
    render.py   anti-aliased rendering of scenes
    truth.py    GenEval's rules on ground-truth scenes (`scene_satisfies`, `answer_check`)
    dpg.py      DPG-Bench-style question files with machine-checkable `check`s
    dataset.py  `build_dataset` / `load_split` / `read_geneval_metadata`
    detector.py `ShapesDetector`, the exact detector behind GenEval / DPG scoring

Kept free of imports here: `params.py` imports `shapes.config` and must stay light.
"""
