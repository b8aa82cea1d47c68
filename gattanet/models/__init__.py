"""The networks and the paper's equations: backbones (toy CNN, ResNets) behind one protocol, the global attention system (Eqs. 1-4), the two-pass GAttANet (Eq. 5), lesion patterns."""
