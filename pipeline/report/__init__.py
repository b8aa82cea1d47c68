"""The HTML report: Table 1 and Figures 2-4 from the stage outputs, beside the paper, with verdicts."""
