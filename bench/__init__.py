"""Training, model and dataset tooling of the FaRS benchmark harness."""
