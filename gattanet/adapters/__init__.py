"""The related work's attention modules as identity-at-init add-ons on a frozen backbone, with
parameter budgets matched to GAttANet's (the baselines comparison's add-on track)."""

from gattanet.adapters.addons import ADDONS, ADDON_DEVIATIONS, UNMATCHABLE, AddOn
from gattanet.adapters.budget import (BUDGET_TOL, MATCHING_RULE, adapter_params, addon_rows, match_width,
                                      wider_toy_widths, within_budget)
from gattanet.adapters.model import AdaptedModel, build_addon

__all__ = ["ADDONS", "BUDGET_TOL", "ADDON_DEVIATIONS", "MATCHING_RULE", "UNMATCHABLE", "AdaptedModel", "AddOn",
           "adapter_params", "addon_rows", "build_addon", "match_width", "wider_toy_widths", "within_budget"]
