"""Lightning callbacks: TensorBoard figures, gradual unfreezing, linear-probe features, safety, RNG."""
