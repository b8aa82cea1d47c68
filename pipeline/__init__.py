"""The DVC pipeline around the gattanet library: params validation, stage entry points, report."""
