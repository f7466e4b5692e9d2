"""X-ray physics: HU → density → µ(E) per material (xraylib NIST data) and tube spectra (SpekPy)."""
