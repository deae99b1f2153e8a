"""Stacked params (init with members, member, stack), polyak, and the input sensitivities
(jacobian, jvp) against central differences."""

import numpy as np
import pytest

import fastnn as fnn

from conftest import DTYPES, assert_tree_close

NET = fnn.mlp([4, 7, 3], activation="tanh")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", [1, 2, 5])
def test_member_k_of_an_ensemble_is_init_with_the_kth_seed(members, dtype):
    stacked = fnn.init(NET, seed=3, dtype=dtype, members=members)
    assert [W.shape for W, _ in stacked] == [(members, 4, 7), (members, 7, 3)]
    assert [b.shape for _, b in stacked] == [(members, 7), (members, 3)]
    seeds = fnn.member_seeds(3, members)
    assert len(set(seeds)) == members
    for k, seed in enumerate(seeds):
        assert_tree_close(fnn.member(stacked, k), fnn.init(NET, seed=seed, dtype=dtype), dtype, rtol=0, atol=0)
    assert_tree_close(fnn.stack([fnn.member(stacked, k) for k in range(members)]), stacked, dtype, rtol=0, atol=0)


def test_stacking_errors_say_what_was_expected():
    stacked = fnn.init(NET, seed=0, members=2)
    with pytest.raises(ValueError, match="member takes stacked params"):
        fnn.member(fnn.init(NET), 0)
    with pytest.raises(IndexError, match="out of range for an ensemble of 2"):
        fnn.member(stacked, 2)
    with pytest.raises(ValueError, match="params_list.1."):
        fnn.stack([fnn.init(NET), fnn.init(fnn.mlp([4, 6, 3]))])
    with pytest.raises(TypeError, match="non-empty list"):
        fnn.stack([])
    mixed = (stacked[0], fnn.init(NET)[1])
    with pytest.raises(ValueError, match="mixes stacked and plain layers"):
        fnn.polyak(mixed, mixed, 0.5)
    with pytest.raises(ValueError, match="members"):
        fnn.init(NET, members=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", [None, 3])
def test_polyak_mixes_target_and_online(members, dtype):
    target = fnn.init(NET, seed=0, dtype=dtype, members=members)
    online = fnn.init(NET, seed=1, dtype=dtype, members=members)
    before = [a.copy() for pair in target + online for a in pair]
    mixed = fnn.polyak(target, online, 0.2)
    expected = tuple(((0.8 * W + 0.2 * V).astype(dtype), (0.8 * b + 0.2 * c).astype(dtype))
                     for (W, b), (V, c) in zip(target, online))
    assert_tree_close(mixed, expected, dtype)
    assert all(np.array_equal(a, c) for a, c in zip([a for pair in target + online for a in pair], before))
    assert_tree_close(fnn.polyak(target, online, 0.0), target, dtype, rtol=0, atol=0)
    assert_tree_close(fnn.polyak(target, online, 1.0), online, dtype, rtol=0, atol=0)


def test_polyak_refuses_what_does_not_match():
    plain, stacked = fnn.init(NET), fnn.init(NET, members=2)
    for tau, error in [(1.5, ValueError), (-0.1, ValueError), (True, TypeError), ("0.1", TypeError)]:
        with pytest.raises(error, match="tau"):
            fnn.polyak(plain, plain, tau)
    with pytest.raises(ValueError, match="both be plain params or both stacked"):
        fnn.polyak(plain, stacked, 0.1)
    with pytest.raises(ValueError, match="same shapes"):
        fnn.polyak(plain, fnn.init(fnn.mlp([4, 6, 3])), 0.1)
    with pytest.raises(ValueError, match="one dtype"):
        fnn.polyak(plain, fnn.init(NET, dtype=np.float64), 0.1)


def _central_jacobian(net, params, x, h=1e-6):
    rows, n_in = x.shape
    out = np.empty((rows, net.sizes[-1], n_in))
    for j in range(n_in):
        step = np.zeros_like(x)
        step[:, j] = h
        out[:, :, j] = (fnn.forward(net, params, x + step) - fnn.forward(net, params, x - step)) / (2 * h)
    return out


@pytest.mark.parametrize("activation", ["tanh", "gelu", "softplus", "sigmoid"])
def test_jacobian_and_jvp_match_central_differences(activation):
    net = fnn.mlp([4, 9, 9, 3], activation=activation)
    params = fnn.init(net, seed=1, dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(6, 4))
    J = fnn.jacobian(net, params, x)
    assert J.shape == (6, 3, 4)
    np.testing.assert_allclose(J, _central_jacobian(net, params, x), rtol=1e-6, atol=1e-8)
    v = np.random.default_rng(1).normal(size=(6, 4))
    outputs, products = fnn.jvp(net, params, x, v)
    np.testing.assert_allclose(outputs, fnn.forward(net, params, x), rtol=1e-15)
    h = 1e-6
    directional = (fnn.forward(net, params, x + h * v) - fnn.forward(net, params, x - h * v)) / (2 * h)
    np.testing.assert_allclose(products, directional, rtol=1e-6, atol=1e-8)
    one_out, one_product = fnn.jvp(net, params, x[0], v[0])
    assert one_out.shape == (3,) and one_product.shape == (3,)
    np.testing.assert_allclose(fnn.jacobian(net, params, x[0]), J[0], rtol=1e-12)
    shared = fnn.jvp(net, params, x, v[0])[1]  # one direction for every sample
    np.testing.assert_allclose(shared, J @ v[0], rtol=1e-12)
    with pytest.raises(ValueError, match="v must have shape"):
        fnn.jvp(net, params, x, v[:, :3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", [1, 2, 5, 16])
def test_forward_and_predict_of_stacked_params_equal_each_members(members, dtype):
    ensemble = fnn.init(NET, seed=5, dtype=dtype, members=members)
    x = np.random.default_rng(0).normal(size=(9, 4)).astype(dtype)
    own = np.random.default_rng(1).normal(size=(members, 9, 4)).astype(dtype)
    shared, separate = fnn.forward(NET, ensemble, x), fnn.forward(NET, ensemble, own)
    chunked, own_chunked = fnn.predict(NET, ensemble, x, batch_size=4), fnn.predict(NET, ensemble, own, batch_size=4)
    assert shared.shape == separate.shape == chunked.shape == own_chunked.shape == (members, 9, 3)
    for k in range(members):
        one = fnn.member(ensemble, k)
        np.testing.assert_array_equal(shared[k], fnn.forward(NET, one, x))
        np.testing.assert_array_equal(separate[k], fnn.forward(NET, one, own[k]))
        np.testing.assert_array_equal(chunked[k], fnn.predict(NET, one, x, batch_size=4))
        np.testing.assert_array_equal(own_chunked[k], fnn.predict(NET, one, own[k], batch_size=4))
        np.testing.assert_array_equal(fnn.forward(NET, ensemble, x[:3])[k], fnn.forward(NET, one, x[:3]))  # row kernel
    assert fnn.forward(NET, ensemble, x[0]).shape == fnn.predict(NET, ensemble, x[0], batch_size=2).shape == (members, 3)
    with pytest.raises(ValueError, match=f"the ensemble has {members} members"):
        fnn.forward(NET, ensemble, np.concatenate([own, own[:1]]))


def test_ensemble_predict_sums_members_up():
    net = fnn.mlp([4, 8, 4], activation="tanh")  # 2 means, then 2 log-variances
    ensemble = fnn.init(net, seed=0, dtype=np.float64, members=5)
    x = np.random.default_rng(2).normal(size=(6, 4))
    outs = np.stack([fnn.forward(net, fnn.member(ensemble, k), x) for k in range(5)])
    mean, variance = fnn.ensemble_predict(net, ensemble, x)
    np.testing.assert_allclose(mean, outs.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(variance, ((outs - outs.mean(axis=0)) ** 2).mean(axis=0), rtol=1e-12)
    mean, variance = fnn.ensemble_predict(net, ensemble, x, head="gaussian")
    means, variances = outs[..., :2], np.exp(outs[..., 2:])
    np.testing.assert_allclose(mean, means.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(variance, variances.mean(axis=0) + means.var(axis=0), rtol=1e-12)
    assert (variance >= variances.mean(axis=0)).all()  # disagreement adds to the members' own variance
    with pytest.raises(ValueError, match="even output width"):
        fnn.ensemble_predict(NET, fnn.init(NET, members=2), x, head="gaussian")
    with pytest.raises(ValueError, match="takes stacked params"):
        fnn.ensemble_predict(net, fnn.init(net), x)
    with pytest.raises(ValueError, match="head"):
        fnn.ensemble_predict(net, ensemble, x, head="median")


def test_the_reference_forward_takes_stacked_params_too():
    import fastnn.reference as ref

    ensemble = fnn.init(NET, seed=5, dtype=np.float64, members=3)
    x = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_allclose(ref.forward(NET, ensemble, x), fnn.forward(NET, ensemble, x), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", [1, 2, 5, 16])
def test_an_ensemble_saves_and_loads_whole(tmp_path, members, dtype):
    ensemble = fnn.init(NET, seed=4, dtype=dtype, members=members)
    fnn.save(tmp_path / "e.npz", NET, ensemble, metadata={"note": "three"})
    net, loaded, meta = fnn.load(tmp_path / "e.npz", with_metadata=True)
    assert net == NET and str(meta["note"]) == "three"
    assert_tree_close(loaded, ensemble, dtype, rtol=0, atol=0)
    bad = ((ensemble[0][0][:, :3], ensemble[0][1]), ensemble[1])  # member widths that are not the net's
    with pytest.raises(ValueError, match="member 0"):
        fnn.save(tmp_path / "bad.npz", NET, bad)
