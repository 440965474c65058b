"""The `compiled` backend (torch.compile / inductor) against torch eager, on the CPU.

fp32: within 1e-4 (norm-wise relative) on the synthetic model and a tiny StyleGAN, at a batch
that needs padding. bf16 (CPU autocast): within the stated tolerance, the exact resize kept in
float32, and the synthetic model's layer ranking unchanged. CUDA graphs need a GPU (marked).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import PARITY_RTOL, relative_error

from rescore.export.backends import BackendSpec, open_session
from rescore.export.compiled import (
    REDUCED_PRECISION_TOLERANCE,
    CompiledSession,
    keep_float32,
    padded_batch,
)
from rescore.export.session import TorchSession
from rescore.kernels.manipulate import layer_sets_all_and_each, manipulate
from rescore.models.errors import BackendUnavailableError
from rescore.models.resize import PilBilinearResize


def test_batches_pad_to_a_power_of_two_up_to_the_maximum():
    assert [padded_batch(b, 32) for b in (1, 2, 3, 5, 17, 32, 40)] == [1, 2, 4, 8, 32, 32, 32]
    assert padded_batch(3, 3) == 3


@pytest.mark.parametrize("model", ["synthetic", "stylegan_color"])
def test_fp32_scores_match_torch_eager(model, request):
    generator, predictor = request.getfixturevalue(model)
    reference = TorchSession(generator, [predictor], "cpu")
    spec = BackendSpec("compiled", "cpu", max_batch=4)
    with open_session(generator, [predictor], spec) as session:
        assert isinstance(session, CompiledSession)
        assert (session.info.backend, session.info.precision) == ("compiled", "fp32")
        z = np.random.default_rng(0).standard_normal((7, generator.z_dim)).astype(np.float32)
        wp = session.geometry.truncate(session.map(z))  # 7 codes: a piece of 4, one padded to 4
        scores = session.score(wp)
    expected = reference.score(wp)
    assert scores.shape == expected.shape
    assert relative_error(scores, expected) < PARITY_RTOL


def test_the_exact_resize_stays_float32_under_autocast():
    resize = PilBilinearResize((24, 24))
    images = torch.randint(0, 256, (2, 3, 40, 40)).float()
    expected = resize(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        drifted = resize(images)
    assert not torch.equal(drifted.float(), expected)  # bf16 matmuls lose the exact limbs
    wrapper = torch.nn.Sequential(resize)
    assert keep_float32(wrapper) == 1 and keep_float32(wrapper) == 1  # idempotent
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pinned = resize(images)
    assert pinned.dtype == torch.float32 and torch.equal(pinned, expected)
    assert torch.equal(resize(images), expected)  # outside autocast: unchanged


def test_bf16_keeps_the_synthetic_layer_ranking(synthetic):
    generator, predictor = synthetic
    reference = TorchSession(generator, [predictor], "cpu")
    cpu = torch.device("cpu")
    session = CompiledSession(generator, [predictor], cpu, precision="bf16", max_batch=64)
    assert session.info.precision == "bf16"
    z = np.random.default_rng(3).standard_normal((8, generator.z_dim)).astype(np.float32)
    wp = reference.geometry.truncate(reference.map(z))  # [n, L, D]
    directions = generator.directions.numpy()[:, None, :].repeat(wp.shape[1], axis=1)  # [M, L, D]
    codes = manipulate(wp, directions, layer_sets_all_and_each(wp.shape[1]), 2.0)  # [M,K,n,L,D]
    flat = codes.reshape(-1, *wp.shape[1:])
    tolerance = REDUCED_PRECISION_TOLERANCE["bf16"]
    deltas = []
    for scorer in (reference, session):
        original = scorer.score(wp)  # [n, S]
        manipulated = np.concatenate(
            [scorer.score(flat[i : i + 64]) for i in range(0, len(flat), 64)]
        )
        manipulated = manipulated.reshape(*codes.shape[:3], -1)  # [M, K, n, S]
        deltas.append((original, manipulated, (manipulated - original).mean(axis=2)))
    (ref_orig, ref_manip, ref_delta), (bf_orig, bf_manip, bf_delta) = deltas
    assert relative_error(bf_orig, ref_orig) < tolerance
    assert relative_error(bf_manip, ref_manip) < tolerance
    # every pair of layers that fp32 separates by more than twice the tolerance keeps its order
    scale = np.abs(ref_delta).max()
    per_layer, per_layer_bf = ref_delta[:, 1:], bf_delta[:, 1:]  # [M, L, S]
    gap = per_layer[:, :, None, :] - per_layer[:, None, :, :]  # [M, L, L, S]
    bf_gap = per_layer_bf[:, :, None, :] - per_layer_bf[:, None, :, :]
    separated = np.abs(gap) > 2 * tolerance * scale
    assert separated.any()
    assert np.all(np.sign(gap[separated]) == np.sign(bf_gap[separated]))
    # and each factor's own peak layer under bf16 is one of its fp32 peak layers (ties within a
    # layer group are broken by rounding)
    for m in range(len(directions)):
        own = np.abs(per_layer[m, :, m])  # [L]
        peak_set = np.flatnonzero(own >= own.max() - 2 * tolerance * scale)
        assert np.abs(per_layer_bf[m, :, m]).argmax() in peak_set


def test_unsupported_requests_are_refused_before_compiling(synthetic):
    generator, predictor = synthetic
    with pytest.raises(BackendUnavailableError, match="--precision bf16 or fp32"):
        open_session(generator, [predictor], BackendSpec("compiled", "cpu", precision="fp16"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_graphs_match_torch_eager(precision, stylegan_color):
    generator, predictor = stylegan_color
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    reference = TorchSession(generator, [predictor], "cuda")
    spec = BackendSpec("compiled", "cuda", precision=precision, max_batch=8)
    with open_session(generator, [predictor], spec) as session:
        z = np.random.default_rng(0).standard_normal((11, generator.z_dim)).astype(np.float32)
        wp = session.geometry.truncate(session.map(z))
        first, second = session.score(wp), session.score(wp[::-1].copy())  # replays
    tolerance = PARITY_RTOL if precision == "fp32" else REDUCED_PRECISION_TOLERANCE[precision]
    expected = reference.score(wp)
    assert relative_error(first, expected) < tolerance
    assert relative_error(second[::-1], expected) < tolerance
