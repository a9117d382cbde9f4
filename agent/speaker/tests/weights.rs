//! The legacy torch pickle reader against the real pretrained.pt.

mod common;

use infergate_speaker::weights::read_legacy_state_dict;

#[test]
fn reads_every_tensor_with_its_shape() {
    let path = common::weights_path();
    if !path.exists() {
        eprintln!("SKIP: weights not installed at {} (run tests/tools/install-speaker-weights.sh)", path.display());
        return;
    }
    let bytes = std::fs::read(&path).unwrap();
    let tensors = read_legacy_state_dict(&bytes).unwrap();
    let shape = |name: &str| tensors.get(name).map(|t| t.shape.clone()).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(shape("lstm.weight_ih_l0"), vec![1024, 40]);
    for layer in 0..3 {
        assert_eq!(shape(&format!("lstm.weight_hh_l{layer}")), vec![1024, 256]);
        assert_eq!(shape(&format!("lstm.bias_ih_l{layer}")), vec![1024]);
        assert_eq!(shape(&format!("lstm.bias_hh_l{layer}")), vec![1024]);
    }
    assert_eq!(shape("lstm.weight_ih_l1"), vec![1024, 256]);
    assert_eq!(shape("linear.weight"), vec![256, 256]);
    assert_eq!(shape("linear.bias"), vec![256]);
    assert_eq!(shape("similarity_weight"), vec![1]);

    // All LSTM parameters are views of one flat storage; distinct offsets must give distinct data.
    assert_ne!(tensors["lstm.bias_ih_l0"].data, tensors["lstm.bias_hh_l0"].data);

    // A truncated file is reported, not half-read.
    let err = read_legacy_state_dict(&bytes[..bytes.len() - 10]).unwrap_err();
    assert!(err.contains("file ends first"), "{err}");
}
