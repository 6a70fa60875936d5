"""Regularised dense refinement of an elastic field: Gauss-Newton on a coarse grid of control points, 2D and 3D.

The block pyramid measures one vector per block and interpolates between block centres: where blocks are few (small
images, blocks of background) or the warp bends within a block, that interpolation is the error. The refinement
fits a piecewise-(bi/tri)linear correction ``u(p) = sum_k B_k(p) c_k`` on control points every ``spacing`` voxels
to the whole image at once, minimising

    sum_p (R(p) - M(p + f(p) + u(p)))^2 + lam * sum_(k,l neighbours) |c_k - c_l|^2

with ``R``, ``M`` the reference and moving images smoothed and locally contrast-normalised (the cheap and the
expensive acquisition differ in blur and brightness; normalising makes their local structure comparable). Each
Gauss-Newton step linearises the warped image, reduces the per-voxel normal equations to the control grid in one
pass (cell sums with the separable hat-function weights) and solves the sparse system directly. Where a region holds
no structure its control points follow their neighbours (the membrane term), so sparse content is handled without
a confidence rule.

Convention: ``registered[p] = moving[p + field[:, p]]`` (voxels, array axis order).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: Pre-smoothing (voxels): removes the pixel noise the linearisation cannot use.
PRESMOOTH = 1.0
#: Local contrast normalisation scale, in control-point spacings.
NORM_SCALE = 1.0
#: Floor of the local variance, as a fraction of its image mean: flat background is not amplified into noise.
VAR_FLOOR = 0.1


def smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter (scipy's, edges reflected). A wide one runs on a copy binned by ``sigma / 4`` and is
    interpolated back linearly: the result varies on the scale ``sigma``, which the binned grid resolves, at a
    cost that does not grow with ``sigma``."""
    from scipy import ndimage

    k = max(1, int(sigma // 4))
    src = x if k == 1 else _bin(x, k)
    out = torch.from_numpy(ndimage.gaussian_filter(src.detach().cpu().numpy(), sigma / k, mode="reflect", truncate=3.0))
    if k == 1:
        return out.to(x.device)
    nd = x.dim()
    mode = "bilinear" if nd == 2 else "trilinear"
    # Binned sample j stands for voxels j*k .. j*k + k - 1 (centre j*k + (k - 1) / 2): align_corners=False maps it so.
    up = F.interpolate(out[None, None].to(x.device), size=[n * k for n in out.shape], mode=mode, align_corners=False)
    return up[0, 0][tuple(slice(0, n) for n in x.shape)]


def _bin(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over k^nd blocks; a partial last block is averaged over the voxels it has (edge-replicated padding)."""
    nd = x.dim()
    pad = []
    for n in reversed(x.shape):
        pad += [0, (-n) % k]
    xp = F.pad(x[None, None], pad, mode="replicate") if any(pad) else x[None, None]
    pool = F.avg_pool3d if nd == 3 else F.avg_pool2d
    return pool(xp, k)[0, 0]


def normalise(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Smoothed, locally contrast-normalised copy: (x - local mean) / sqrt(local variance + floor)."""
    x = smooth(x, PRESMOOTH)
    d = x - smooth(x, scale)
    var = smooth(d * d, scale)
    return d / torch.sqrt(var + VAR_FLOOR * var.mean())


def _hat_weights(h: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of a cell's lower and upper control point at offsets 0..h-1 (linear hat functions)."""
    t = torch.arange(h, device=device, dtype=dtype) / h
    return 1.0 - t, t


def _cell_contract(x: torch.Tensor, cells: Sequence[int], h: int, weights: torch.Tensor) -> torch.Tensor:
    """For images (..., *cells * h) padded to whole cells, the weighted sums over each cell for every combination
    of one weight vector (a column of ``weights``, (h, K)) per axis: shape ``(K,) * nd + (...) + cells``. Axis by
    axis, last first: the full-resolution pass is one matrix product, the later ones run on arrays ``h`` times
    smaller."""
    nd = len(cells)
    lead = x.dim() - nd  # product axes in front
    out = x
    for k, ax in enumerate(reversed(range(nd))):
        pos = k + lead + ax  # the spatial axis, behind k key axes and the product axes
        a = out.reshape(*out.shape[:pos], cells[ax], h, *out.shape[pos + 1 :])
        a = a.movedim(pos + 1, -1)  # the within-cell offset last (a no-op for the last axis)
        out = (a @ weights).movedim(-1, 0)  # the new key axis in front: keys end up in axis order
    return out


def _pad_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    pad = []
    for n, s in zip(reversed(x.shape[-len(size) :]), reversed(size)):
        pad += [0, s - n]
    return F.pad(x, pad) if any(pad) else x


def upsample(c: torch.Tensor, shape: Sequence[int], h: int) -> torch.Tensor:
    """Control-point values (nd, *nodes) -> dense field (nd, *shape): node k sits at voxel k * h, linear between."""
    nd = len(shape)
    nodes = c.shape[1:]
    size = [(n - 1) * h + 1 for n in nodes]
    mode = "bilinear" if nd == 2 else "trilinear"
    up = F.interpolate(c[None], size=size, mode=mode, align_corners=True)[0]
    return up[(slice(None), *[slice(0, n) for n in shape])]


def _system(
    grad: torch.Tensor, res: torch.Tensor, cells: Sequence[int], h: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Newton normal equations on the control grid: COO (rows, cols, values) and the right-hand side."""
    nd = grad.shape[0]
    full = [c * h for c in cells]
    w0, w1 = _hat_weights(h, grad.device, grad.dtype)
    nodes = [c + 1 for c in cells]
    n_nodes = int(np.prod(nodes))
    node_idx = np.arange(n_nodes).reshape(nodes)
    pairs = [(a, b) for a in range(nd) for b in range(a, nd)]
    # Every per-voxel product the system needs, reduced to cell sums in one pass: per axis the weight products
    # w0 w0, w0 w1, w1 w1 (matrix) and w0, w1 (right-hand side); keys 0-4 in that order.
    prods = torch.stack([grad[a] * grad[b] for a, b in pairs] + [grad[a] * res for a in range(nd)])
    sums = _cell_contract(_pad_to(prods, full), cells, h, torch.stack([w0 * w0, w0 * w1, w1 * w1, w0, w1], 1))
    # sums: (5,)*nd + (n_products,) + cells
    # Per axis: which cell (0: the node's own cell i, -1: cell i - 1) and which weight key a node pair at offset d
    # draws from.
    choices = {0: [(-1, 2), (0, 0)], 1: [(0, 1)], -1: [(-1, 1)]}
    rows, cols, vals = [], [], []
    for p_i, (a, b) in enumerate(pairs):
        s = F.pad(sums[(slice(0, 3),) * nd + (p_i,)], [1, 1] * nd)  # a zero cell before and after each axis
        for d in itertools.product((-1, 0, 1), repeat=nd):
            stencil = torch.zeros(nodes, dtype=grad.dtype, device=grad.device)
            for opt in itertools.product(*[choices[di] for di in d]):
                key = tuple(k for _, k in opt)
                sl = tuple(slice(1 + off, 1 + off + n) for (off, _), n in zip(opt, nodes))
                stencil += s[key][sl]
            st = stencil.cpu().numpy()
            src = tuple(slice(max(0, -di), n - max(0, di)) for di, n in zip(d, nodes))
            dst = tuple(slice(max(0, di), n - max(0, -di)) for di, n in zip(d, nodes))
            r_i, c_i, v = node_idx[src].ravel(), node_idx[dst].ravel(), st[src].ravel()
            rows += [a * n_nodes + r_i]
            cols += [b * n_nodes + c_i]
            vals += [v]
            if a != b:
                rows += [b * n_nodes + c_i]
                cols += [a * n_nodes + r_i]
                vals += [v]
    rhs = []
    for a in range(nd):
        s = sums[(slice(3, 5),) * nd + (len(pairs) + a,)]  # (2,)*nd + cells
        g = torch.zeros(nodes, dtype=grad.dtype, device=grad.device)
        for corner in itertools.product((0, 1), repeat=nd):
            g[tuple(slice(k, k + n) for k, n in zip(corner, cells))] += s[corner]
        rhs.append(g.cpu().numpy().ravel())
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), np.concatenate(rhs)


def _laplacian(nodes: Sequence[int]):
    """Graph Laplacian of the control grid (membrane energy sum over neighbours of |c_k - c_l|^2, halved)."""
    import scipy.sparse as sp

    lap = None
    for ax, n in enumerate(nodes):
        d = sp.diags([np.ones(n - 1), -np.ones(n - 1)], [0, 1], shape=(n - 1, n)) if n > 1 else sp.csr_matrix((0, 1))
        l1 = (d.T @ d).tocsr()
        term = None
        for b, m in enumerate(nodes):
            f = l1 if b == ax else sp.identity(m, format="csr")
            term = f if term is None else sp.kron(term, f, format="csr")
        lap = term if lap is None else lap + term
    return lap


def _inside(field: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """1.0 where ``p + field(p)`` lies inside the image by ``margin`` voxels (the moving image is defined there),
    else 0.0."""
    shape = field.shape[1:]
    out = None
    for a, n in enumerate(shape):
        pos = torch.arange(n, device=field.device, dtype=field.dtype).reshape(
            [n if i == a else 1 for i in range(len(shape))]
        )
        src = field[a] + pos
        ok = ((src >= margin) & (src <= n - 1 - margin)).to(field.dtype)
        out = ok if out is None else out * ok
    return out


def dense_refine(
    ref: torch.Tensor,
    mov: torch.Tensor,
    field: torch.Tensor,
    *,
    spacing: int = 16,
    lam: float = 0.05,
    iters: int = 6,
    tol: float = 0.01,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Refine ``field`` (nd, *shape) so that ``warp(mov, field)`` matches ``ref``; returns it and the RMS update
    (voxels) of each Gauss-Newton step.

    Parameters
    ----------
    ref, mov : tensor
        Images on one grid (2D or 3D).
    field : tensor
        The starting field, e.g. from the block pyramid (within about a voxel of the truth).
    spacing : int
        Control-point spacing (voxels): the finest scale the correction can bend on.
    lam : float
        Membrane weight relative to the mean data weight of a control point.
    iters, tol
        At most ``iters`` Gauss-Newton steps; stop when the RMS update falls below ``tol`` voxels.
    mask : tensor of bool, optional
        Reference voxels that take part (default: all whose source lies inside the moving image).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    from fmc_ij.register.elastic import warp

    nd = ref.dim()
    shape = tuple(ref.shape)
    h = int(spacing)
    cells = [(n - 1) // h + 1 for n in shape]  # voxel n - 1 lies inside the last cell, never on its far edge
    nodes = [c + 1 for c in cells]
    scale = NORM_SCALE * h
    r = normalise(ref.float(), scale)
    m = normalise(mov.float(), scale)
    lap = _laplacian(nodes)
    eye = sp.identity(nd, format="csr")
    reg = sp.kron(eye, lap, format="csr")
    c = torch.zeros((nd, *nodes), dtype=torch.float32, device=ref.device)
    steps: list[float] = []
    # Voxels whose source stays inside the moving image: fixed once, with a margin for the (clamped) steps.
    wt = _inside(field, margin=float(iters)) if mask is None else _inside(field, margin=float(iters)) * mask
    for _ in range(iters):
        total = field + upsample(c, shape, h)
        w = warp(m, total)
        grad = torch.stack(torch.gradient(w), 0) * wt
        res = (r - w) * wt
        rows, cols, vals, rhs = _system(grad, res, cells, h)
        n_unk = nd * int(np.prod(nodes))
        hmat = sp.csr_matrix((vals, (rows, cols)), shape=(n_unk, n_unk))
        diag = float(hmat.diagonal().mean())
        if diag <= 0:
            break
        k = lam * diag
        cv = c.cpu().numpy().astype(np.float64).ravel()
        dc = spsolve((hmat + k * reg).tocsc(), rhs - k * (reg @ cv))
        dc_t = torch.as_tensor(dc, dtype=torch.float32, device=ref.device).reshape(nd, *nodes)
        # A Gauss-Newton step beyond a voxel means the linearisation failed there: clamp it.
        c = c + dc_t.clamp(-1.0, 1.0)
        rms = float(dc_t.pow(2).sum(0).mean().sqrt())
        steps.append(rms)
        if rms < tol:
            break
    return field + upsample(c, shape, h), steps
