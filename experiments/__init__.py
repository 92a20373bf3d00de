"""Scripts that run gradlab's agents and attacks and write plots and metrics into results/."""
