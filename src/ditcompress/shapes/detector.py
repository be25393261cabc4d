"""The exact detector of the shapes world: colour segmentation, connected components, template fit.

It implements `metrics.detection.Detector`, so GenEval / DPG scoring treats it exactly like the
Mask2Former detector of the real benchmark. Steps for one image:

1. background = median colour of the image border;
2. "core" pixels = pixels within `tolerance` of a palette colour and nearer to it than to the
   background; core pixels of one colour form connected components (8-connected);
3. anti-aliased / blurred edge pixels join the nearest core component within EDGE_PX, and every
   pixel of a component gets a coverage alpha by projecting its colour onto the line from the
   background to the component's colour;
4. the shape class is the template (rendered with the renderer's own `coverage`, sized and
   placed from the alpha moments) with the highest soft IoU; the box is that template's box.

`score` is a confidence in [0, 1] that the component is one object of its class: how well the best
template fits, times how clearly it beats the second-best class (soft IoU lead), times a penalty
for shapes too small to tell apart: below a template size of 6 px, the world's smallest object,
falling to zero at 4 px. A 4 px blob fits a circle or a bar about as well as a real shape does,
so without that penalty the failed samples of a 20-step teacher, fields of random colour blobs,
scored GenEval 0.284 (0.185 with it; README, "Chance level, and shapes too small to name").

The fit is the template's mean outline error in pixels, 2·area·(1 − IoU) / (perimeter·(1 + IoU)),
the mean distance an outline must be off by (as much pushed out as pulled in) to give that IoU.
A soft IoU alone judges the same pixel of error more harshly on a small shape, whose outline is
long for its area (the PixArt VAE's round trip of four 7 px bars scored IoU 0.83-0.89 with
outlines 0.2 px off, and failed GenEval's counting threshold). Clean renders score ~1;
blurred-but-clear shapes and VAE round trips stay above GenEval's counting threshold 0.9; merged
or misshapen blobs fall well below it; speckles below MIN_AREA_PX pixels are dropped. As in GenEval, where CLIP names the colour separately from the
detector's confidence, the colour does not enter the score: it is the nearest of GenEval's ten
colours, with `extra["color_confidence"]` saying how clearly (0 half-way between two palette
colours).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ditcompress.metrics.detection import Detection
from ditcompress.shapes.config import ShapesDataConfig
from ditcompress.shapes.render import coverage
from ditcompress.shapes.vocab import PALETTE, SHAPES, ShapeKind

VERSION = 3  # bump when detections change, so cached detections are recomputed
# lengths in pixels are for 32 px images and scale with the image (areas with its square)
REFERENCE_PX = 32
EDGE_PX = 2.0  # how far outside its core a component may claim edge pixels
CROP_PAD = 3  # pixels around a component's region that its fit looks at
ALPHA_FLOOR = 0.1  # alphas below this are background noise
MASK_ALPHA = 0.45  # half-covered pixels belong to the mask (0.5 less uint8 rounding)
MIN_AREA_PX = 4.0  # smaller components are speckles
# template size (px) at which a class is asserted with no and with full confidence: the scene
# sampler never draws an object smaller than 6 px (scene.MIN_SIZE_PX); blobs of 3-5 px in a
# teacher's failed samples fit a template within an outline error of 0.3 px, because at that
# size every blob is roughly round or roughly long
SIZE_FAIL_PX, SIZE_CLEAR_PX = 4.0, 6.0
BLUR_SIGMAS = (0.0, 0.5, 0.9)  # template blurs tried, so soft edges of generated images still fit
# mean outline error (px) mapped to confidence 1 and 0. These are the soft-IoU anchors the
# detector used before (0.92 and 0.6) for a circle of radius 5-6 px, the size of a two-object
# scene's, so mid-sized shapes are judged as before and small ones no longer more harshly.
# A quarter pixel covers anti-aliasing and VAE blur (the PixArt VAE's round trips of the eval
# renders: median 0.14 px, max 0.23 px)
EDGE_CLEAN_PX, EDGE_FAIL_PX = 0.25, 1.25
MARGIN_CLEAR = 0.08  # IoU lead over the runner-up class that counts as unambiguous
COLOR_MARGIN = 0.3  # relative lead over the next palette colour that counts as an unambiguous colour
MINORITY = 3.0  # a touching component this many times smaller is hue drift of its neighbour
RIM_RESIDUAL = 20.0  # pixels this close to a background-to-neighbour blend are that neighbour's rim
_EIGHT = np.ones((3, 3), bool)


class ShapesDetector:
    """Detects shapes of `classes` in RGB uint8 images; colours are named from the whole palette."""

    def __init__(
        self,
        vocab: ShapesDataConfig | Sequence[str] | None = None,
        colors: Sequence[str] | None = None,
        tolerance: float = 60.0,
    ):
        shapes = vocab.shapes if isinstance(vocab, ShapesDataConfig) else tuple(vocab or ShapesDataConfig().shapes)
        for name in shapes:
            if name not in SHAPES:
                raise ValueError(f"shapes: unknown name {name!r} (known: {', '.join(SHAPES)})")
        # GenEval names colours among all ten of its colours, whatever the prompts use
        self.colors = tuple(colors or PALETTE)
        for name in self.colors:
            if name not in PALETTE:
                raise ValueError(f"colors: unknown name {name!r} (known: {', '.join(PALETTE)})")
        self.classes = tuple(shapes)
        self.tolerance = float(tolerance)
        # evaluators cache detections under this key: it changes with anything that changes them
        self.id = f"shapes-v{VERSION}:{','.join(self.classes)}:{','.join(self.colors)}:{self.tolerance:g}"
        self._palette = np.array([PALETTE[c] for c in self.colors], np.float32)  # (K, 3)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in one (H, W, 3) image, most confident first."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image: expected an (H, W, 3) RGB array, got shape {img.shape}")
        img = img.astype(np.float32)
        scale = max(img.shape[:2]) / REFERENCE_PX
        bg = _border_median(img)
        cores, colour_of = self._core_components(img, bg)
        if not colour_of:
            return []
        dist, (iy, ix) = ndimage.distance_transform_edt(cores == 0, return_indices=True)
        region = np.where(dist <= EDGE_PX * scale, cores[iy, ix], 0)  # (H, W) component id per pixel
        detections = []
        for comp, k in colour_of.items():
            det = self._fit(img, bg, cores == comp, region == comp, k, scale)
            if det is not None:
                detections.append(det)
        return sorted(detections, key=lambda d: -d.score)

    def _core_components(self, img: np.ndarray, bg: np.ndarray):
        """Label map of same-colour core components (0 = none) and each component's palette index."""
        d = np.linalg.norm(img[:, :, None, :] - self._palette, axis=-1)  # (H, W, K)
        nearest, dmin = d.argmin(-1), d.min(-1)
        core = (dmin < self.tolerance) & (dmin < np.linalg.norm(img - bg, axis=-1))
        labels = np.zeros(core.shape, np.int32)
        colour_of: dict[int, int] = {}
        for k in np.unique(nearest[core]):
            lab, n = ndimage.label(core & (nearest == k), structure=_EIGHT)
            for comp in range(1, n + 1):
                colour_of[len(colour_of) + 1] = int(k)
                labels[lab == comp] = len(colour_of)
        return _absorb_fringes(labels, colour_of, img, bg)

    def _fit(self, img, bg, core, region, k, scale) -> Detection | None:
        """Classify one component by template fit; None for speckles."""
        colour = np.median(img[core], axis=0)  # the shape's actual colour, maybe a bit off-palette
        # work on the component's box plus room for blur and for templates a bit larger than it
        ys, xs = np.nonzero(region)
        pad = int(np.ceil(CROP_PAD * scale))
        y0, x0 = max(ys.min() - pad, 0), max(xs.min() - pad, 0)
        window = np.s_[y0 : ys.max() + 1 + pad, x0 : xs.max() + 1 + pad]
        direction = colour - bg
        alpha = ((img[window] - bg) @ direction) / max(float(direction @ direction), 1e-6)
        alpha = np.where(region[window] & (alpha >= ALPHA_FLOOR), np.clip(alpha, 0, 1), 0.0)  # (h, w)
        area = float(alpha.sum())
        if area < MIN_AREA_PX * scale**2:
            return None
        py, px = np.indices(alpha.shape) + 0.5  # pixel centres in the crop
        mx, my = float((alpha * px).sum() / area), float((alpha * py).sum() / area)
        fits = sorted((_template_iou(alpha, area, mx, my, s, scale) + (s,) for s in self.classes), reverse=True)
        iou, cx, cy, size, label = fits[0]
        runner_up = fits[1][0] if len(fits) > 1 else 0.0
        edge_px = outline_error(iou, area, SHAPES[label]) / scale
        score = (
            np.clip((EDGE_FAIL_PX - edge_px) / (EDGE_FAIL_PX - EDGE_CLEAN_PX), 0, 1)
            * np.clip((iou - runner_up) / MARGIN_CLEAR, 0, 1)
            * np.clip((size / scale - SIZE_FAIL_PX) / (SIZE_CLEAR_PX - SIZE_FAIL_PX), 0, 1)
        )
        cx, cy, half = cx + x0, cy + y0, size / 2
        mask = np.zeros(region.shape, bool)
        mask[window] = alpha >= MASK_ALPHA
        return Detection(
            label=label,
            score=float(score),
            box=(cx - half, cy - half, cx + half, cy + half),
            mask=mask,
            color=self.colors[k],
            extra={"iou": iou, "runner_up_iou": runner_up, "outline_error_px": edge_px, "area": area,
                   "size": size, "color_confidence": self._colour_confidence(colour, k)},
        )

    def _colour_confidence(self, colour: np.ndarray, k: int) -> float:
        """1 on a palette colour, 0 half-way to the next-nearest palette colour."""
        d = np.linalg.norm(self._palette - colour, axis=1)
        d_own, d_other = d[k], np.delete(d, k).min() if len(d) > 1 else np.inf
        return float(np.clip((d_other - d_own) / (d_other + d_own + 1e-6) / COLOR_MARGIN, 0, 1))


