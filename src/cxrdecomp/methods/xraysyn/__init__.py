"""XraySyn: view synthesis / material decomposition from one radiograph through CT priors (Peng et al., AAAI 2021)."""
