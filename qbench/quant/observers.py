"""Range estimation ("observers"): from data to the [min, max] a quantizer maps onto its integer range.

Four estimators, each per row of a tensor's row view (see :mod:`qbench.quant.affine`):
- ``minmax``     the observed extremes;
- ``percentile`` clip at the p-th percentile (of |x| when symmetric, of each tail otherwise);
- ``mse``        search the clipping ratio that minimises the quantize-dequantize mean squared error;
- ``histogram``  entropy calibration: the clipping threshold whose quantized distribution has the lowest
                 KL divergence to the observed one (TensorRT's method).

Weights are estimated on their exact values. Activations are seen batch by batch during calibration, so
:class:`ActivationObserver` keeps running extremes plus a histogram, and the estimators run on the
histogram (bin centres weighted by counts). Both paths share one implementation on weighted samples.
"""

from __future__ import annotations

import numpy as np
import torch

from qbench.quant.affine import compute_qparams, qrange

# clipping ratios tried by the MSE search: fine steps where weights usually land (0.3-1), and log-spaced
# down to 1 % for heavy-tailed activations whose outliers are 100x the bulk
MSE_CANDIDATES = torch.cat([torch.logspace(-2, torch.log10(torch.tensor(0.3)).item(), 20)[:-1],
                            torch.linspace(0.3, 1.0, 36)])
HISTOGRAM_BINS = 2048


