"""The related work's attention modules as identity-at-init adapters on a frozen backbone, with
parameter budgets matched to GAttANet's (the baselines comparison)."""

from gattanet.adapters.budget import (UNMATCHABLE, adapter_params, match_width, wider_toy_widths,
                                      within_budget)
from gattanet.adapters.model import AdaptedModel
from gattanet.adapters.modules import ADAPTERS, build_adapter

__all__ = ["ADAPTERS", "UNMATCHABLE", "AdaptedModel", "adapter_params", "build_adapter", "match_width",
           "wider_toy_widths", "within_budget"]
