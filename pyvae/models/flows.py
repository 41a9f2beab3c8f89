"""A conditional Sylvester normalizing flow (van den Berg, Hasenclever, Tomczak, Welling 2018).

One layer maps z (dimension d) to

    z' = z + Q R tanh(R~ Q^T z + b),      log|det dz'/dz| = sum_i log|1 + tanh'(.)_i R~_ii R_ii|

with Q a d x d orthogonal matrix and R, R~ upper triangular, so that by Sylvester's determinant
identity det(I + Q R D R~ Q^T) = det(I + D R~ R) is the product of the diagonal terms above
(D = diag tanh'(.)). Every parameter (Q, R, R~, b) is produced per datapoint from a context
h(x) by a small network, which makes the flow amortized/conditional. The diagonals of R and R~ are
tanh(.), so |R_ii R~_ii| < 1 and, since 0 < tanh' <= 1, each layer is invertible. Three ways to
build Q, as in the paper:

    "orthogonal"   Q from the QR decomposition of a free d x d matrix
    "householder"  Q = H_1 ... H_k, a product of k Householder reflections H = I - 2 v v^T / |v|^2
    "triangular"   Q = I or the reversal permutation, alternating between layers

Pyro ships only a non-conditional Sylvester transform (``pyro.distributions.transforms.Sylvester``,
Householder kind, with global parameters), so this conditional one is written here. Like Pyro's
planar and radial flows it has no closed-form inverse: a ``TransformedDistribution`` can score
only samples it drew itself (the transform caches the last (z, z') pair).
"""
import torch
from torch.distributions import Transform, constraints

from pyro.distributions.conditional import ConditionalTransformModule

from ..config import choose
from ..errors import ConfigError
from .nets import MLP

SYLVESTER_KINDS = ("orthogonal", "householder", "triangular")


class ConditionedSylvester(Transform):
    """One Sylvester layer with fixed per-datapoint parameters.

    Args:
        q: (..., d, d) orthogonal matrices (or one (d, d) matrix shared by all datapoints).
        r1: (..., d, d) upper triangular R.
        r2: (..., d, d) upper triangular R~.
        b: (..., d) bias.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, q, r1, r2, b):
        super().__init__(cache_size=1)
        self.q, self.r1, self.r2, self.b = q, r1, r2, b

    def _preactivation(self, z):
        # R~ Q^T z + b, with z of shape (..., d) broadcasting against the parameters' batch shape
        qtz = (z.unsqueeze(-2) @ self.q).squeeze(-2)
        return (self.r2 @ qtz.unsqueeze(-1)).squeeze(-1) + self.b

    def _call(self, z):
        act = torch.tanh(self._preactivation(z))
        return z + (self.q @ (self.r1 @ act.unsqueeze(-1))).squeeze(-1)

    def _inverse(self, y):
        raise NotImplementedError(
            "the Sylvester flow has no closed-form inverse: it can score only the samples it drew "
            "(call log_prob on the tensor returned by rsample of the same distribution)")

    def log_abs_det_jacobian(self, z, y):
        # det(I + Q R D R~ Q^T) = prod_i (1 + D_ii R~_ii R_ii),  D = diag(1 - tanh^2(pre))
        derivative = 1 - torch.tanh(self._preactivation(z)).pow(2)
        diagonal = self.r1.diagonal(dim1=-2, dim2=-1) * self.r2.diagonal(dim1=-2, dim2=-1)
        return torch.log(torch.abs(1 + derivative * diagonal)).sum(-1)


class ConditionalSylvester(ConditionalTransformModule):
    """A Sylvester layer whose Q, R, R~, b are outputs of an MLP on a context vector h(x).

    Args:
        z_dim: d, the dimension transformed.
        context_dim: size of the context h(x).
        hidden: hidden sizes of the parameter network (empty: a linear map of the context).
        kind: how Q is built, one of ``SYLVESTER_KINDS``.
        householders: number of reflections per layer for ``kind="householder"``.
        reverse: for ``kind="triangular"``, use the reversal permutation as Q instead of I.
        activation: nonlinearity of the parameter network.
    """

    def __init__(self, z_dim: int, context_dim: int, hidden=(), kind: str = "orthogonal",
                 householders: int = 4, reverse: bool = False, activation: str = "tanh"):
        super().__init__()
        choose(kind, SYLVESTER_KINDS, "Sylvester kind")
        if int(householders) < 1:
            raise ConfigError(f"householders must be >= 1, got {householders}")
        self.z_dim, self.kind, self.householders = int(z_dim), kind, int(householders)
        d = self.z_dim
        q_size = {"orthogonal": d * d, "householder": self.householders * d, "triangular": 0}[kind]
        # outputs: one full d x d matrix (its strict upper part gives R, its strict lower part,
        # transposed, gives R~, as in van den Berg et al.), the two diagonals, b, and Q's parameters
        self.sizes = [d * d, d, d, d, q_size]
        self.net = MLP(context_dim, hidden, sum(self.sizes), activation)
        # start with zero off-diagonal parts of R and R~ (their d^2 outputs would otherwise make
        # the first layer a large random map); the diagonals keep their random start, so the
        # gradients with respect to the off-diagonal parts are not zero
        with torch.no_grad():
            self.net[-1].weight[:d * d] = 0
            self.net[-1].bias[:d * d] = 0
        if kind == "triangular":
            eye = torch.eye(d)
            self.register_buffer("permutation", eye.flip(0) if reverse else eye)
        self.register_buffer("_triu", torch.ones(d, d).triu(1))

    def _q(self, q_raw, batch_shape):
        d = self.z_dim
        if self.kind == "triangular":
            return self.permutation
        if self.kind == "orthogonal":
            # an exact orthogonalisation, so the log-det formula holds exactly (the paper's
            # iterative Bjorck procedure is only approximately orthogonal)
            q, _ = torch.linalg.qr(q_raw.reshape(*batch_shape, d, d))
            return q
        v = q_raw.reshape(*batch_shape, self.householders, d)
        q = torch.eye(d, dtype=v.dtype, device=v.device).expand(*batch_shape, d, d)
        for k in range(self.householders):
            vk = v[..., k, :]
            # Q <- Q H,  H = I - 2 v v^T / (v^T v)
            q = q - 2 * (q @ vk.unsqueeze(-1)) @ vk.unsqueeze(-2) / vk.pow(2).sum(-1)[..., None, None]
        return q

    def condition(self, context: torch.Tensor) -> ConditionedSylvester:
        d = self.z_dim
        full, diag1, diag2, b, q_raw = self.net(context).split(self.sizes, dim=-1)
        batch_shape = context.shape[:-1]
        full = full.reshape(*batch_shape, d, d)
        r1 = full * self._triu + torch.diag_embed(torch.tanh(diag1))
        r2 = full.transpose(-1, -2) * self._triu + torch.diag_embed(torch.tanh(diag2))
        return ConditionedSylvester(self._q(q_raw, batch_shape), r1, r2, b)
