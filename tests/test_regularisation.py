

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_float32_kernels_with_masks_follow_the_reference(cell):
    """The float32 specialisations with every mask (all options, two layers): within float32
    rounding of the float64 reference."""
    case = _masked_case((cell, "tanh"), 2, "all")
    model = engine.Model(cell=cell, input_size=3, hidden_size=4, output_size=2, num_layers=2, dtype="float32",
                         **_rates((cell, "tanh"), "all"))
    model.load_state_dict(case["params"])
    masks = ChunkMasks(*(None if mask is None else mask.astype(np.float32) for mask in case["masks"]))
    x, y = case["x"].astype(np.float32), case["y"].astype(np.float32)
    state = tuple(part.astype(np.float32) for part in _parts(case["state"]))
    loss, grads = engine.loss_and_grad(model, x, y, "mse", state if cell == "lstm" else state[0], case["resets"],
                                       masks=masks)
    expected_loss, expected = naive.loss_and_grad(model.state_dict(), x, y, cell, "mse",
                                                  state if cell == "lstm" else state[0], "tanh", case["resets"],
                                                  masks=SimpleNamespace(**_naive_masks(masks)))
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for name, value in expected.items():
        assert grads[name].dtype == np.float32
        assert_close(grads[name], value, 1e-4, name)