def outline_error(iou: float, area: float, kind: ShapeKind) -> float:
    """Mean outline offset (px) that turns a shape of `area` px into one with soft IoU `iou` to it.

    An outline of length P off by d on average, as much outwards as inwards, adds and removes
    about P·d/2 of area each, so IoU ≈ (A − P·d/2) / (A + P·d/2); solved for d, with
    P = kind.perimeter·size and the size at which the template has the area.
    """
    size = np.sqrt(area / kind.fill)
    return float(2 * area * (1 - iou) / (kind.perimeter * size * (1 + iou)))


def _template_iou(alpha: np.ndarray, area: float, mx: float, my: float, shape: str, scale: float):
    """Best soft IoU of a shape's template (over BLUR_SIGMAS) placed from the alpha moments.

    Returns (iou, cx, cy, size) in the coordinates of `alpha`.
    """
    kind = SHAPES[shape]
    size = float(np.sqrt(area / kind.fill))  # the size at which the template has the same area
    cx, cy = mx, my - kind.centroid_dy * size
    template = np.zeros_like(alpha)
    y0, x0, cov = coverage(shape, cx, cy, size, *alpha.shape)
    template[y0 : y0 + cov.shape[0], x0 : x0 + cov.shape[1]] = cov
    best = 0.0
    for sigma in BLUR_SIGMAS:
        t = ndimage.gaussian_filter(template, sigma * scale, mode="constant") if sigma else template
        best = max(best, float(np.minimum(alpha, t).sum() / np.maximum(alpha, t).sum()))
    return best, cx, cy, size