# ------------------------------------------------------------------------------ estimators on samples
def _weighted_quantile(values: torch.Tensor, weights: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile of weighted samples (rows x k); nearest rank on the cumulative weight."""
    order = torch.argsort(values, dim=1)
    v = torch.gather(values, 1, order)
    w = torch.gather(weights, 1, order)
    cum = torch.cumsum(w, dim=1)
    target = q * cum[:, -1:]
    idx = torch.searchsorted(cum.contiguous(), target.contiguous()).clamp(max=v.shape[1] - 1)
    return torch.gather(v, 1, idx).squeeze(1)


def percentile_range(
    values: torch.Tensor, weights: torch.Tensor, percentile: float, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    p = percentile / 100.0
    if symmetric:
        t = _weighted_quantile(values.abs(), weights, p)
        return -t, t
    return _weighted_quantile(values, weights, 1.0 - p), _weighted_quantile(values, weights, p)


def mse_range(
    values: torch.Tensor, weights: torch.Tensor | None, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink [min, max] by the ratio in MSE_CANDIDATES with the lowest (weighted) quantization MSE."""
    if weights is None:
        lo, hi = values.amin(1), values.amax(1)
    else:
        present = weights > 0
        lo = values.masked_fill(~present, float("inf")).amin(1)
        hi = values.masked_fill(~present, float("-inf")).amax(1)
    if not symmetric:  # the asymmetric range always contains 0 (see compute_qparams)
        lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    qmin, qmax = qrange(bits, symmetric)
    best_err = torch.full_like(lo, float("inf"))
    best_ratio = torch.ones_like(lo)
    for ratio in MSE_CANDIDATES.tolist():
        scale, zp = compute_qparams(lo * ratio, hi * ratio, bits, symmetric)
        s, z = scale.unsqueeze(1), zp.unsqueeze(1).float()
        # quantize-dequantize in float (no integer tensors): this loop dominates MSE calibration time
        recon = (torch.clamp(torch.round(values * (1.0 / s)) + z, qmin, qmax) - z) * s
        err = (values - recon).square_()
        err = (err if weights is None else err * weights).sum(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, torch.full_like(best_ratio, ratio), best_ratio)
    return lo * best_ratio, hi * best_ratio


def entropy_threshold(abs_hist: np.ndarray, bin_width: float, levels: int) -> float:
    """TensorRT entropy calibration: threshold on |x| minimising KL(P || Q) of the clipped histogram."""
    bins = len(abs_hist)
    if levels >= bins or abs_hist.sum() == 0:
        return bins * bin_width
    stride = max(1, (bins - levels) // 128)
    best_kl, best_i = np.inf, bins
    for i in range(levels, bins + 1, stride):
        p = abs_hist[:i].astype(np.float64)
        p[-1] += abs_hist[i:].sum()
        # merge the i reference bins into `levels` quantization bins, spread back over non-empty bins
        edges = np.linspace(0, i, levels + 1).astype(np.int64)
        starts = edges[:-1][np.diff(edges) > 0]
        sums = np.add.reduceat(abs_hist[:i].astype(np.float64), starts)
        nonzero = np.add.reduceat((abs_hist[:i] != 0).astype(np.float64), starts)
        chunk = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, i)))
        q = np.where(abs_hist[:i] != 0, (sums / np.maximum(nonzero, 1))[chunk], 0.0)
        mask = p > 0
        p_n = p[mask] / p.sum()
        q_n = q[mask] / max(q.sum(), 1e-12)
        kl = float(np.sum(p_n * np.log(p_n / np.maximum(q_n, 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * bin_width


def _histogram_range_from_hist(
    hist: np.ndarray, amax: float, lo: float, hi: float, bits: int, symmetric: bool
) -> tuple[float, float]:
    """KL threshold from a symmetric histogram over [-amax, amax] folded onto |x|."""
    half = len(hist) // 2
    abs_hist = hist[half:] + hist[:half][::-1]
    levels = 2**bits if (not symmetric and lo >= 0) else 2 ** (bits - 1)
    t = entropy_threshold(abs_hist, amax / half, levels)
    if symmetric:
        return -t, t
    return max(lo, -t), min(hi, t)


def histogram_range(values: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy calibration on exact per-row values (weights)."""
    los, his = [], []
    for row in values:
        amax = float(row.abs().max().clamp(min=1e-12))
        bins = min(HISTOGRAM_BINS, max(128, 2 * (row.numel() // 2)))
        hist = torch.histc(row.float(), bins=bins, min=-amax, max=amax).numpy()
        lo, hi = _histogram_range_from_hist(hist, amax, float(row.min()), float(row.max()), bits, symmetric)
        los.append(lo)
        his.append(hi)
    return torch.tensor(los), torch.tensor(his)


def estimate_range(rows: torch.Tensor, spec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (min, max) of exact data rows (rows x elements) with the spec's observer."""
    rows = rows.detach().float()
    if spec.observer == "minmax":
        return rows.amin(1), rows.amax(1)
    if spec.observer == "percentile":
        return percentile_range(rows, torch.ones_like(rows), spec.percentile, spec.symmetric)
    if spec.observer == "mse":
        return mse_range(rows, None, spec.bits, spec.symmetric)
    if spec.observer == "histogram":
        return histogram_range(rows, spec.bits, spec.symmetric)
    raise ValueError(f"observer {spec.observer!r}: valid values: minmax, percentile, mse, histogram")


# ------------------------------------------------------------------------------- activation observer
class ActivationObserver:
    """Accumulates statistics of an activation over calibration batches (per tensor or per channel)."""

    def __init__(self, spec, per_channel: bool = False, bins: int = HISTOGRAM_BINS) -> None:
        self.spec = spec
        self.per_channel = per_channel
        self.bins = bins
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.amax: np.ndarray | None = None
        self.hist: np.ndarray | None = None  # rows x bins over [-amax, amax]

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        if self.per_channel:
            return x.movedim(1, 0).reshape(x.shape[1], -1)
        return x.reshape(1, -1)

    def observe(self, x: torch.Tensor) -> None:
        rows = self._rows(x)
        lo, hi = rows.amin(1), rows.amax(1)
        self.min = lo if self.min is None else torch.minimum(self.min, lo)
        self.max = hi if self.max is None else torch.maximum(self.max, hi)
        if self.spec.observer != "minmax":
            self._update_histogram(rows)

    def _update_histogram(self, rows: torch.Tensor) -> None:
        amax_new = rows.abs().amax(1).clamp(min=1e-12).numpy().astype(np.float64)
        if self.hist is None:
            self.amax = amax_new
            self.hist = np.zeros((rows.shape[0], self.bins))
        else:
            assert self.amax is not None
            grown = amax_new > self.amax
            for r in np.nonzero(grown)[0]:  # re-bin the old counts onto the wider range
                old_edges = np.linspace(-self.amax[r], self.amax[r], self.bins + 1)
                centers = (old_edges[:-1] + old_edges[1:]) / 2
                self.hist[r], _ = np.histogram(
                    centers, bins=self.bins, range=(-amax_new[r], amax_new[r]), weights=self.hist[r]
                )
            self.amax = np.maximum(self.amax, amax_new)
        for r in range(rows.shape[0]):
            a = float(self.amax[r])
            self.hist[r] += torch.histc(rows[r], bins=self.bins, min=-a, max=a).numpy()

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row (min, max) after calibration, with the spec's estimator."""
        if self.min is None or self.max is None:
            raise RuntimeError("observer saw no data: was calibration run?")
        spec = self.spec
        if spec.observer == "minmax":
            return self.min, self.max
        assert self.hist is not None and self.amax is not None
        if spec.observer == "histogram":
            los, his = [], []
            for r in range(self.hist.shape[0]):
                lo, hi = _histogram_range_from_hist(
                    self.hist[r], float(self.amax[r]), float(self.min[r]), float(self.max[r]),
                    spec.bits, spec.symmetric,
                )
                los.append(lo)
                his.append(hi)
            return torch.tensor(los, dtype=torch.float32), torch.tensor(his, dtype=torch.float32)
        centers = torch.from_numpy(
            np.stack([np.linspace(-a, a, self.bins + 1)[:-1] + a / self.bins for a in self.amax])
        ).float()
        weights = torch.from_numpy(self.hist).float()
        if spec.observer == "percentile":
            lo, hi = percentile_range(centers, weights, spec.percentile, spec.symmetric)
        else:
            lo, hi = mse_range(centers, weights, spec.bits, spec.symmetric)
        # never widen beyond what was observed
        return torch.maximum(lo, self.min), torch.minimum(hi, self.max)
