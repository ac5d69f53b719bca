"""Implicit-feedback ALS (Hu, Koren, Volinsky 2008) written directly from the paper with numpy,
independent of the C engine: dense matrices, exact solves, its own random start. W holds each
user-item pair's summed interaction weight, obs marks the observed pairs.

  p = 1 where w > 0, else 0;  c = 1 + alpha * |w| where observed, else 1
  loss = sum over all pairs c (p - x_u . y_i)^2 + reg (|X|^2 + |Y|^2)
"""
import numpy as np


def _pc(W, obs, alpha):
    P = (W > 0).astype(np.float64)
    C = np.where(obs, 1.0 + alpha * np.abs(W), 1.0)
    return P, C


def als_objective(W, obs, X, Y, reg, alpha):
    P, C = _pc(W, obs, alpha)
    E = P - X @ Y.T
    return float(np.sum(C * E * E) + reg * (np.sum(X * X) + np.sum(Y * Y)))


def _solve_side(P, C, Y, reg):
    """Row r of the result minimises sum_i C[r,i] (P[r,i] - x . Y[i])^2 + reg |x|^2."""
    d = Y.shape[1]
    out = np.empty((P.shape[0], d))
    for r in range(P.shape[0]):
        A = (Y.T * C[r]) @ Y + reg * np.eye(d)
        b = (Y.T * C[r]) @ P[r]
        out[r] = np.linalg.solve(A, b)
    return out


def normal_equation_solution(W, obs, Y, reg, alpha):
    """The user factors that exactly minimise the objective for fixed item factors Y."""
    P, C = _pc(W, obs, alpha)
    return _solve_side(P, C, Y, reg)


def als_fit(W, obs, dim, reg, alpha, epochs, seed, start=None):
    """Items then users each epoch; from N(0, 0.01^2) factors, or from start = (X, Y)."""
    P, C = _pc(W, obs, alpha)
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.01, (W.shape[0], dim)) if start is None else start[0]
    Y = rng.normal(0, 0.01, (W.shape[1], dim)) if start is None else start[1]
    for _ in range(epochs):
        Y = _solve_side(P.T, C.T, X, reg)
        X = _solve_side(P, C, Y, reg)
    return X, Y
