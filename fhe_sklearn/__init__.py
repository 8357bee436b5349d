"""fhe_sklearn: scikit-learn estimators that predict on encrypted data."""