def _absorb_fringes(labels: np.ndarray, colour_of: dict[int, int], img: np.ndarray, bg: np.ndarray):
    """Merge core components that are edges or hue drift of a touching component into it.

    Two cases, both seen on real renders and samples: the anti-aliased rim of a shape can sit
    nearer to another palette colour than to its own (red over grey reads as brown), which shows
    as pixels lying on the line from the background to the neighbour's colour; and a generated
    shape whose hue drifts between two palette colours splits into a large and a small part.
    Two genuinely different shapes that touch fit neither case and stay apart.
    """
    sizes = np.bincount(labels.ravel(), minlength=len(colour_of) + 1)
    for comp in sorted(colour_of, key=lambda c: sizes[c]):
        mine = labels == comp
        touching = [c for c in np.unique(labels[ndimage.binary_dilation(mine, _EIGHT)]) if c not in (0, comp)]
        rims = [c for c in touching
                if _mixture_residual(img[mine], bg, np.median(img[labels == c], axis=0)) < RIM_RESIDUAL]
        larger = [c for c in touching if sizes[c] >= MINORITY * sizes[comp]]
        host = max(rims or larger, key=lambda c: sizes[c], default=None)
        if host is not None:
            labels[mine] = host
            sizes[host] += sizes[comp]
            del colour_of[comp]
    return labels, colour_of


def _mixture_residual(pixels: np.ndarray, bg: np.ndarray, colour: np.ndarray) -> float:
    """Median distance of pixels (P, 3) from the segment between background and colour."""
    direction = colour - bg
    t = np.clip((pixels - bg) @ direction / max(float(direction @ direction), 1e-6), 0, 1)
    return float(np.median(np.linalg.norm(pixels - bg - t[:, None] * direction, axis=1)))


def _border_median(img: np.ndarray) -> np.ndarray:
    """Median colour of the outermost pixel ring: the plain background."""
    ring = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])  # (P, 3)
    return np.median(ring, axis=0)
