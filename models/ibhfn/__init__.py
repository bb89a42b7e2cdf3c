"""IB-HFN (SAR-assisted cloud removal) and its DSen2-CR-style baseline: network, losses, data, trainer."""
