import numpy as np
import pytest

from rescore.engine.latents import Stream, latent_block


def test_latent_is_a_function_of_seed_and_index_only():
    whole = latent_block(7, Stream.SAMPLE, 0, 300, 33)
    pieces = [latent_block(7, Stream.SAMPLE, a, b, 33) for a, b in [(200, 300), (0, 1), (1, 200)]]
    assert np.array_equal(whole, np.concatenate([pieces[1], pieces[2], pieces[0]]))
    assert np.array_equal(latent_block(7, Stream.SAMPLE, 123, 124, 33)[0], whole[123])


def test_streams_and_seeds_differ():
    a = latent_block(1, Stream.SAMPLE, 0, 10, 16)
    assert not np.allclose(a, latent_block(1, Stream.RESCORE, 0, 10, 16))
    assert not np.allclose(a, latent_block(2, Stream.SAMPLE, 0, 10, 16))


@pytest.mark.parametrize("dim", [1, 7, 512])
def test_latents_are_standard_normal(dim):
    z = latent_block(0, Stream.SAMPLE, 0, max(20_000 // dim, 40), dim).ravel()
    assert z.dtype == np.float32
    assert abs(z.mean()) < 0.05
    assert abs(z.std() - 1.0) < 0.05
    # tails as a normal has them: about 4.55% beyond 2 sigma
    assert 0.035 < np.mean(np.abs(z) > 2.0) < 0.056


def test_bad_range_is_refused():
    with pytest.raises(ValueError):
        latent_block(0, Stream.SAMPLE, 5, 2, 4)
