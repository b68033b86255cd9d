"""Stream processors: pure event-time kernels (kernels/) and the Faust shell around them."""
